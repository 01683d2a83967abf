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

The criterion is the ranking metric, TPR at 10% FPR over the pooled targets, read with its
uncertainty (:func:`best_candidate`): the candidates whose paired cluster-bootstrap interval
of the difference to the leader contains 0 are tied with it, and the tie goes to the best
TPR at 1% FPR (again with its tied set), then to the best AUC, then to the earlier candidate
(list the default first).  Low FPR is what the MIA literature weighs; TPR at 10% alone picked,
on a held-out bundle, an attack tied at 10% but far worse at 1% on train, dev and final.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from mico.attacks.audit import (
    DEFAULT_BOOT,
    DEFAULT_LEVEL,
    ClusterBootstrap,
    bootstrap_counts,
    paired_interval,
)
from mico.errors import InputError

DEFAULT_FOLDS = 5


@dataclass(frozen=True)
class CrossValidation:
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
        raise InputError(f"cross-validation needs at least 2 folds, got {folds}")
    if n_targets < 2:
        raise InputError(
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


@dataclass(frozen=True)
class Rule:
    """How candidates are compared: ``n_boot`` cluster-bootstrap replicates over target
    models, drawn with ``seed`` (the same draws for every candidate: a paired comparison), and
    the ``level`` of the paired intervals that decide ties."""

    n_boot: int = DEFAULT_BOOT
    seed: int = 0
    level: float = DEFAULT_LEVEL


#: The rule of every choice unless ``run_lira_mia.py --bootstrap``/``--bootstrap-seed`` say.
DEFAULT_RULE = Rule()

#: The selection's metrics in the order ties are broken (official keys, FPR limits).
TIE_BREAK: tuple[tuple[str, float], ...] = (("TPR_FPR_1000", 0.1), ("TPR_FPR_100", 0.01))


def candidate_bootstraps(predictions: np.ndarray, solution: np.ndarray) -> list[ClusterBootstrap]:
    """One :class:`~mico.attacks.audit.ClusterBootstrap` per candidate ``[C, T, K]``, the
    targets as clusters."""
    sol = np.asarray(solution)
    models = np.repeat(np.arange(sol.shape[0]), sol.shape[1])
    return [ClusterBootstrap(np.ravel(p), sol.ravel(), models) for p in predictions]


def choose(points: np.ndarray, replicates: np.ndarray, auc: np.ndarray, level: float) -> int:
    """The rule of :func:`best_candidate` on measured values: ``points [C, L]`` and paired
    ``replicates [C, B, L]`` of the :data:`TIE_BREAK` metrics, ``auc [C]``."""
    tied = list(range(len(points)))
    for j in range(points.shape[1]):
        leader = max(tied, key=lambda c: points[c, j])  # max() keeps the first of equals
        tied = [
            c
            for c in tied
            if c == leader
            or paired_interval(
                points[c, j] - points[leader, j],
                replicates[c, :, j],
                replicates[leader, :, j],
                level,
            ).contains(0.0)
        ]
    return max(tied, key=lambda c: auc[c])


def _choices(boots: Sequence[ClusterBootstrap], subsets: np.ndarray, rule: Rule) -> list[int]:
    """The best candidate on each subset of targets (bool ``[S, T]``), every subset's
    replicates computed in one pass per candidate."""
    n_targets = boots[0].n_models
    counts = np.concatenate(
        [bootstrap_counts(n_targets, rule.n_boot, rule.seed, subset) for subset in subsets]
    )
    own = subsets.astype(np.int64)
    limits = [limit for _, limit in TIE_BREAK]
    shape = (len(subsets), rule.n_boot, len(limits))
    points = np.stack([boot.tpr(own, limits) for boot in boots], axis=1)  # [S, C, L]
    replicates = np.stack([boot.tpr(counts, limits).reshape(shape) for boot in boots], axis=1)
    auc = np.stack([boot.auc(own) for boot in boots], axis=1)  # [S, C]
    return [choose(points[s], replicates[s], auc[s], rule.level) for s in range(len(subsets))]


def best_candidate(
    boots: Sequence[ClusterBootstrap], targets: np.ndarray | None = None, rule: Rule = DEFAULT_RULE
) -> int:
    """Index of the best candidate on the ``targets`` (bool ``[T]``, default all).

    The leader by TPR at 10% FPR and every candidate whose paired interval of the difference to
    it contains 0 form the tied set; within it the same again by TPR at 1% FPR; within that,
    the highest AUC.  Equal values go to the earlier candidate.  Only the ``targets``' points
    are read (the others are never drawn).
    """
    n_targets = boots[0].n_models
    subset = np.ones(n_targets, dtype=bool) if targets is None else np.asarray(targets, bool)
    return _choices(boots, subset[None, :], rule)[0]


def cross_validate(
    predictions: Sequence[np.ndarray] | np.ndarray,
    solution: np.ndarray,
    folds: int = DEFAULT_FOLDS,
    rule: Rule = DEFAULT_RULE,
    boots: Sequence[ClusterBootstrap] | None = None,
) -> CrossValidation:
    """Choose among candidate predictions (each ``[T, K]``) by k-fold CV over the T targets.

    See the module docstring. ``solution`` ``[T, K]`` holds 0/1 memberships; ``boots`` are the
    candidates' :func:`candidate_bootstraps` where the caller already has them.
    """
    preds = np.stack([np.asarray(p, dtype=np.float64) for p in predictions])
    sol = np.asarray(solution)
    if preds.ndim != 3 or preds.shape[1:] != sol.shape:
        raise InputError(
            f"candidate predictions {preds.shape[1:]} and solution {sol.shape} must both be [T, K]"
        )
    if boots is None:
        boots = candidate_bootstraps(preds, sol)
    fold_of = fold_assignment(sol.shape[0], folds)
    n_folds = int(fold_of.max()) + 1
    subsets = np.array([fold_of != f for f in range(n_folds)] + [np.ones_like(fold_of, bool)])
    *fold_choice, chosen = _choices(boots, subsets, rule)
    fold_choice = np.array(fold_choice, dtype=np.int64)
    held_out = phase_quantiles(preds)[fold_choice[fold_of], np.arange(sol.shape[0])]
    return CrossValidation(
        chosen=chosen, fold_of=fold_of, fold_choice=fold_choice, held_out=held_out
    )
