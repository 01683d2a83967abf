"""How far a MICO number can move, and what it says about epsilon: cluster-bootstrap
intervals, paired comparisons and empirical epsilon lower bounds (numpy and scipy only).

**Intervals.** :func:`tpr_interval` and :func:`auc_interval` resample whole target models
(a model's points share one training run) and report the official metric of all points with
its percentile interval; the engine is :mod:`mico.attacks.bootstrap`.

**Paired comparisons.** Two attacks scored on the same targets with the same draw counts give
replicate differences whose percentile interval says whether a lead is real
(:func:`paired_interval`).

**Epsilon lower bounds.** :func:`epsilon_lower_bound` is the one-run audit of Steinke, Nasr and
Jagielski ("Privacy Auditing with One (1) Training Run", NeurIPS 2023, Theorem 5.2 in its
p-value form): each target model is a training run whose challenge points are canaries; the
guesses are the top ``k`` (member) and bottom ``k`` (non-member) confidences of each model, and
the correct-guess counts of all target models are combined into one test (see
``docs/audit.md`` for why that is valid, how ``k`` is chosen and what MICO's fixed-size
membership draw changes).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import optimize, special

from mico.attacks.bootstrap import (
    DEFAULT_BOOT,
    DEFAULT_LEVEL,
    ClusterBootstrap,
    Interval,
    bootstrap_counts,
    checked_points,
    percentile_interval,
)
from mico.errors import InputError

__all__ = [
    "DEFAULT_BOOT",
    "DEFAULT_DELTA",
    "DEFAULT_LEVEL",
    "GUESS_GRID",
    "AuditCounts",
    "ClusterBootstrap",
    "Interval",
    "auc_interval",
    "audit",
    "audit_p_value",
    "bootstrap_counts",
    "epsilon_from_counts",
    "epsilon_lower_bound",
    "guess_counts",
    "paired_interval",
    "percentile_interval",
    "tpr_interval",
]

#: MICO's delta (every DP scenario is (epsilon, 1e-5)-DP).
DEFAULT_DELTA = 1e-5
#: Guesses per model and side tried by :func:`epsilon_lower_bound` (capped at half a model's
#: points); the bound is the best of them, each tested at ``(1 - level) / len(GUESS_GRID)``.
GUESS_GRID: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100)


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level}")


def tpr_interval(
    confidences: np.ndarray,
    membership: np.ndarray,
    models: np.ndarray,
    max_fpr: float,
    *,
    level: float = DEFAULT_LEVEL,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(low, point, high)`` for the TPR at ``FPR < max_fpr`` (MICO's ``TPR_FPR_x``).

    ``confidences[n]`` in [0, 1], ``membership[n]`` 0/1 and ``models[n]`` the id of the target
    model point ``n`` belongs to.  ``point`` is the official metric of all points pooled; the
    interval is the percentile interval of ``n_boot`` cluster-bootstrap replicates (models
    resampled with replacement, ``seed`` fixing the draws).
    """
    _check_level(level)
    boot = ClusterBootstrap(confidences, membership, models)
    point = float(boot.tpr(boot.ones(), max_fpr)[0, 0])
    replicates = boot.tpr(bootstrap_counts(boot.n_models, n_boot, seed), max_fpr)[:, 0]
    return percentile_interval(point, replicates, level)


def auc_interval(
    confidences: np.ndarray,
    membership: np.ndarray,
    models: np.ndarray,
    *,
    level: float = DEFAULT_LEVEL,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(low, point, high)`` for the AUC, as :func:`tpr_interval` for the TPR."""
    _check_level(level)
    boot = ClusterBootstrap(confidences, membership, models)
    point = float(boot.auc(boot.ones())[0])
    replicates = boot.auc(bootstrap_counts(boot.n_models, n_boot, seed))
    return percentile_interval(point, replicates, level)


def paired_interval(
    point: float, replicates_a: np.ndarray, replicates_b: np.ndarray, level: float
) -> Interval:
    """Interval of ``a - b`` from replicates drawn with the same counts (``point`` is the
    difference of the point estimates): the lead of ``a`` is real only if it excludes 0."""
    return percentile_interval(point, np.asarray(replicates_a) - np.asarray(replicates_b), level)


# --- Empirical epsilon lower bounds ---------------------------------------------------------


def audit_p_value(canaries: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """Steinke, Nasr and Jagielski's p-value: the probability, under an (epsilon, delta)-DP
    algorithm, of at least ``correct`` right among ``guesses`` guesses on ``canaries`` canaries.

    ``P[Bin(r, q) >= v] + 2 m delta max_{1<=i<=v} P[v - i <= Bin(r, q) < v] / i`` with
    ``q = e^eps / (1 + e^eps)`` (their Theorem 5.2), capped at 1.
    """
    if not 0 <= correct <= guesses <= canaries:
        raise InputError(f"need 0 <= correct ({correct}) <= guesses ({guesses}) <= canaries")
    q = 1 / (1 + np.exp(-epsilon))
    tail = float(special.bdtrc(correct - 1, guesses, q)) if correct > 0 else 1.0
    if delta > 0 and correct > 0:
        tail += 2 * canaries * delta * _worst_window(guesses, correct, q)
    return min(tail, 1.0)


def _worst_window(guesses: int, correct: int, q: float) -> float:
    """``max_{1<=i<=v} P[v - i <= Bin(r, q) < v] / i``, reading the pmf from ``v - 1`` down.

    The i-th ratio is at most ``1 / i``, so once the best ratio of the first ``w`` reaches
    ``1 / w`` nothing further can beat it: the window doubles until then (or covers all).
    """
    width = 64
    while True:
        width = min(width, correct)
        below = _binomial_pmf(np.arange(correct - 1, correct - 1 - width, -1), guesses, q)
        worst = float(np.max(np.cumsum(below) / np.arange(1, width + 1)))
        if width == correct or worst >= 1 / width:
            return worst
        width *= 4


def _binomial_pmf(k: np.ndarray, n: int, q: float) -> np.ndarray:
    """``P[Bin(n, q) = k]`` from log-gamma (scipy.stats' per-call overhead dominated here)."""
    log_choose = special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)
    return np.exp(log_choose + special.xlogy(k, q) + special.xlog1py(n - k, -q))


def epsilon_from_counts(
    canaries: int, guesses: int, correct: int, *, delta: float, alpha: float
) -> float:
    """The largest epsilon whose p-value stays below ``alpha`` (0 if none): with probability at
    least ``1 - alpha`` an (epsilon, delta)-DP algorithm has no larger epsilon than this.

    The p-value grows with epsilon; the boundary is found by Brent's method to 1e-6 and the
    value returned is on the side where the p-value is below ``alpha``.
    """

    def excess(epsilon: float) -> float:
        return audit_p_value(canaries, guesses, correct, epsilon, delta) - alpha

    if excess(0.0) >= 0:
        return 0.0
    high = 1.0
    while excess(high) < 0:
        high *= 2
        if high > 1e3:  # every guess right: no finite epsilon explains it
            return float("inf")
    root = optimize.brentq(excess, high / 2 if high > 1 else 0.0, high, xtol=1e-7)
    while excess(root) >= 0:
        root -= 1e-7
    return max(float(root), 0.0)


class AuditCounts(NamedTuple):
    """One guess budget's outcome: ``k`` guesses per side and model, ``guesses`` in all,
    ``correct`` of them right, out of ``canaries`` challenge points."""

    k: int
    canaries: int
    guesses: int
    correct: int


def guess_counts(
    confidences: np.ndarray,
    membership: np.ndarray,
    models: np.ndarray,
    grid: tuple[int, ...] = GUESS_GRID,
) -> list[AuditCounts]:
    """Correct-guess counts when each model's top ``k`` confidences are guessed members and its
    bottom ``k`` non-members, for each ``k`` of ``grid`` (``k`` capped at half a model's points).

    Ties are broken by a fixed random permutation (seed 0), independent of the labels, so a
    block of equal confidences never sorts members first.
    """
    conf, mem, ids = checked_points(confidences, membership, models)
    shuffle = np.random.default_rng(0).permutation(conf.size)
    conf, mem, ids = conf[shuffle], mem[shuffle], ids[shuffle]
    order = np.lexsort((-conf, ids))  # by model, then by confidence, highest first
    ids, mem = ids[order], mem[order]
    starts = np.r_[0, np.flatnonzero(ids[1:] != ids[:-1]) + 1]
    sizes = np.diff(np.r_[starts, ids.size])
    # Each point's rank in its model (0: its highest confidence) and its model's size.
    rank = np.arange(ids.size) - np.repeat(starts, sizes)
    size = np.repeat(sizes, sizes)
    results = []
    for k in grid:
        per_side = np.minimum(k, sizes // 2)
        side = np.repeat(per_side, sizes)
        top, bottom = rank < side, rank >= size - side
        right = np.count_nonzero(mem & top) + np.count_nonzero(~mem & bottom)
        results.append(AuditCounts(k, conf.size, int(2 * per_side.sum()), int(right)))
    return results


def epsilon_lower_bound(
    confidences: np.ndarray,
    membership: np.ndarray,
    models: np.ndarray,
    *,
    delta: float = DEFAULT_DELTA,
    level: float = DEFAULT_LEVEL,
) -> float:
    """Empirical lower bound on epsilon at ``delta``, holding with confidence ``level``.

    Every target model is one training run whose challenge points are canaries (see the
    module docstring and ``docs/audit.md``).  For each ``k`` of :data:`GUESS_GRID` the top and
    bottom ``k`` confidences of each model are guesses; the bound of each ``k`` is computed at
    ``(1 - level) / len(GUESS_GRID)`` (Bonferroni), so the best of them still holds at
    ``level``.  0 means the attack shows no leakage at this confidence.
    """
    return audit(confidences, membership, models, delta=delta, level=level)[0]


def audit(
    confidences: np.ndarray,
    membership: np.ndarray,
    models: np.ndarray,
    *,
    delta: float = DEFAULT_DELTA,
    level: float = DEFAULT_LEVEL,
) -> tuple[float, AuditCounts]:
    """:func:`epsilon_lower_bound` and the guess budget that gave it."""
    _check_level(level)
    if not 0 <= delta < 1:
        raise InputError(f"delta must be in [0, 1), got {delta}")
    alpha = (1 - level) / len(GUESS_GRID)
    found = guess_counts(confidences, membership, models)
    best = (0.0, found[0])
    for counts in found:
        args = (counts.canaries, counts.guesses, counts.correct)
        if audit_p_value(*args, best[0], delta) >= alpha:
            continue  # this budget cannot beat the best so far (the p-value grows with eps)
        bound = epsilon_from_counts(*args, delta=delta, alpha=alpha)
        if bound > best[0]:
            best = (bound, counts)
    return best
