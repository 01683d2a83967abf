"""How far a MICO number can move, and what it says about epsilon: cluster-bootstrap
intervals, paired comparisons and empirical epsilon lower bounds (numpy and scipy only).

**Intervals.** MICO's metrics pool the ``2m`` challenge points of every target model of a
phase (:mod:`mico.scoring`).  The points of one model share one training run, so they are not
independent draws: a bootstrap over points is too narrow.  :class:`ClusterBootstrap` resamples
whole *models* with replacement and pools their points; replicate ``b`` is exactly the official
metric of the concatenation of the drawn models' points (ties, the strict ``FPR < x`` rule and
scikit-learn's ``drop_intermediate`` included), which the tests check against a naive loop.

Nothing is re-sorted per replicate.  The points are sorted once into groups of equal
confidence, and a replicate is a vector of per-model draw counts ``c [M]``.  With per-model
cumulative count tables ``POS[m, g]``/``NEG[m, g]`` (members / non-members of model ``m`` in
groups ``0..g``), a replicate's ROC point at group ``g`` is ``(c @ POS[:, g], c @ NEG[:, g])``:
the last group with ``FPR < x`` is found by a binary search vectorised over replicates, and AUC
is a bilinear form ``c A c / (P N)`` in a model-by-model matrix ``A`` of correctly ordered
(member, non-member) pairs.  Where ``M x G`` would not fit in memory (many clusters, e.g. one
per point) the same statistics come from per-point weights, a chunk of replicates at a time.

**Paired comparisons.** Two attacks scored on the same targets with the same draw counts give
replicate differences whose percentile interval says whether a lead is real
(:func:`paired_interval`); draw counts depend only on the number of models and the seed.

**Epsilon lower bounds.** :func:`epsilon_lower_bound` is the one-run audit of Steinke, Nasr and
Jagielski ("Privacy Auditing with One (1) Training Run", NeurIPS 2023, Theorem 5.2 in its
p-value form): each target model is a training run whose challenge points are canaries; the
guesses are the top ``k`` (member) and bottom ``k`` (non-member) confidences of each model, and
the correct-guess counts of all target models are combined into one test (see
``docs/audit.md`` for why that is valid, how ``k`` is chosen and what MICO's fixed-size
membership draw changes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy import optimize, special

#: Replicates of every bootstrap unless asked otherwise (``run_lira_mia.py --bootstrap``).
DEFAULT_BOOT = 1000
#: Two-sided level of every interval.
DEFAULT_LEVEL = 0.95
#: MICO's delta (every DP scenario is (epsilon, 1e-5)-DP).
DEFAULT_DELTA = 1e-5
#: Guesses per model and side tried by :func:`epsilon_lower_bound` (capped at half a model's
#: points); the bound is the best of them, each tested at ``(1 - level) / len(GUESS_GRID)``.
GUESS_GRID: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100)

#: Largest ``models x groups`` count table kept in memory (int32: 4 bytes each).
TABLE_LIMIT = 1 << 24
#: Replicates per chunk where per-point weights are used instead of tables.
CHUNK_ELEMENTS = 1 << 22


class Interval(NamedTuple):
    """``(low, point, high)``: a point estimate and its percentile-bootstrap interval."""

    low: float
    point: float
    high: float

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in ``[low, high]``."""
        return self.low <= value <= self.high


def bootstrap_counts(
    n_models: int, n_boot: int = DEFAULT_BOOT, seed: int = 0, eligible: np.ndarray | None = None
) -> np.ndarray:
    """Draw counts ``int64 [B, M]``: replicate ``b`` draws ``model m`` ``counts[b, m]`` times.

    Each replicate draws as many models as are ``eligible`` (bool ``[M]``, default all), with
    replacement, among the eligible ones; the others are never drawn (a CV fold's held-out
    models).  The counts depend on ``(n_models, n_boot, seed, eligible)`` alone, so every attack
    scored on the same targets with the same seed sees the same replicates: that pairing is
    what :func:`paired_interval` relies on.
    """
    if n_boot < 1:
        raise ValueError(f"the bootstrap needs at least one replicate, got {n_boot}")
    mask = np.ones(n_models, dtype=bool) if eligible is None else np.asarray(eligible, bool)
    if mask.shape != (n_models,) or not mask.any():
        raise ValueError("eligible must be a bool [M] mask with at least one model")
    drawn = np.flatnonzero(mask)
    rng = np.random.default_rng(seed)
    picks = drawn[rng.integers(0, len(drawn), (n_boot, len(drawn)))]
    flat = picks + n_models * np.arange(n_boot)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n_models).reshape(n_boot, n_models)


def _checked(
    confidences: np.ndarray, membership: np.ndarray, models: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    conf = np.asarray(confidences, dtype=np.float64).ravel()
    mem = np.asarray(membership).ravel()
    ids = np.asarray(models).ravel()
    if not conf.size == mem.size == ids.size:
        raise ValueError(
            f"{conf.size} confidences, {mem.size} memberships and {ids.size} model ids: "
            "one of each per point"
        )
    if not np.all(np.isfinite(conf)):
        raise ValueError("confidences must be finite")
    if not np.all(np.isin(mem, (0, 1))):
        raise ValueError("membership must be 0 or 1")
    mem = mem.astype(bool)
    if mem.all() or not mem.any():
        raise ValueError("the ROC needs both members and non-members")
    return conf, mem, ids


class ClusterBootstrap:
    """Replicates of the official ROC statistics of one phase under resampling of models.

    ``confidences``, ``membership`` (0/1) and ``models`` (any ids) are ``[N]``, one entry per
    challenge point; a ``[T, K]`` array of predictions flattens with
    ``models = np.repeat(np.arange(T), K)``.  ``model_ids`` are the distinct ids in the order of
    the draw counts' columns.
    """

    def __init__(self, confidences: np.ndarray, membership: np.ndarray, models: np.ndarray):
        conf, mem, ids = _checked(confidences, membership, models)
        self.model_ids, model = np.unique(ids, return_inverse=True)
        order = np.argsort(-conf, kind="mergesort")
        score, self._mem, self._model = conf[order], mem[order], model[order]
        new_group = np.r_[True, score[1:] != score[:-1]]
        self._group = np.cumsum(new_group) - 1
        self.n_groups = int(self._group[-1]) + 1
        n_models = len(self.model_ids)
        self._tables = n_models * self.n_groups <= TABLE_LIMIT
        if self._tables:
            self._neg = self._counts(~self._mem)
            self._POS = np.cumsum(self._counts(self._mem), axis=1, dtype=np.int32)
            self._NEG = np.cumsum(self._neg, axis=1, dtype=np.int32)
        #: Groups holding members and non-members: only there can a replicate's ROC take a
        #: diagonal step, which scikit-learn's drop_intermediate may remove.
        self._mixed = (np.bincount(self._group[self._mem], minlength=self.n_groups) > 0) & (
            np.bincount(self._group[~self._mem], minlength=self.n_groups) > 0
        )
        self._auc_pairs: np.ndarray | None = None

    @property
    def n_models(self) -> int:
        return len(self.model_ids)

    def _counts(self, which: np.ndarray) -> np.ndarray:
        """int64 ``[M, G]``: the ``which`` points of each model in each group."""
        flat = self._model[which] * self.n_groups + self._group[which]
        size = self.n_models * self.n_groups
        return np.bincount(flat, minlength=size).reshape(self.n_models, -1)

    def ones(self) -> np.ndarray:
        """The draw counts ``[1, M]`` of the data itself (every model once)."""
        return np.ones((1, self.n_models), dtype=np.int64)

    # --- TPR at FPR < x -----------------------------------------------------------------------

    def tpr(self, counts: np.ndarray, max_fprs: float | np.ndarray) -> np.ndarray:
        """``float [B, L]``: each replicate's largest TPR over ROC points with FPR strictly below
        each of ``max_fprs`` ``[L]`` (NaN where a replicate lacks members or non-members)."""
        limits = np.atleast_1d(np.asarray(max_fprs, dtype=np.float64))
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim != 2 or counts.shape[1] != self.n_models:
            raise ValueError(f"draw counts must be [B, {self.n_models}], got {counts.shape}")
        if self._tables:
            return self._tpr_tables(counts, limits)
        step = max(1, CHUNK_ELEMENTS // len(self._mem))
        return np.concatenate(
            [self._tpr_points(counts[i : i + step], limits) for i in range(0, len(counts), step)]
        )

    def _tpr_tables(self, counts: np.ndarray, limits: np.ndarray) -> np.ndarray:
        pos_total = counts @ self._POS[:, -1].astype(np.int64)
        neg_total = counts @ self._NEG[:, -1].astype(np.int64)
        weights = counts.T[:, None, :]  # [M, 1, B]

        def cumulative(table: np.ndarray, group: np.ndarray) -> np.ndarray:
            """``c_b @ table[:, g]`` for every ``g`` of ``group [L, B]``; 0 at ``g = -1``
            (the ROC origin)."""
            values = (table[:, np.maximum(group, 0)] * weights).sum(axis=0)
            return np.where(group >= 0, values, 0)

        # Largest g with FPR(g) < limit, per limit and replicate; g = -1 is the origin.  FPR at
        # the last group is 1, never below a limit <= 1, so the search runs over [-1, G - 1).
        shape = (len(limits), len(counts))
        low = np.full(shape, -1)
        high = np.full(shape, self.n_groups - 1)
        while True:
            active = high - low > 1
            if not active.any():
                break
            mid = np.where(active, (low + high) // 2, low)
            with np.errstate(invalid="ignore", divide="ignore"):
                below = cumulative(self._NEG, mid) / neg_total < limits[:, None]
            low = np.where(active & below, mid, low)
            high = np.where(active & ~below, mid, high)
        tp = cumulative(self._POS, low)
        if self._mixed.any():

            def cum(b: int, g: int) -> tuple[int, int]:
                if g < 0:
                    return 0, 0
                return int(counts[b] @ self._POS[:, g]), int(counts[b] @ self._NEG[:, g])

            for row, last in zip(tp, low, strict=True):
                self._drop_intermediate(row, last, cum)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (tp / pos_total).T
        out[(pos_total == 0) | (neg_total == 0)] = np.nan
        return out

    def _tpr_points(self, counts: np.ndarray, limits: np.ndarray) -> np.ndarray:
        weights = counts[:, self._model]
        ends = np.r_[np.flatnonzero(np.diff(self._group)), len(self._group) - 1]
        tp_cum = np.cumsum(weights * self._mem, axis=1)[:, ends]
        fp_cum = np.cumsum(weights * ~self._mem, axis=1)[:, ends]
        pos_total, neg_total = tp_cum[:, -1], fp_cum[:, -1]
        rows = np.arange(len(counts))
        out = np.empty((len(counts), len(limits)))
        for j, limit in enumerate(limits):
            with np.errstate(invalid="ignore", divide="ignore"):
                last = (fp_cum / neg_total[:, None] < limit).sum(axis=1) - 1
            tp = np.where(last >= 0, tp_cum[rows, np.maximum(last, 0)], 0)
            if self._mixed.any():

                def cum(b: int, g: int) -> tuple[int, int]:
                    return (0, 0) if g < 0 else (int(tp_cum[b, g]), int(fp_cum[b, g]))

                self._drop_intermediate(tp, last, cum)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:, j] = tp / pos_total
        out[(pos_total == 0) | (neg_total == 0)] = np.nan
        return out

    def _drop_intermediate(
        self, tp: np.ndarray, last: np.ndarray, cum: Callable[[int, int], tuple[int, int]]
    ) -> None:
        """Apply scikit-learn's ``drop_intermediate`` to the chosen ROC points, in place.

        A replicate's ROC points are its groups of nonzero weight.  An interior point whose step
        in and step out are equal is dropped; only a diagonal step (a group holding members and
        non-members) can make the last point below the FPR limit such a point, and then the
        answer is the TPR of the last kept point before it: walk back over the equal steps.
        """
        for b in np.flatnonzero(last >= 0):
            g = int(last[b])

            def step(g: int, b: int = b) -> tuple[int, int]:
                here, before = cum(b, g), cum(b, g - 1)
                return here[0] - before[0], here[1] - before[1]

            while g >= 0 and step(g) == (0, 0):  # a group this replicate did not draw
                g -= 1
            if g < 0 or not self._mixed[g]:
                continue
            current = step(g)
            if current[0] == 0 or current[1] == 0:
                continue
            following = g + 1
            while following < self.n_groups and step(following) == (0, 0):
                following += 1
            if following == self.n_groups or step(following) != current:
                continue  # the last point, or a bend: kept
            previous = g - 1
            while previous >= 0 and step(previous) == (0, 0):
                previous -= 1
            if previous < 0:
                continue  # the first point: kept
            while True:
                while previous >= 0 and step(previous) == (0, 0):
                    previous -= 1
                earlier = previous - 1
                while earlier >= 0 and step(earlier) == (0, 0):
                    earlier -= 1
                if previous < 0 or earlier < 0 or step(previous) != current:
                    break  # the first point, or the start of the run: kept
                previous = earlier
            tp[b] = cum(b, previous)[0] if previous >= 0 else 0

    # --- AUC ----------------------------------------------------------------------------------

    def auc(self, counts: np.ndarray) -> np.ndarray:
        """``float [B]``: each replicate's trapezoidal ROC area (the official ``AUC``): the
        fraction of (member, non-member) pairs ordered correctly, ties counting one half."""
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim != 2 or counts.shape[1] != self.n_models:
            raise ValueError(f"draw counts must be [B, {self.n_models}], got {counts.shape}")
        if not self._tables:
            step = max(1, CHUNK_ELEMENTS // len(self._mem))
            return np.concatenate(
                [self._auc_points(counts[i : i + step]) for i in range(0, len(counts), step)]
            )
        if self._auc_pairs is None:
            # A[m, m']: pairs (member of m, non-member of m') ordered correctly, ties 1/2: per
            # member, the non-members of each model below its group, plus half those in it.
            members = np.flatnonzero(self._mem)  # sorted by group; stable-sort them by model
            members = members[np.argsort(self._model[members], kind="stable")]
            groups = self._group[members]
            below = self._NEG[:, -1:] - self._NEG[:, groups] + 0.5 * self._neg[:, groups]
            owner = self._model[members]
            starts = np.r_[0, np.flatnonzero(np.diff(owner)) + 1]
            pairs = np.zeros((self.n_models, self.n_models))
            pairs[owner[starts]] = np.add.reduceat(below.T, starts, axis=0)
            self._auc_pairs = pairs
        pos_total = counts @ self._POS[:, -1].astype(np.int64)
        neg_total = counts @ self._NEG[:, -1].astype(np.int64)
        ordered = ((counts @ self._auc_pairs) * counts).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return ordered / (pos_total * neg_total)

    def _auc_points(self, counts: np.ndarray) -> np.ndarray:
        weights = counts[:, self._model]
        ends = np.r_[np.flatnonzero(np.diff(self._group)), len(self._group) - 1]
        tp_cum = np.cumsum(weights * self._mem, axis=1)[:, ends]
        fp_cum = np.cumsum(weights * ~self._mem, axis=1)[:, ends]
        pos = np.diff(tp_cum, axis=1, prepend=0)
        neg = np.diff(fp_cum, axis=1, prepend=0)
        total_neg = fp_cum[:, -1:]
        ordered = (pos * (total_neg - fp_cum + 0.5 * neg)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return ordered / (tp_cum[:, -1] * fp_cum[:, -1])


def percentile_interval(point: float, replicates: np.ndarray, level: float) -> Interval:
    """The percentile interval of ``replicates`` (NaNs, replicates without one of the classes,
    left out) around ``point``."""
    values = np.asarray(replicates, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Interval(float("nan"), float(point), float("nan"))
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return Interval(float(low), float(point), float(high))


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


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
        raise ValueError(f"need 0 <= correct ({correct}) <= guesses ({guesses}) <= canaries")
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
    conf, mem, ids = _checked(confidences, membership, models)
    shuffle = np.random.default_rng(0).permutation(conf.size)
    conf, mem, ids = conf[shuffle], mem[shuffle], ids[shuffle]
    order = np.lexsort((-conf, ids))  # by model, then by confidence, highest first
    ids, mem = ids[order], mem[order]
    starts = np.r_[0, np.flatnonzero(ids[1:] != ids[:-1]) + 1]
    sizes = np.diff(np.r_[starts, ids.size])
    results = []
    for k in grid:
        guesses = correct = 0
        for start, size in zip(starts, sizes, strict=True):
            per_side = min(k, size // 2)
            block = mem[start : start + size]
            correct += int(block[:per_side].sum()) + int((~block[size - per_side :]).sum())
            guesses += 2 * per_side
        results.append(AuditCounts(k, conf.size, guesses, correct))
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
        raise ValueError(f"delta must be in [0, 1), got {delta}")
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
