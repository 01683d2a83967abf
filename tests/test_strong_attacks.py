"""Tests of the stronger attacks of issue 15: online RMIA and the signal combiners.

Each is checked against a naive per-point reference written with plain loops, lists and
``math`` (the logistic combiner against a loop that fits one sklearn model per left-out
target), and for leaving every target's own shadow row out.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit

import run_lira_mia
from mico.attacks.combine import (
    Combine,
    CombineParams,
    features,
    lira_log_ratio,
    logreg_scores,
    signals,
)
from mico.attacks.compare import BEST_ROW, compare_scenario, comparison_rows
from mico.attacks.inputs import scenario_inputs
from mico.attacks.lira import lira
from mico.attacks.registry import ATTACKS
from mico.attacks.rmia_online import TRIM, RmiaOnline, rmia_online
from mico.attacks.signals import trimmed_side_means
from tests.test_attacks import (
    FAST,
    TINY,
    available,
    ref_log_sigmoid,
    synthetic_scores,
    with_population,
    write_synthetic_root,
)
from tests.test_lira import naive_lira, scenarios

# --- naive references ---------------------------------------------------------------------


def ref_trim_mean(values, trim=TRIM):
    """Mean after cutting int(trim * n) values from each end of the sorted list."""
    ordered = sorted(values)
    cut = int(trim * len(ordered))
    kept = ordered[cut : len(ordered) - cut]
    return sum(kept) / len(kept) if kept else None


def naive_online_bounds(sm, si, tm, tp, ts, spop, tpop, tau, gamma, tol=1e-9):
    """Online RMIA per (target, point) with loops; the score with near-ties read both ways
    (as ``naive_rmia_bounds`` of tests/test_attacks.py)."""
    n_shadows = sm.shape[0]
    low, high = np.empty(tm.shape), np.empty(tm.shape)
    for t in range(tm.shape[0]):
        own = -1 if ts is None else int(ts[t])
        rows = [s for s in range(n_shadows) if s != own]
        log_ratio_z = []
        for q in range(spop.shape[1]):
            pr_z = sum(math.exp(ref_log_sigmoid(spop[s, q] / tau)) for s in rows) / len(rows)
            log_ratio_z.append(ref_log_sigmoid(tpop[t, q] / tau) - math.log(max(pr_z, TINY)))
        for k in range(tm.shape[1]):
            p = int(tp[t, k])
            probs = {s: math.exp(ref_log_sigmoid(sm[s, p] / tau)) for s in rows}
            mean_in = ref_trim_mean([probs[s] for s in rows if si[s, p]])
            mean_out = ref_trim_mean([probs[s] for s in rows if not si[s, p]])
            sides = [m for m in (mean_in, mean_out) if m is not None]
            if not sides:
                low[t, k] = high[t, k] = 0.5
                continue
            pr_x = sum(sides) / len(sides)
            log_ratio_x = ref_log_sigmoid(tm[t, k] / tau) - math.log(max(pr_x, TINY))
            margins = [log_ratio_x - rz - math.log(gamma) for rz in log_ratio_z]
            low[t, k] = sum(m > tol for m in margins) / len(margins)
            high[t, k] = sum(m > -tol for m in margins) / len(margins)
    return low, high


# --- online RMIA --------------------------------------------------------------------------


def test_trimmed_mean_cuts_a_fifth_from_each_end():
    # 10 IN shadows at one point: int(0.2 * 10) = 2 cut from each end.
    values = np.array([[-50.0], [0.0], [1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [7.0], [99.0]])
    mean_in, n_in, mean_out, n_out = trimmed_side_means(
        values, np.ones_like(values, dtype=bool), np.array([[0]])
    )
    assert n_in[0, 0] == 10 and n_out[0, 0] == 0 and np.isnan(mean_out[0, 0])
    assert mean_in[0, 0] == pytest.approx(np.mean([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    # Leaving out row 9 (the 99): 9 values, int(1.8) = 1 cut from each end.
    mean_in, n_in, _, _ = trimmed_side_means(
        values, np.ones_like(values, dtype=bool), np.array([[0]]), np.array([9])
    )
    assert n_in[0, 0] == 9 and mean_in[0, 0] == pytest.approx(np.mean(values[1:8]))


@settings(max_examples=60, deadline=None)
@given(
    data=scenarios(max_shadows=12),
    seed=st.integers(0, 2**32 - 1),
    n_pop=st.integers(1, 6),
    tau=st.sampled_from([1.0, 4.0]),
    gamma=st.sampled_from([1.0, 2.0]),
)
def test_rmia_online_matches_naive_reference(data, seed, n_pop, tau, gamma):
    sm, si, tm, tp, ts = data
    if ts is not None and sm.shape[0] < 2:
        return  # a train target needs a shadow besides itself
    spop, tpop = with_population(data, seed, n_pop)
    got = rmia_online(sm, si, tm, tp, spop, tpop, ts, tau=tau, gamma=gamma)
    low, high = naive_online_bounds(sm, si, tm, tp, ts, spop, tpop, tau, gamma)
    assert got.shape == tm.shape and np.all(np.isfinite(got))
    assert np.all((low - 1e-12 <= got) & (got <= high + 1e-12)), (got, low, high)


@settings(max_examples=30, deadline=None)
@given(data=scenarios(max_shadows=12), seed=st.integers(0, 2**32 - 1))
def test_rmia_online_leaves_target_out(data, seed):
    sm, si, tm, tp, ts = data
    if ts is None or (ts < 0).all() or sm.shape[0] < 2:
        return
    spop, tpop = with_population(data, seed, 5)
    got = rmia_online(sm, si, tm, tp, spop, tpop, ts)
    for t in np.flatnonzero(ts >= 0):
        rest = np.delete(np.arange(sm.shape[0]), ts[t])
        one = slice(t, t + 1)
        want = rmia_online(sm[rest], si[rest], tm[one], tp[one], spop[rest], tpop[one])
        np.testing.assert_allclose(got[one], want, atol=1e-12)


def test_rmia_online_measures_pr_x_where_offline_extrapolates():
    # One point, 2 IN shadows at margin 4 and 2 OUT at -4; the target scores 4. Pr(x) is
    # (p(4) + p(-4)) / 2 = 0.5 exactly, so log LR(x) = log p(4) - log 0.5 against
    # population records whose own ratio is log 1 = 0 (target = every shadow there).
    sm = np.array([[4.0], [4.0], [-4.0], [-4.0]])
    si = np.array([[True], [True], [False], [False]])
    spop = np.array([[0.0, 1.0, 2.0]] * 4)
    tpop = np.array([[0.0, 1.0, 2.0]])
    got = rmia_online(sm, si, np.array([[4.0]]), np.array([[0]]), spop, tpop, gamma=1.9)
    assert math.log(expit(4.0) / 0.5) > math.log(1.9) > 0  # every z is beaten
    assert got[0, 0] == 1.0
    got = rmia_online(sm, si, np.array([[4.0]]), np.array([[0]]), spop, tpop, gamma=2.0)
    assert got[0, 0] == 0.0  # LR = 2 p(4) < 2 = gamma for every z


def test_rmia_online_rejects_bad_inputs():
    sm, si = np.zeros((3, 2)), np.zeros((3, 2), dtype=bool)
    tm, tp = np.zeros((1, 1)), np.array([[0]])
    spop, tpop = np.zeros((3, 4)), np.zeros((1, 4))
    with pytest.raises(ValueError, match="temperature"):
        rmia_online(sm, si, tm, tp, spop, tpop, tau=0.0)
    with pytest.raises(ValueError, match="gamma"):
        rmia_online(sm, si, tm, tp, spop, tpop, gamma=-1.0)
    with pytest.raises(ValueError, match="population"):
        rmia_online(sm, si, tm, tp, spop[:, :0], tpop[:, :0])
    with pytest.raises(ValueError, match="shadow besides"):
        rmia_online(sm[:1], si[:1], tm, tp, spop[:1], tpop, np.array([0]))


# --- signals combined ---------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(data=scenarios())
def test_lira_log_ratio_is_online_lira_log_odds(data):
    sm, si, tm, tp, ts = data
    for transform in ("prob", "stable_logit"):
        ratio = lira_log_ratio(sm, si, tm, tp, ts, transform)
        online = naive_lira(sm, si, tm, tp, ts, transform, "per-point", True)
        offline = naive_lira(sm, si, tm, tp, ts, transform, "per-point", False)
        both = online != offline  # both sides have models there (else online = offline)
        np.testing.assert_allclose(expit(ratio[both]), online[both], atol=1e-9)


def test_combine_bayes_features_are_online_bayes_lira_log_odds():
    """With --variance bayes the combiner's two LiRA features are the log-odds of online LiRA
    with the Bayesian variance (the naive posterior of tests/test_bayes.py behind it there),
    every other feature is the per-point variant's, and CV chooses among all four variants."""
    scores, _ = synthetic_scores(np.random.default_rng(5))
    inputs = scenario_inputs(scores)
    data = scores.phases["train"]
    plain, bayes = signals(inputs["train"]), signals(inputs["train"], "bayes")
    assert set(plain) == set(bayes)
    for name, transform in (("llr_logit", "stable_logit"), ("llr_prob", "prob")):
        online = lira(
            scores.shadow_margin,
            scores.shadow_in,
            data.margin,
            data.points,
            data.shadow_or_none,
            transform=transform,
            variance="bayes",
            online=True,
        )
        np.testing.assert_allclose(expit(bayes[name]), online, atol=1e-12)
        assert not np.allclose(bayes[name], plain[name])
    for name in set(plain) - {"llr_logit", "llr_prob"}:
        np.testing.assert_array_equal(bayes[name], plain[name])
    labels = [c.label for c in Combine().configs()]
    assert labels == [
        "combine logreg",
        "combine ms-lira",
        "combine logreg bayes",
        "combine ms-lira bayes",
    ]
    with pytest.raises(ValueError, match="unknown variance"):
        signals(inputs["train"], "pooled")


def naive_logreg_loto(train_x, train_y):
    """Leave-one-target-out log-odds with one loop per target and the rows listed by hand."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    n_targets, k, _ = train_x.shape
    out = np.empty((n_targets, k))
    for t in range(n_targets):
        rows = [train_x[u, j] for u in range(n_targets) if u != t for j in range(k)]
        labels = [train_y[u, j] for u in range(n_targets) if u != t for j in range(k)]
        scaler = StandardScaler().fit(rows)
        model = LogisticRegression(max_iter=1000).fit(scaler.transform(rows), labels)
        for j in range(k):
            x = scaler.transform([train_x[t, j]])
            out[t, j] = float(x[0] @ model.coef_[0] + model.intercept_[0])
    return out


def test_logreg_never_trains_on_its_own_target():
    rng = np.random.default_rng(3)
    y = rng.random((6, 10)) < 0.5
    x = rng.normal(size=(6, 10, 3)) + y[..., None]
    got = logreg_scores(x, y)
    np.testing.assert_allclose(got, naive_logreg_loto(x, y), atol=1e-6)
    # Changing target 0's labels changes nothing in its own row.
    flipped = y.copy()
    flipped[0] = ~flipped[0]
    np.testing.assert_allclose(logreg_scores(x, flipped)[0], got[0], atol=1e-9)


def test_combine_signals_and_predictions_on_synthetic_scores():
    scores, _ = synthetic_scores(np.random.default_rng(1))
    inputs = scenario_inputs(scores)
    train = signals(inputs["train"])
    assert set(train) == {
        "llr_logit",
        "llr_prob",
        "z_out",
        "hard_margin",
        "hard_loss",
        "rmia_online",
    }
    data = scores.phases["train"]
    online = naive_lira(
        scores.shadow_margin,
        scores.shadow_in,
        data.margin,
        data.points,
        data.shadow_or_none,
        "stable_logit",
        "per-point",
        True,
    )
    np.testing.assert_allclose(expit(train["llr_logit"]), online, atol=1e-9)
    attack = Combine()
    for phase in ("train", "dev"):
        prepared = attack.prepare(inputs[phase])
        for config in attack.configs():
            got = attack.predict(inputs[phase], config.params, prepared)
            assert got.shape == scores.phases[phase].margin.shape
            assert got.min() >= 0.0 and got.max() <= 1.0
    # The logistic combiner's train order is the leave-one-target-out log-odds' order.
    prepared = attack.prepare(inputs["train"])
    logodds = logreg_scores(features(train), data.solution)
    got = attack.predict(inputs["train"], CombineParams("logreg"), prepared)
    assert np.array_equal(np.argsort(got, axis=None), np.argsort(logodds, axis=None))


def test_strong_attacks_are_compared_and_beat_chance():
    scores, truths = synthetic_scores(np.random.default_rng(2))
    truth = {p: s for p, (_, s) in truths.items()}
    result = compare_scenario(scores, available(scores), truth, uncertainty=FAST)
    for row in ("rmia_online (CV)", "combine (CV)"):
        assert row in result.rows
        assert result.rows[row].metrics["train"]["AUC"] > 0.6
    new = {c.label for c in ATTACKS["rmia_online"].configs() + ATTACKS["combine"].configs()}
    assert new <= {c.label for c in comparison_rows(available(scores))[BEST_ROW]}
    # Without population outputs, online RMIA is left out and the combiner still runs.
    scores, _ = synthetic_scores(np.random.default_rng(2), population=False)
    assert RmiaOnline().missing(scores, "purchase100") is not None
    rows = compare_scenario(scores, available(scores), uncertainty=FAST).rows
    assert "rmia_online (CV)" not in rows and "combine (CV)" in rows


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return write_synthetic_root(tmp_path_factory.mktemp("synthetic"))


@pytest.mark.parametrize(
    ("extra", "label"),
    [
        (["--attack", "rmia_online"], "rmia_online (5-fold CV"),
        (["--attack", "rmia", "--online_attack"], "rmia_online (5-fold CV"),
        (["--attack", "combine"], "combine (5-fold CV"),
    ],
)
def test_strong_attack_cli(synthetic_root, extra, label, capsys):
    args = ["--challenge", "purchase100", "--root", str(synthetic_root), *extra]
    args += ["--no-write", "-q", "--reference", str(synthetic_root / "reference")]
    assert run_lira_mia.main(args) == 0
    out = capsys.readouterr().out
    assert label in out and "purchase100_lo final" in out
