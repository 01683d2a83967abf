"""The official MICO metrics (the competition's scoring program), without scikit-learn.

Definitions (MICO.md section 7), over all predictions of a scenario and phase concatenated:
``TPR_FPR_x`` is the largest TPR among ROC points whose FPR is *strictly* below ``x/10000``;
``AUC`` the trapezoidal area; ``MIA`` = max(TPR - FPR); ``accuracy`` = max(1 - (FPR + 1 - TPR)/2).

The scoring program called scikit-learn's ``roc_curve`` with its default
``drop_intermediate=True``, which removes every ROC point whose neighbours make equal steps on
both axes.  On a diagonal run (several thresholds each adding one member and one non-member) that
removes points *below* the FPR limit, so ``TPR_FPR_x`` can come out lower than on the full curve.
:func:`roc_curve` applies the same rule, so the numbers are identical to the official ones (the
tests check this against scikit-learn, heavy ties included).
"""

from __future__ import annotations

import numpy as np

#: FPR limits of the official table, keyed as the scoring program names them.
FPR_LIMITS: dict[str, float] = {
    "TPR_FPR_10": 0.001,
    "TPR_FPR_100": 0.01,
    "TPR_FPR_500": 0.05,
    "TPR_FPR_1000": 0.1,
    "TPR_FPR_1500": 0.15,
    "TPR_FPR_2000": 0.2,
}

#: The ranking metric of the competition.
MAIN_METRIC = "TPR_FPR_1000"


def _validate(solutions: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(solutions).ravel()
    s = np.asarray(predictions, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} solutions but {s.size} predictions")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("solutions must be 0 or 1")
    if not np.all(np.isfinite(s)):
        raise ValueError("predictions must be finite")
    if y.min(initial=1) == 1 or y.max(initial=0) == 0:
        raise ValueError("scoring needs both members and non-members")
    return y.astype(bool), s


def roc_curve(solutions: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FPR and TPR as scikit-learn's ``roc_curve`` (default settings) returns them.

    One point per distinct score, minus the interior points of equal-step runs (scikit-learn's
    ``drop_intermediate``), then (0, 0) prepended.
    """
    y, s = _validate(solutions, predictions)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # one ROC point per distinct score
    tps = np.cumsum(y)[last_of_run]
    fps = (last_of_run + 1) - tps
    if tps.size > 2:
        bends = np.diff(tps, 2).astype(bool) | np.diff(fps, 2).astype(bool)
        keep = np.r_[True, bends, True]
        tps, fps = tps[keep], fps[keep]
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return fpr, tpr


def tpr_at_fpr(solutions: np.ndarray, predictions: np.ndarray, max_fpr: float = 0.1) -> float:
    """Largest TPR among ROC points with FPR strictly below ``max_fpr``."""
    fpr, tpr = roc_curve(solutions, predictions)
    return float(tpr[fpr < max_fpr].max())


def score(solutions: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """The scoring program's table for one scenario: TPR at six FPRs, AUC, MIA and accuracy."""
    fpr, tpr = roc_curve(solutions, predictions)
    result = {key: float(tpr[fpr < limit].max()) for key, limit in FPR_LIMITS.items()}
    result["AUC"] = float(np.trapezoid(tpr, fpr))
    result["MIA"] = float(np.max(tpr - fpr))
    result["accuracy"] = float(np.max(1 - (fpr + (1 - tpr)) / 2))
    return result
