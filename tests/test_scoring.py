"""The official metrics, checked against scikit-learn as the scoring program used it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from mico.scoring import FPR_LIMITS, metrics, score, tpr_at_fpr


def _official(solutions, predictions) -> dict:
    """MICO's ``scoring.score``, transcribed from its definition on top of scikit-learn: the
    six TPRs, then the curve, AUC (``roc_auc_score``), MIA and accuracy, in that key order."""
    fpr, tpr, _ = sk_roc_curve(solutions, predictions)
    out = {f"TPR_FPR_{int(1e4 * limit)}": max(tpr[fpr < limit]) for limit in FPR_LIMITS.values()}
    out["fpr"], out["tpr"] = fpr, tpr
    out["AUC"] = roc_auc_score(solutions, predictions)
    out["MIA"] = np.max(tpr - fpr)
    out["accuracy"] = np.max(1 - (fpr + (1 - tpr)) / 2)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_matches_scikit_learn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 3000))
    y = rng.integers(0, 2, size=n)
    y[:2] = [0, 1]
    signal = rng.normal(size=n) + y * rng.uniform(0, 2)
    if seed % 3 == 0:
        signal = np.round(signal, 1)  # heavy ties
    elif seed % 3 == 1:
        signal = 1 / (1 + np.exp(-signal))
    ours, theirs = score(y, signal), _official(y, signal)
    assert list(ours) == list(theirs)
    for key in ("fpr", "tpr"):
        np.testing.assert_array_equal(ours[key], theirs[key])
    for key in ours.keys() - {"fpr", "tpr"}:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-12), key
    assert metrics(y, signal) == {k: v for k, v in ours.items() if k not in ("fpr", "tpr")}
    assert tpr_at_fpr(y, signal, 0.1) == pytest.approx(theirs["TPR_FPR_1000"], abs=1e-12)


def test_strictly_below_the_fpr_limit():
    # 10 negatives: one false positive is FPR 0.1 exactly, which must not count for TPR_FPR_1000.
    y = np.array([1] * 10 + [0] * 10)
    s = np.array([0.9] * 5 + [0.5] * 5 + [0.95] + [0.1] * 9)
    assert tpr_at_fpr(y, s, 0.1) == 0.0
    assert tpr_at_fpr(y, s, 0.11) == 1.0


def test_diagonal_runs_are_dropped_like_the_official_program():
    # Four tied pairs make a diagonal run; the full curve reaches TPR 4/12 at FPR 2/22 < 0.1,
    # but the official curve keeps only the run's ends, so TPR_FPR_1000 is 2/12.
    y = np.array([1, 1] + [1, 0] * 4 + [0] * 18 + [1] * 6)
    s = np.r_[[1.0, 1.0], np.repeat([0.9, 0.8, 0.7, 0.6], 2), np.zeros(24)]
    fpr, tpr, _ = sk_roc_curve(y, s)
    assert score(y, s)["TPR_FPR_1000"] == max(tpr[fpr < 0.1])
    assert score(y, s)["TPR_FPR_1000"] == pytest.approx(2 / 12)


def test_perfect_and_constant_predictions():
    y = np.array([0, 1, 0, 1])
    assert score(y, np.array([0.1, 0.9, 0.2, 0.8]))["TPR_FPR_10"] == 1.0
    flat = score(y, np.full(4, 0.5))
    assert flat["AUC"] == 0.5 and flat["TPR_FPR_1000"] == 0.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="both members and non-members"):
        score(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="finite"):
        score(np.array([0, 1]), np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match="3 solutions but 2"):
        score(np.array([0, 1, 0]), np.array([0.5, 0.5]))
