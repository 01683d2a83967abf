"""The cluster-bootstrap engine behind every interval (numpy only).

MICO's metrics pool the ``2m`` challenge points of every target model of a phase
(:mod:`mico.scoring`).  The points of one model share one training run, so they are not
independent draws: a bootstrap over points is too narrow.  :class:`ClusterBootstrap` resamples
whole *models* with replacement and pools their points; replicate ``b`` is exactly the official
metric of the concatenation of the drawn models' points (ties, the strict ``FPR < x`` rule and
scikit-learn's ``drop_intermediate`` included), which the tests check against a naive loop.

Nothing is re-sorted per replicate.  The points are sorted once into groups of equal
confidence, and a replicate is a vector of per-model draw counts ``c [M]``.  With per-model
cumulative count tables ``POS[g, m]``/``NEG[g, m]`` (members / non-members of model ``m`` in
groups ``0..g``), a replicate's ROC point at group ``g`` is ``(POS[g] @ c, NEG[g] @ c)``:
the last group with ``FPR < x`` is found by a binary search vectorised over replicates, and AUC
is a bilinear form ``c A c / (P N)`` in a model-by-model matrix ``A`` of correctly ordered
(member, non-member) pairs.  Where ``M x G`` would not fit in memory (many clusters, e.g. one
per point) the same statistics come from per-point weights, a chunk of replicates at a time.

Two attacks scored on the same targets with the same draw counts give paired replicates
(:func:`bootstrap_counts` depends only on the number of models, the seed and which models are
eligible).  The public functions are in :mod:`mico.attacks.audit`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from mico.errors import InputError

#: Replicates of every bootstrap unless asked otherwise (``run_lira_mia.py --bootstrap``).
DEFAULT_BOOT = 1000
#: Two-sided level of every interval.
DEFAULT_LEVEL = 0.95

#: Largest ``models x groups`` count table kept in memory (int32: 4 bytes each).
TABLE_LIMIT = 1 << 24
#: Replicates per chunk where per-point weights are used instead of tables.
CHUNK_ELEMENTS = 1 << 22

#: ``cum(b, g)``: replicates ``b``'s cumulative true and false positives at groups ``g``.
Cumulative = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
#: ``nearest(b, g, direction)``: the nearest group at or beyond ``g`` drawn by replicate ``b``.
Nearest = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


class Interval(NamedTuple):
    """``(low, point, high)``: a point estimate and its percentile-bootstrap interval."""

    low: float
    point: float
    high: float

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in ``[low, high]``."""
        return self.low <= value <= self.high


def bootstrap_counts(
    n_models: int,
    n_boot: int = DEFAULT_BOOT,
    seed: int | Sequence[int] = 0,
    eligible: np.ndarray | None = None,
) -> np.ndarray:
    """Draw counts ``int64 [B, M]``: replicate ``b`` draws ``model m`` ``counts[b, m]`` times.

    ``seed`` is an integer or a sequence of them (one stream per scenario and phase, say).
    Each replicate draws as many models as are ``eligible`` (bool ``[M]``, default all), with
    replacement, among the eligible ones; the others are never drawn (a CV fold's held-out
    models).  The counts depend on ``(n_models, n_boot, seed, eligible)`` alone, so every attack
    scored on the same targets with the same seed sees the same replicates: that pairing is
    what :func:`paired_interval` relies on.
    """
    if n_boot < 1:
        raise InputError(f"the bootstrap needs at least one replicate, got {n_boot}")
    mask = np.ones(n_models, dtype=bool) if eligible is None else np.asarray(eligible, bool)
    if mask.shape != (n_models,) or not mask.any():
        raise InputError("eligible must be a bool [M] mask with at least one model")
    drawn = np.flatnonzero(mask)
    rng = np.random.default_rng(seed)
    picks = drawn[rng.integers(0, len(drawn), (n_boot, len(drawn)))]
    flat = picks + n_models * np.arange(n_boot)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n_models).reshape(n_boot, n_models)


def checked_points(
    confidences: np.ndarray, membership: np.ndarray, models: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    conf = np.asarray(confidences, dtype=np.float64).ravel()
    mem = np.asarray(membership).ravel()
    ids = np.asarray(models).ravel()
    if not conf.size == mem.size == ids.size:
        raise InputError(
            f"{conf.size} confidences, {mem.size} memberships and {ids.size} model ids: "
            "one of each per point"
        )
    if not np.all(np.isfinite(conf)):
        raise InputError("confidences must be finite")
    if not np.all(np.isin(mem, (0, 1))):
        raise InputError("membership must be 0 or 1")
    mem = mem.astype(bool)
    if mem.all() or not mem.any():
        raise InputError("the ROC needs both members and non-members")
    return conf, mem, ids


class ClusterBootstrap:
    """Replicates of the official ROC statistics of one phase under resampling of models.

    ``confidences``, ``membership`` (0/1) and ``models`` (any ids) are ``[N]``, one entry per
    challenge point; a ``[T, K]`` array of predictions flattens with
    ``models = np.repeat(np.arange(T), K)``.  ``model_ids`` are the distinct ids in the order of
    the draw counts' columns.
    """

    def __init__(self, confidences: np.ndarray, membership: np.ndarray, models: np.ndarray):
        conf, mem, ids = checked_points(confidences, membership, models)
        self.model_ids, model = np.unique(ids, return_inverse=True)
        order = np.argsort(-conf, kind="mergesort")
        score, self._mem, self._model = conf[order], mem[order], model[order]
        new_group = np.r_[True, score[1:] != score[:-1]]
        self._group = np.cumsum(new_group) - 1
        self.n_groups = int(self._group[-1]) + 1
        n_models = len(self.model_ids)
        self._tables = n_models * self.n_groups <= TABLE_LIMIT
        if self._tables:
            # Counted [M, G] (numpy accumulates along rows far faster), stored [G, M]: the
            # searches read a group's row of every model's count.
            self._neg = self._counts(~self._mem)
            pos = np.cumsum(self._counts(self._mem), axis=1, dtype=np.int32)
            self._POS = np.ascontiguousarray(pos.T)
            self._NEG = np.ascontiguousarray(np.cumsum(self._neg, axis=1, dtype=np.int32).T)
        #: Groups holding members and non-members: only there can a replicate's ROC take a
        #: diagonal step, which scikit-learn's drop_intermediate may remove.
        self._mixed = (np.bincount(self._group[self._mem], minlength=self.n_groups) > 0) & (
            np.bincount(self._group[~self._mem], minlength=self.n_groups) > 0
        )
        self._auc_pairs: np.ndarray | None = None
        self._nearest: tuple[np.ndarray, np.ndarray] | None = None

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
            raise InputError(f"draw counts must be [B, {self.n_models}], got {counts.shape}")
        if self._tables:
            return self._tpr_tables(counts, limits)
        step = max(1, CHUNK_ELEMENTS // len(self._mem))
        return np.concatenate(
            [self._tpr_points(counts[i : i + step], limits) for i in range(0, len(counts), step)]
        )

    def _tpr_tables(self, counts: np.ndarray, limits: np.ndarray) -> np.ndarray:
        pos_total = counts @ self._POS[-1].astype(np.int64)
        neg_total = counts @ self._NEG[-1].astype(np.int64)

        def cumulative(table: np.ndarray, group: np.ndarray) -> np.ndarray:
            """``c_b @ table[g]`` for every ``g`` of ``group [L, B]``; 0 at ``g = -1`` (the
            ROC origin)."""
            values = np.einsum("lbm,bm->lb", table[np.maximum(group, 0)], counts)
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

            def cum(b: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                row = np.maximum(g, 0)
                tps = np.einsum("nm,nm->n", counts[b], self._POS[row])
                fps = np.einsum("nm,nm->n", counts[b], self._NEG[row])
                return np.where(g >= 0, tps, 0), np.where(g >= 0, fps, 0)

            previous, following = self._neighbours()

            def nearest(b: np.ndarray, g: np.ndarray, direction: int) -> np.ndarray:
                table, none = (previous, -1) if direction < 0 else (following, self.n_groups)
                inside = (g >= 0) & (g < self.n_groups)
                found = table[np.clip(g, 0, self.n_groups - 1)]  # [n, M]
                found = np.where(counts[b] > 0, found, none)
                found = found.max(axis=1) if direction < 0 else found.min(axis=1)
                return np.where(inside, found, none)

            for row, last in zip(tp, low, strict=True):
                self._drop_intermediate(row, last, cum, nearest)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (tp / pos_total).T
        out[(pos_total == 0) | (neg_total == 0)] = np.nan
        return out

    def _neighbours(self) -> tuple[np.ndarray, np.ndarray]:
        """int32 ``[G, M]`` tables: the last group at or before ``g``, and the first at or
        after it, holding a point of model ``m`` (-1 and G where there is none); built once,
        when ties first need them."""
        if self._nearest is None:
            index = np.arange(self.n_groups, dtype=np.int32)
            has = (np.diff(self._POS.T, axis=1, prepend=0) + self._neg) > 0  # [M, G]
            previous = np.maximum.accumulate(np.where(has, index, -1), axis=1)
            following = np.where(has, index, self.n_groups)[:, ::-1]
            following = np.minimum.accumulate(following, axis=1)[:, ::-1]
            self._nearest = tuple(  # type: ignore[assignment]
                np.ascontiguousarray(table.T, dtype=np.int32) for table in (previous, following)
            )
        return self._nearest

    def _tpr_points(self, counts: np.ndarray, limits: np.ndarray) -> np.ndarray:
        weights = counts[:, self._model]
        ends = np.r_[np.flatnonzero(np.diff(self._group)), len(self._group) - 1]
        tp_cum = np.cumsum(weights * self._mem, axis=1)[:, ends]
        fp_cum = np.cumsum(weights * ~self._mem, axis=1)[:, ends]
        pos_total, neg_total = tp_cum[:, -1], fp_cum[:, -1]
        rows = np.arange(len(counts))
        out = np.empty((len(counts), len(limits)))
        if self._mixed.any():
            index = np.arange(self.n_groups)
            drawn = (np.diff(tp_cum, axis=1, prepend=0) + np.diff(fp_cum, axis=1, prepend=0)) > 0
            before = np.maximum.accumulate(np.where(drawn, index, -1), axis=1)
            after = np.minimum.accumulate(np.where(drawn, index, self.n_groups)[:, ::-1], axis=1)
            after = after[:, ::-1]

            def nearest(b: np.ndarray, g: np.ndarray, direction: int) -> np.ndarray:
                table, none = (before, -1) if direction < 0 else (after, self.n_groups)
                inside = (g >= 0) & (g < self.n_groups)
                return np.where(inside, table[b, np.clip(g, 0, self.n_groups - 1)], none)

        for j, limit in enumerate(limits):
            with np.errstate(invalid="ignore", divide="ignore"):
                last = (fp_cum / neg_total[:, None] < limit).sum(axis=1) - 1
            tp = np.where(last >= 0, tp_cum[rows, np.maximum(last, 0)], 0)
            if self._mixed.any():

                def cum(b: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                    column = np.maximum(g, 0)
                    tps, fps = tp_cum[b, column], fp_cum[b, column]
                    return np.where(g >= 0, tps, 0), np.where(g >= 0, fps, 0)

                self._drop_intermediate(tp, last, cum, nearest)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:, j] = tp / pos_total
        out[(pos_total == 0) | (neg_total == 0)] = np.nan
        return out

    def _drop_intermediate(
        self, tp: np.ndarray, last: np.ndarray, cum: Cumulative, drawn: Nearest
    ) -> None:
        """Apply scikit-learn's ``drop_intermediate`` to the chosen ROC points, in place.

        ``tp [B]`` and ``last [B]`` are each replicate's true positives at, and index of, the
        last group with FPR below the limit; ``cum(b, g)`` gives replicates ``b``'s cumulative
        (true, false) positives at groups ``g`` (vectors), ``drawn(b, g, direction)`` the nearest
        group at or beyond ``g`` in ``direction`` that replicate ``b`` drew (-1 or G where
        there is none).  A replicate's ROC points are its
        groups of nonzero weight; an interior point whose step in equals its step out is
        dropped.  Only a diagonal step (a group holding members and non-members) can make the
        last point below the limit such a point: then the answer is the TPR of the last kept
        point before it, found by walking back over the equal steps.
        """

        def step(b: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            (tp_here, fp_here), (tp_before, fp_before) = cum(b, g), cum(b, g - 1)
            return tp_here - tp_before, fp_here - fp_before

        b = np.flatnonzero(last >= 0)
        point = drawn(b, last[b], -1)
        b, point = b[point >= 0], point[point >= 0]
        tps, fps = step(b, point)
        diagonal = self._mixed[point] & (tps > 0) & (fps > 0)
        b, point, tps, fps = b[diagonal], point[diagonal], tps[diagonal], fps[diagonal]
        following = drawn(b, point + 1, +1)
        inside = following < self.n_groups
        next_tps, next_fps = step(b, np.minimum(following, self.n_groups - 1))
        previous = drawn(b, point - 1, -1)
        dropped = inside & (next_tps == tps) & (next_fps == fps) & (previous >= 0)
        b, previous, tps, fps = b[dropped], previous[dropped], tps[dropped], fps[dropped]
        active = np.arange(b.size)
        while active.size:
            earlier = drawn(b[active], previous[active] - 1, -1)
            here_tps, here_fps = step(b[active], previous[active])
            move = (earlier >= 0) & (here_tps == tps[active]) & (here_fps == fps[active])
            previous[active[move]] = earlier[move]
            active = active[move]
        tp[b] = cum(b, previous)[0]

    # --- AUC ----------------------------------------------------------------------------------

    def auc(self, counts: np.ndarray) -> np.ndarray:
        """``float [B]``: each replicate's trapezoidal ROC area (the official ``AUC``): the
        fraction of (member, non-member) pairs ordered correctly, ties counting one half."""
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim != 2 or counts.shape[1] != self.n_models:
            raise InputError(f"draw counts must be [B, {self.n_models}], got {counts.shape}")
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
            below = self._NEG[-1] - self._NEG[groups] + 0.5 * self._neg[:, groups].T  # [mem, M]
            owner = self._model[members]
            starts = np.r_[0, np.flatnonzero(np.diff(owner)) + 1]
            pairs = np.zeros((self.n_models, self.n_models))
            pairs[owner[starts]] = np.add.reduceat(below, starts, axis=0)
            self._auc_pairs = pairs
        pos_total = counts @ self._POS[-1].astype(np.int64)
        neg_total = counts @ self._NEG[-1].astype(np.int64)
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
