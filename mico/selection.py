"""Choosing an attack's variant or parameter on the ``train`` phase without fooling oneself.

A choice made on the same targets it is then scored on overstates what it achieves on
``dev``/``final``: with several candidates, the best train score is partly luck. So the
train-phase estimate of a chosen configuration comes from k-fold cross-validation over the
train *target models*::

    targets 0..T-1, fold of target t = t mod F
    for each fold f:  choose c_f on the targets outside f      (never looks at fold f)
                      predictions of fold f's targets := candidate c_f's
    estimate = the official metrics of all targets' held-out predictions, pooled

Folds that chose differently hand in predictions on different scales (a min-max normalised
loss difference beside a Normal CDF), and pooling those would misstate any choice. So each
candidate's predictions are first replaced by their quantile within the whole phase (the
fraction of the phase's T*K predictions at or below them): label-free, monotone, ties kept,
so a single candidate's metrics are unchanged, and all candidates share one scale.

The submitted choice (for ``dev``/``final``) is made on all train targets. Candidates'
predictions are computed beforehand, each target's leaving its own shadow row out, so no
target's solution ever enters its own prediction or its own fold's choice. (A fold-f model
still serves as a shadow model of the other folds' targets, exactly as every train model
serves the ``dev``/``final`` targets; its own challenge labels are not what is scored.)

The criterion is the ranking metric, TPR at 10% FPR over the pooled targets; ties go to the
higher AUC, then to the earlier candidate (list the default first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from mico.scoring import FPR_LIMITS, MAIN_METRIC, roc_curve

DEFAULT_FOLDS = 5


@dataclass(frozen=True)
class Selection:
    """Outcome of :func:`cross_validate` over C candidates and T targets.

    ``chosen``: candidate chosen on all targets (what ``dev``/``final`` get);
    ``fold_of`` ``[T]``: each target's fold; ``fold_choice`` ``[F]``: candidate chosen without
    fold f; ``held_out`` ``[T, K]``: each target's predictions from its fold's choice.
    """

    chosen: int
    fold_of: np.ndarray
    fold_choice: np.ndarray
    held_out: np.ndarray


def fold_assignment(n_targets: int, folds: int = DEFAULT_FOLDS) -> np.ndarray:
    """Fold ``[T]`` of each target: ``t mod F`` with ``F = min(folds, T)``.

    Train models are exchangeable (independent seeds), so interleaving needs no randomness.
    """
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    if n_targets < 2:
        raise ValueError(
            f"cross-validation needs at least 2 train models, got {n_targets}: "
            "too few to choose a variant honestly"
        )
    return np.arange(n_targets) % min(folds, n_targets)


def phase_quantiles(predictions: np.ndarray) -> np.ndarray:
    """Each candidate's ``[T, K]`` predictions (stacked ``[C, T, K]``) as quantiles in (0, 1]
    of that candidate's whole phase: ``#{predictions <= v} / (T * K)``."""
    preds = np.asarray(predictions, dtype=np.float64)
    flat = preds.reshape(preds.shape[0], -1)
    ranks = rankdata(flat, method="max", axis=1) / max(flat.shape[1], 1)
    return ranks.reshape(preds.shape)


def criterion(solution: np.ndarray, predictions: np.ndarray) -> tuple[float, float]:
    """``(TPR at 10% FPR, AUC)`` of pooled predictions, the selection key (higher is better)."""
    fpr, tpr = roc_curve(solution, predictions)
    return float(tpr[fpr < FPR_LIMITS[MAIN_METRIC]].max()), float(np.trapezoid(tpr, fpr))


def best_candidate(
    predictions: np.ndarray, solution: np.ndarray, targets: np.ndarray | None = None
) -> int:
    """Index of the best of ``predictions`` ``[C, T, K]`` on the ``targets`` (bool ``[T]``).

    Only those targets' rows of ``predictions`` and ``solution`` are read.
    """
    preds = np.asarray(predictions)
    sol = np.asarray(solution)
    if targets is not None:
        preds, sol = preds[:, targets], sol[targets]
    keys = [criterion(sol, candidate) for candidate in preds]
    # max() keeps the first of equal keys: ties go to the earlier candidate.
    return max(range(len(keys)), key=lambda c: keys[c])


def cross_validate(
    predictions: Sequence[np.ndarray] | np.ndarray,
    solution: np.ndarray,
    folds: int = DEFAULT_FOLDS,
) -> Selection:
    """Choose among candidate predictions (each ``[T, K]``) by k-fold CV over the T targets.

    See the module docstring. ``solution`` ``[T, K]`` holds 0/1 memberships.
    """
    preds = np.stack([np.asarray(p, dtype=np.float64) for p in predictions])
    sol = np.asarray(solution)
    if preds.ndim != 3 or preds.shape[1:] != sol.shape:
        raise ValueError(
            f"candidate predictions {preds.shape[1:]} and solution {sol.shape} must both be [T, K]"
        )
    fold_of = fold_assignment(sol.shape[0], folds)
    n_folds = int(fold_of.max()) + 1
    fold_choice = np.array(
        [best_candidate(preds, sol, fold_of != f) for f in range(n_folds)], dtype=np.int64
    )
    held_out = phase_quantiles(preds)[fold_choice[fold_of], np.arange(sol.shape[0])]
    return Selection(
        chosen=best_candidate(preds, sol),
        fold_of=fold_of,
        fold_choice=fold_choice,
        held_out=held_out,
    )
