"""The shadow budget: which shadow models an attack may use when only B of them were trained.

Every MIA paper draws how an attack's power grows with the number of shadow models. Here the
shadows already exist (MICO's train models, plus ``train_shadows.py``'s extra ones), so a
budget of B is simulated by keeping B of the S shadow rows. The draw is

* **random and seeded**: ``repeats`` draws from one ``numpy`` generator seeded with ``seed``,
  so a rerun gives the same subsets;
* **stratified**: a point with no OUT (or no IN) shadow left cannot be scored by an offline
  (online) test, so rows are added one at a time, each chosen uniformly at random among the
  rows whose *coverage* is at least ``STRATIFY_SLACK`` times the best row's. A row's coverage
  counts the (point, side) pairs still missing from the draw that it would fill, each weighted
  by 1 / (the number of rows not yet drawn that could fill it), so a pair only a few rows can
  fill weighs most. Once every point that has IN and OUT shadows at all has both in the draw
  (or no row adds any), the rest of the budget is filled uniformly at random. On real designs
  many rows cover about as much as the best, so the draw stays close to uniform; where only a
  few rows give some points their only OUT model, they are taken first.

A shadow row is a whole model, so its kind does not matter: extra shadows count toward the
budget like train models (choose the pool with :meth:`mico.store.ScenarioScores.select_shadows`
first). A ``train`` target whose own row is drawn is left out of its own statistics as always,
so it is scored with B - 1 shadows; the others with B.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mico.errors import InputError
from mico.outputs.store import ScenarioScores

#: A row qualifies while it covers at least this fraction of what the best row covers.
STRATIFY_SLACK = 0.5


def budget_draws(
    shadow_in: np.ndarray, budget: int, repeats: int = 1, seed: int | Sequence[int] = 0
) -> np.ndarray:
    """Rows ``[repeats, B]`` (each draw sorted) of ``budget`` shadow models out of the S rows
    of ``shadow_in`` ``[S, P]`` (True: the shadow trained on the point), drawn as the module
    docstring says. A budget of S or more keeps every row."""
    mask = np.asarray(shadow_in)
    if mask.ndim != 2 or mask.dtype != np.bool_:
        raise InputError(
            f"shadow_in must be a 2-D boolean array [S, P], got {mask.dtype} {mask.shape}"
        )
    if budget < 1 or repeats < 1:
        raise InputError(f"budget and repeats must be at least 1, got {budget} and {repeats}")
    n_rows = mask.shape[0]
    if budget >= n_rows:
        return np.tile(np.arange(n_rows, dtype=np.int64), (repeats, 1))
    rng = np.random.default_rng(seed)
    inside = mask.astype(np.float32)
    outside = 1.0 - inside
    possible = mask.any(axis=0) & (~mask).any(axis=0)
    draws = np.empty((repeats, budget), dtype=np.int64)
    for r in range(repeats):
        need_in, need_out = possible.copy(), possible.copy()
        free = np.ones(n_rows, dtype=bool)
        for b in range(budget):
            # Each missing pair weighs 1 / (free rows that could fill it).
            weight_in = need_in / np.maximum(inside[free].sum(axis=0), 1.0)
            weight_out = need_out / np.maximum(outside[free].sum(axis=0), 1.0)
            gain = inside @ weight_in.astype(np.float32) + outside @ weight_out.astype(np.float32)
            best = gain[free].max()
            pool = free & (gain >= STRATIFY_SLACK * best) if best > 0 else free
            row = int(rng.choice(np.flatnonzero(pool)))
            draws[r, b] = row
            free[row] = False
            need_in &= ~mask[row]
            need_out &= mask[row]
        draws[r].sort()
    return draws


def keep_rows(scores: ScenarioScores, rows: np.ndarray) -> ScenarioScores:
    """A copy of ``scores`` whose shadows are ``rows`` (distinct indices, in that order):
    :meth:`~mico.outputs.store.ScenarioScores.shadow_rows`, after checking the rows."""
    rows = np.asarray(rows, dtype=np.int64)
    n_rows = len(scores.shadow_ids)
    if (
        rows.ndim != 1
        or len(np.unique(rows)) != len(rows)
        or rows.min() < 0
        or rows.max() >= n_rows
    ):
        raise InputError(f"rows must be distinct shadow rows in [0, {n_rows}), got {rows}")
    return scores.shadow_rows(rows)
