"""IN/OUT statistics of shadow-model scores, shared by every attack that calibrates with shadows.

Shapes used throughout (one scenario and phase at a time)::

    S  shadow models (MICO ``train`` models)     P  unique challenge points (columns)
    T  target models                             K  challenge points per target (2m = 200)

    shadow_score  [S, P]  float64   any per-point score of shadow s on point p
    shadow_in     [S, P]  bool      shadow s trained on point p (IN) or not (OUT)
    target_points [T, K]  int64     column of ``shadow_*`` holding target t's k-th point
    target_shadow [T]     int64     row of ``shadow_*`` that IS target t (-1: none)

How the statistics are computed (O(S*P + T*K), no per-point Python loop):

1. For each side (IN, OUT) and point, centre the shadow scores on that side's mean and
   sum them once over all shadows: count n, sum s1 (about 0), sum of squares s2.
2. Gather those sums at ``target_points``. Where the target is itself a shadow (the
   ``train`` phase) subtract its own row, so it is never its own shadow model.
3. ``var = (s2 - s1**2 / n) / (n - 1)``. Removing a row that dominates s2 (a target far
   from tightly clustered shadows) would cancel catastrophically, so such entries (rare on
   real data) are recomputed exactly from the gathered scores.

Variances use ddof=1 (the unbiased estimate): with the ~17 OUT models a CIFAR-10 point
typically has, ddof=0 underestimates the variance by ~6% and overstates confidence.

Three pooled variances per target and side serve as fallbacks and as LiRA's global
variance (:meth:`InOutStats.std`):

* ``pooled_var`` (within-point): ``sum_k sum_i (x_ki - mean_k)**2 / sum_k (n_k - 1)``, the
  standard pooled estimator (it reduces to ddof=1 for K = 1);
* ``total_var`` (the original's and Carlini et al.'s ``--global_variance``, their
  ``fix_variance``): the variance of the concatenation of the side's scores over all K points
  around their common mean, so the spread between the points' means is part of it; ddof=1
  over the concatenation, and each point still keeps its own mean when standardising;
* ``scenario_var``: the within-point pooled variance over all P points of the scenario.

Fallbacks, so that every std is finite and positive:

* std of a side at a point with fewer than 2 models on that side: the target's pooled
  within-point std of that side; where that is undefined (no point of the target has 2
  models on that side), the scenario-wide pooled std of that side (all P points, the
  target's own row excluded); where that is undefined or zero, 1.0.
* std floor ``STD_FLOOR_REL * max(|mean|, scenario std)``: zero-variance points (saturated
  probabilities) compare the target with the mean instead of dividing by zero. Real score
  spreads are orders of magnitude above it, and at it float64 rounding of the mean (~1e-16
  relative) moves a confidence by only ~1e-9, so results do not hinge on summation order.
* standardised distances are capped at ``Z_CAP`` (:func:`standardise`) so squares stay
  finite; a Normal CDF or likelihood ratio is saturated long before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mico.errors import InputError

STD_FLOOR_REL = 1e-6
"""Relative std floor, see the module docstring."""

MAX_ABS_SCORE = 1e100
"""Largest accepted |margin| and |score|: float32 logits give |z| < 1e39, and the bound keeps
sums of squares finite."""

Z_CAP = 1e100
"""Cap on |x - mean| / std, so that squared distances stay finite."""

#: How :meth:`InOutStats.std` chooses a std: ``per-point`` (each point's own shadows),
#: ``pooled`` (one per target: the variance of all its points' scores together, the
#: original's and Carlini et al.'s global variance), ``pooled-within`` (one per target: the
#: within-point variance pooled over its K points).
VARIANCES: tuple[str, ...] = ("per-point", "pooled", "pooled-within")

_DOWNDATE_COND = 1e4


@dataclass(frozen=True)
class InOutStats:
    """Leave-target-out IN/OUT statistics of shadow scores at each target's points.

    Per (target, point), ``[T, K]``: ``n_*`` number of shadow models on that side (int64),
    ``mean_*`` their mean score (NaN where n = 0), ``var_*`` their variance with ddof=1 (NaN
    where n < 2). Per target, ``[T]``: ``pooled_var_*`` the pooled within-point variance
    over the target's K points (NaN where no point has n >= 2), ``total_var_*`` the variance
    of all the side's scores at the target's K points together (NaN where fewer than 2),
    ``scenario_var_*`` the pooled within-point variance over all P points of the scenario
    (NaN where undefined). The target's own shadow row,
    if any, is excluded from all of them.
    """

    n_in: np.ndarray
    mean_in: np.ndarray
    var_in: np.ndarray
    n_out: np.ndarray
    mean_out: np.ndarray
    var_out: np.ndarray
    pooled_var_in: np.ndarray
    pooled_var_out: np.ndarray
    total_var_in: np.ndarray
    total_var_out: np.ndarray
    scenario_var_in: np.ndarray
    scenario_var_out: np.ndarray

    def std(self, side: str, variance: str = "per-point") -> np.ndarray:
        """Standard deviation ``[T, K]`` of ``side`` (``"in"`` or ``"out"``) to standardise with,
        per point or pooled as ``variance`` (one of :data:`VARIANCES`) says.

        Applies the fallback chain and floor of the module docstring, so the result is
        finite and positive everywhere, also where ``n_side`` is 0 (callers decide what a
        point without models means).
        """
        if side not in ("in", "out"):
            raise InputError(f"side must be 'in' or 'out', not {side!r}")
        if variance not in VARIANCES:
            raise InputError(f"unknown variance {variance!r}; choose one of {', '.join(VARIANCES)}")
        n = getattr(self, f"n_{side}")
        mean = getattr(self, f"mean_{side}")
        var = getattr(self, f"var_{side}")
        pooled = getattr(self, f"{'total' if variance == 'pooled' else 'pooled'}_var_{side}")
        scenario = getattr(self, f"scenario_var_{side}")

        target_std = np.where(np.isfinite(pooled), np.sqrt(pooled), _scale(scenario))[:, None]
        if variance != "per-point":
            std = np.broadcast_to(target_std, n.shape)
        else:
            std = np.where(n >= 2, np.sqrt(np.where(n >= 2, var, 0.0)), target_std)
        return np.maximum(std, std_floor(np.where(n >= 1, mean, 0.0), scenario))


def _scale(scenario_var: np.ndarray) -> np.ndarray:
    """The scenario-wide std ``[T]`` where defined and positive, else 1.0."""
    ok = np.isfinite(scenario_var) & (scenario_var > 0)
    return np.where(ok, np.sqrt(np.where(ok, scenario_var, 1.0)), 1.0)


def std_floor(centre: np.ndarray, scenario_var: np.ndarray) -> np.ndarray:
    """The one std floor ``[T, K]`` of every Gaussian (and Student-t) scale:
    ``STD_FLOOR_REL * max(|centre|, scenario std)``, with ``centre [T, K]`` the location (NaN
    counts as 0) and ``scenario_var [T]`` the side's scenario-wide pooled variance (1.0 where
    undefined); see the module docstring."""
    centre = np.abs(np.nan_to_num(np.asarray(centre, dtype=np.float64)))
    return STD_FLOOR_REL * np.maximum(centre, _scale(np.asarray(scenario_var))[:, None])


def inout_stats(
    shadow_score: np.ndarray,
    shadow_in: np.ndarray,
    target_points: np.ndarray,
    target_shadow: np.ndarray | None = None,
    *,
    valid: np.ndarray | None = None,
) -> InOutStats:
    """IN/OUT statistics of any per-point shadow score, leaving each target out.

    ``shadow_score`` ``[S, P]`` is any finite float score (a transformed margin, a loss,
    ...); ``shadow_in``, ``target_points`` and ``target_shadow`` are as in the module docstring.
    ``valid`` ``[S, P]`` bool (default: all) leaves entries out of both sides.
    Shared by every attack that calibrates a target's score with shadow models.
    """
    x, mask, tp, ts = _check_shadows(shadow_score, shadow_in, target_points, target_shadow)
    in_mask, out_mask = mask, ~mask
    if valid is not None:
        keep = np.asarray(valid)
        if keep.dtype != np.bool_ or keep.shape != x.shape:
            raise InputError(f"valid must be a boolean array of shape {x.shape}")
        in_mask, out_mask = mask & keep, out_mask & keep
    n_in, mean_in, var_in, pooled_in, total_in, scen_in = _side_stats(x, in_mask, tp, ts)
    n_out, mean_out, var_out, pooled_out, total_out, scen_out = _side_stats(x, out_mask, tp, ts)
    return InOutStats(
        n_in=n_in,
        mean_in=mean_in,
        var_in=var_in,
        n_out=n_out,
        mean_out=mean_out,
        var_out=var_out,
        pooled_var_in=pooled_in,
        pooled_var_out=pooled_out,
        total_var_in=total_in,
        total_var_out=total_out,
        scenario_var_in=scen_in,
        scenario_var_out=scen_out,
    )


def standardise(y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(y - mean) / std`` capped at ``Z_CAP``; finite but meaningless where mean is NaN."""
    return np.clip((y - np.nan_to_num(mean)) / std, -Z_CAP, Z_CAP)


def check_scores(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as a 2-D float64 array of finite, not absurdly large numbers, or ValueError."""
    if values.ndim != 2:
        raise InputError(f"{name} must be 2-D, got shape {values.shape}")
    if values.dtype.kind not in "fiu":
        raise InputError(f"{name} must hold real numbers, got dtype {values.dtype}")
    values = values.astype(np.float64, copy=False)
    # min/max propagate NaN, which then fails both comparisons.
    if values.size and not (values.min() >= -MAX_ABS_SCORE and values.max() <= MAX_ABS_SCORE):
        raise InputError(
            f"{name} holds NaN, infinite or absurdly large (> {MAX_ABS_SCORE:g}) values; "
            "margins must be finite: check the logits written by the producer"
        )
    return values


def _check_shadows(
    shadow_score: np.ndarray,
    shadow_in: np.ndarray,
    target_points: np.ndarray,
    target_shadow: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate the shadow-side inputs; return (scores, in-mask, points, shadow rows)."""
    x = check_scores(np.asarray(shadow_score), "shadow_score")
    mask = np.asarray(shadow_in)
    if mask.dtype != np.bool_:
        raise InputError(f"shadow_in must be a boolean array (IN = True), got dtype {mask.dtype}")
    if mask.shape != x.shape:
        raise InputError(
            f"shadow_in has shape {mask.shape} but the shadow scores have shape {x.shape}; "
            "both must be [S, P]"
        )
    n_shadows, n_points = x.shape
    if n_shadows == 0:
        raise InputError("no shadow models: shadow arrays need at least one row")
    tp = np.asarray(target_points)
    if tp.ndim != 2 or not np.issubdtype(tp.dtype, np.integer):
        raise InputError(
            f"target_points must be a 2-D integer array [T, K], got {tp.dtype} {tp.shape}"
        )
    if tp.size and (tp.min() < 0 or tp.max() >= n_points):
        raise InputError(
            f"target_points must index the {n_points} shadow columns, "
            f"got values in [{tp.min()}, {tp.max()}]"
        )
    n_targets = tp.shape[0]
    if target_shadow is None:
        ts = np.full(n_targets, -1, dtype=np.int64)
    else:
        ts = np.asarray(target_shadow)
        if ts.shape != (n_targets,) or not np.issubdtype(ts.dtype, np.integer):
            raise InputError(
                f"target_shadow must be an integer array of shape ({n_targets},), "
                f"got {ts.dtype} {ts.shape}"
            )
        if ts.size and (ts.min() < -1 or ts.max() >= n_shadows):
            raise InputError(
                f"target_shadow must hold shadow rows in [0, {n_shadows}) or -1 (not a "
                f"shadow), got values in [{ts.min()}, {ts.max()}]"
            )
        ts = ts.astype(np.int64, copy=False)
    return x, mask, tp.astype(np.int64, copy=False), ts


def _centred_sums(
    x: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-column sums of the masked rows of ``x`` ``[R, C]``, centred on their mean.

    Returns ``n, centre, d, s1, s2``: count, mean (0 where n = 0), the centred masked
    values ``d`` ``[R, C]`` (0 off the mask), and the column sums of d and d**2.
    """
    n = mask.sum(axis=0)
    centre = np.einsum("rc,rc->c", x, mask) / np.maximum(n, 1)
    d = x - centre
    d *= mask
    return n, centre, d, d.sum(axis=0), np.einsum("rc,rc->c", d, d)


def _m2(n: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Sum of squared deviations from centred sums; exactly 0 where n < 2."""
    m2 = s2 - s1 * s1 / np.maximum(n, 1)
    return np.where(n >= 2, np.maximum(m2, 0.0), 0.0)


def _side_stats(
    x: np.ndarray, mask: np.ndarray, tp: np.ndarray, ts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n, mean, var ``[T, K]`` and pooled, total, scenario variance ``[T]`` of one side."""
    n_p, centre, d, s1_p, s2_p = _centred_sums(x, mask)

    # Leave the target's own row out: subtract its contribution from the gathered sums.
    is_shadow = ts >= 0
    row = np.where(is_shadow, ts, 0)[:, None]
    drop = is_shadow[:, None] & mask[row, tp]
    d_row = np.where(drop, d[row, tp], 0.0)
    n = n_p[tp] - drop
    s1 = s1_p[tp] - d_row
    s2_before = s2_p[tp]
    s2 = s2_before - d_row * d_row
    mean = centre[tp] + s1 / np.maximum(n, 1)
    m2 = _m2(n, s1, s2)

    # The subtraction loses ~eps * s2_before absolute precision: redo the few entries where
    # that is not negligible against what remains (a lone survivor has m2 = 0, so any
    # removal next to it is redone too, which makes its mean exact).
    redo = (n >= 1) & (s2_before > _DOWNDATE_COND * m2)
    if redo.any():
        t_idx, k_idx = np.nonzero(redo)
        points = tp[t_idx, k_idx]
        keep = mask[:, points] & (np.arange(x.shape[0])[:, None] != ts[t_idx])
        n_r, centre_r, _, s1_r, s2_r = _centred_sums(x[:, points], keep)
        mean[t_idx, k_idx] = centre_r + s1_r / np.maximum(n_r, 1)
        m2[t_idx, k_idx] = _m2(n_r, s1_r, s2_r)

    dof = np.maximum(n - 1, 0)
    pooled = _ratio(m2.sum(axis=1), dof.sum(axis=1))
    total = _total_var(n, np.where(n >= 1, mean, 0.0), m2)
    scenario = _scenario_var(x, mask, n_p, d, s1_p, s2_p, ts)
    mean = np.where(n >= 1, mean, np.nan)
    var = np.where(n >= 2, m2 / np.maximum(dof, 1), np.nan)
    return n.astype(np.int64), mean, var, pooled, total, scenario


def _total_var(n: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """Variance ``[T]`` (ddof=1) of all values at a target's K points together, from each
    point's count, mean and sum of squared deviations ``[T, K]`` (the parallel-variance
    identity: within-point sums plus each point's weighted squared distance to the grand mean).
    """
    count = n.sum(axis=1)
    grand = (n * mean).sum(axis=1) / np.maximum(count, 1)
    between = (n * (mean - grand[:, None]) ** 2).sum(axis=1)
    return _ratio(m2.sum(axis=1) + between, count - 1)


def _scenario_var(
    x: np.ndarray,
    mask: np.ndarray,
    n_p: np.ndarray,
    d: np.ndarray,
    s1_p: np.ndarray,
    s2_p: np.ndarray,
    ts: np.ndarray,
) -> np.ndarray:
    """Pooled within-point variance ``[T]`` over all P points, leaving each target out.

    Removing value v from a point with n values and mean mu lowers its sum of squared
    deviations by ``(v - mu)**2 * n / (n - 1)``; rows whose removal cancels most of the
    total (all other shadows nearly constant) are recomputed exactly.
    """
    m2_total = _m2(n_p, s1_p, s2_p).sum()
    dof_total = np.maximum(n_p - 1, 0).sum()
    # Per shadow row, for all rows at once: d is 0 off the mask and centred on the mean up
    # to rounding (s1_p is negligible here).
    weight = np.where(n_p >= 2, n_p / np.maximum(n_p - 1, 1), 0.0)
    m2_rows = np.maximum(m2_total - np.einsum("sp,sp,p->s", d, d, weight), 0.0)
    dof_rows = dof_total - (mask & (n_p >= 2)).sum(axis=1)
    needed = np.zeros(x.shape[0], dtype=bool)
    needed[ts[ts >= 0]] = True
    for row in np.flatnonzero(needed & (m2_total > _DOWNDATE_COND * m2_rows)):
        keep = mask.copy()
        keep[row] = False
        n_r, _, _, s1_r, s2_r = _centred_sums(x, keep)
        m2_rows[row] = _m2(n_r, s1_r, s2_r).sum()

    var_rows = _ratio(m2_rows, dof_rows)
    return np.where(ts >= 0, var_rows[np.maximum(ts, 0)], _ratio(m2_total, dof_total))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` as float64, NaN where ``den`` is 0."""
    num = np.asarray(num, dtype=np.float64)
    return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def check_finite(values: np.ndarray, name: str, *, ndim: int) -> np.ndarray:
    """``values`` as an ``ndim``-D float64 array of finite margins, or ValueError."""
    array = np.asarray(values)
    if array.ndim != ndim or array.dtype.kind not in "fiu":
        raise InputError(
            f"{name} must be a {ndim}-D array of numbers, got {array.dtype} {array.shape}"
        )
    array = array.astype(np.float64, copy=False)
    if array.size and not (array.min() >= -MAX_ABS_SCORE and array.max() <= MAX_ABS_SCORE):
        raise InputError(
            f"{name} holds NaN, infinite or absurdly large values; margins must be finite"
        )
    return array


def check_targets(target_margin: np.ndarray, target_points: np.ndarray) -> np.ndarray:
    """The targets' margins ``[T, K]`` as float64, checked against ``target_points``."""
    y = check_finite(target_margin, "target_margin", ndim=2)
    if y.shape != np.shape(target_points):
        raise InputError(
            f"target_margin has shape {y.shape} but target_points has shape "
            f"{np.shape(target_points)}; they must both be [T, K]"
        )
    return y
