"""The attacks besides LiRA, on the same stored shadow outputs: arrays in, arrays out, no I/O.

Shapes as in :mod:`mico.lira` (one scenario and phase at a time)::

    shadow_margin     [S, P]  float64   true-label logit margin z of shadow s on point p
    shadow_in         [S, P]  bool      shadow s trained on point p
    target_margin     [T, K]  float64   each target's margin on its own K challenge points
    target_points     [T, K]  int64     column of ``shadow_*`` holding that point
    target_shadow     [T]     int64     row of ``shadow_*`` that IS target t (-1: none)
    shadow_population [S, Q]  float64   shadows' margins on Q population (non-challenge) records
    target_population [T, Q]  float64   targets' margins on the same records

Every attack returns ``[T, K]`` float64 membership confidences, finite, in [0, 1], higher
meaning "member". Only their order within a phase matters to the official metrics (which
pool all targets of a scenario and phase), so a monotone map of a score into [0, 1] over the
whole phase loses nothing. The target's own shadow row, where it has one (the ``train``
phase), never enters its own statistics: IN/OUT statistics come from
:func:`mico.lira.inout_stats`, which leaves it out.

The attacks, with ``p = sigmoid(z)`` the softmax probability of the true label and
``-loss = log p`` (cross-entropy):

* :func:`loss_attack`: the MICO starting kit's loss threshold, ``p`` (monotone in -loss);
  no shadow models. The floor every other attack should beat.
* :func:`hardness`: the 1st-place MICO calibration (difficulty calibration, Watson et al.,
  ICLR 2022): a score minus a per-point reference computed from the shadows, then min-max
  normalised over the phase. See :data:`HARDNESS_SCORES` and :data:`HARDNESS_VARIANTS`.
* :func:`rmia`: the offline relative membership inference attack of Zarifzadeh, Liu and
  Shokri, "Low-Cost High-Power Membership Inference Attacks" (ICML 2024). Details there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, log_expit

from mico.lira import MAX_ABS_SCORE, Z_CAP, inout_stats

#: Per-point scores the hardness attack calibrates, each oriented so that higher = member:
#: ``loss`` is -cross-entropy = log p, ``prob`` is p, ``margin`` is z (the logit-scaled
#: confidence, LiRA's ``stable_logit``).
HARDNESS_SCORES: tuple[str, ...] = ("loss", "prob", "margin")

#: Calibrations of the 1st-place solution: ``in``: score - mean of the IN shadows;
#: ``mid``: score - (IN mean + OUT mean) / 2; ``std``: (score - mean) / std of all shadows.
HARDNESS_VARIANTS: tuple[str, ...] = ("in", "mid", "std")

_TINY = float(np.finfo(np.float64).tiny)


def loss_attack(target_margin: np.ndarray) -> np.ndarray:
    """The loss-threshold baseline: confidence ``p = sigmoid(z) = exp(-loss)`` ``[T, K]``.

    ``p`` rounds to 1.0 for margins above ~36.7, so extremely confident points tie; the
    starting kit's threshold on the loss has the same resolution.
    """
    return expit(_check_finite(target_margin, "target_margin", ndim=2))


def hardness_score(margin: np.ndarray, score: str) -> np.ndarray:
    """The per-point score of :data:`HARDNESS_SCORES` (same shape as ``margin``)."""
    z = np.asarray(margin, dtype=np.float64)
    if score == "loss":
        return log_expit(z)
    if score == "prob":
        return expit(z)
    if score == "margin":
        return z.copy()
    raise ValueError(f"unknown score {score!r}; choose one of {', '.join(HARDNESS_SCORES)}")


def hardness_calibrated(
    shadow_margin: np.ndarray,
    shadow_in: np.ndarray,
    target_margin: np.ndarray,
    target_points: np.ndarray,
    target_shadow: np.ndarray | None = None,
    *,
    score: str = "loss",
    variant: str = "mid",
) -> np.ndarray:
    """Calibrated scores ``[T, K]`` (unbounded, higher = member) before normalisation.

    With ``y`` the target's score and IN / OUT / ALL the shadows of each side (ALL = both)
    at that point, the target's own row left out:

    * ``in``:  ``y - mean(IN)``;
    * ``mid``: ``y - (mean(IN) + mean(OUT)) / 2``;
    * ``std``: ``(y - mean(ALL)) / std(ALL)``, ddof=1, with the std fallbacks and floor of
      :meth:`mico.lira.InOutStats.std` (the target's pooled std where a point has < 2).

    Where a side the variant needs is empty, the reference is ``mean(ALL)``; where no shadow
    is left at all, the calibrated score is 0 (the point carries no evidence).
    """
    _check_choice(variant, HARDNESS_VARIANTS, "variant")
    y = hardness_score(_check_targets(target_margin, target_points), score)
    x = hardness_score(_check_finite(shadow_margin, "shadow_margin", ndim=2), score)
    everyone = inout_stats(x, np.ones(x.shape, dtype=bool), target_points, target_shadow)
    n_all, mean_all = everyone.n_in, everyone.mean_in
    if variant == "std":
        std = everyone.std("in")
        calibrated = np.clip((y - np.nan_to_num(mean_all)) / std, -Z_CAP, Z_CAP)
        return np.where(n_all >= 1, calibrated, 0.0)
    stats = inout_stats(x, shadow_in, target_points, target_shadow)
    if variant == "in":
        have = stats.n_in >= 1
        reference = stats.mean_in
    else:
        have = (stats.n_in >= 1) & (stats.n_out >= 1)
        reference = 0.5 * (stats.mean_in + stats.mean_out)
    reference = np.where(have, reference, np.where(n_all >= 1, mean_all, y))
    return y - reference


def hardness(
    shadow_margin: np.ndarray,
    shadow_in: np.ndarray,
    target_margin: np.ndarray,
    target_points: np.ndarray,
    target_shadow: np.ndarray | None = None,
    *,
    score: str = "loss",
    variant: str = "mid",
) -> np.ndarray:
    """Membership confidence ``[T, K]`` in [0, 1]: :func:`hardness_calibrated`, min-max
    normalised over all T*K values (as the 1st place did per phase: pass a whole phase)."""
    return minmax(
        hardness_calibrated(
            shadow_margin,
            shadow_in,
            target_margin,
            target_points,
            target_shadow,
            score=score,
            variant=variant,
        )
    )


def minmax(values: np.ndarray) -> np.ndarray:
    """``(v - min) / (max - min)`` over the whole array, into [0, 1]; all 0.5 if constant."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v.copy()
    low, high = v.min(), v.max()
    if not high > low:
        return np.full(v.shape, 0.5)
    return (v - low) / (high - low)


@dataclass(frozen=True)
class RmiaInputs:
    """What RMIA needs for one phase, computed once and reused over its parameter grid.

    ``log_p`` ``[T, K]``: log Pr(x | target); ``mean_out`` ``[T, K]``: mean Pr(x | shadow)
    over the OUT shadows of x (NaN where none), ``n_out`` their number; ``log_ratio_z``
    ``[T, Q]``: log(Pr(z | target) / Pr(z)) for every population record z.
    """

    log_p: np.ndarray
    mean_out: np.ndarray
    n_out: np.ndarray
    log_ratio_z: np.ndarray


def rmia_inputs(
    shadow_margin: np.ndarray,
    shadow_in: np.ndarray,
    target_margin: np.ndarray,
    target_points: np.ndarray,
    shadow_population: np.ndarray,
    target_population: np.ndarray,
    target_shadow: np.ndarray | None = None,
) -> RmiaInputs:
    """Prepare :class:`RmiaInputs`; see :func:`rmia` for the definitions."""
    y = _check_targets(target_margin, target_points)
    sp = _check_finite(shadow_population, "shadow_population", ndim=2)
    tpop = _check_finite(target_population, "target_population", ndim=2)
    n_shadows, n_targets = np.shape(shadow_margin)[0], y.shape[0]
    if sp.shape[0] != n_shadows or tpop.shape != (n_targets, sp.shape[1]):
        raise ValueError(
            f"population margins have shapes {sp.shape} (shadows) and {tpop.shape} (targets); "
            f"expected [{n_shadows}, Q] and [{n_targets}, Q]"
        )
    if sp.shape[1] == 0:
        raise ValueError("RMIA needs population records (Q >= 1)")
    p_shadow = expit(_check_finite(shadow_margin, "shadow_margin", ndim=2))
    stats = inout_stats(p_shadow, shadow_in, target_points, target_shadow)

    # Pr(z): mean over every shadow but the target itself. The population records are
    # non-challenge records, IN for a shadow exactly as often as for a target (each is in a
    # model's training set with probability (len_training - m) / (N - 2m)), so this mean
    # estimates Pr(z) = E_theta Pr(z | theta) without the offline correction that x needs.
    n_pop = sp.shape[1]
    columns = np.broadcast_to(np.arange(n_pop, dtype=np.int64), (n_targets, n_pop))
    pz = inout_stats(expit(sp), np.ones(sp.shape, dtype=bool), columns, target_shadow)
    log_pr_z = np.log(np.maximum(np.nan_to_num(pz.mean_in), _TINY))
    log_ratio_z = np.where(pz.n_in >= 1, log_expit(tpop) - log_pr_z, 0.0)
    return RmiaInputs(
        log_p=log_expit(y), mean_out=stats.mean_out, n_out=stats.n_out, log_ratio_z=log_ratio_z
    )


def rmia_from_inputs(inputs: RmiaInputs, *, a: float = 0.3, gamma: float = 1.0) -> np.ndarray:
    """RMIA confidences ``[T, K]`` from prepared inputs, for one offline ``a`` and ``gamma``."""
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"RMIA's offline a must lie in [0, 1], got {a}")
    if not gamma > 0.0 or not np.isfinite(gamma):
        raise ValueError(f"RMIA's gamma must be a positive number, got {gamma}")
    mean_out = np.nan_to_num(inputs.mean_out)
    pr_x = 0.5 * ((1.0 + a) * mean_out + (1.0 - a))
    log_ratio_x = inputs.log_p - np.log(np.maximum(pr_x, _TINY))
    fraction = fraction_below(log_ratio_x - np.log(gamma), inputs.log_ratio_z)
    return np.where(inputs.n_out >= 1, fraction, 0.5)


def rmia(
    shadow_margin: np.ndarray,
    shadow_in: np.ndarray,
    target_margin: np.ndarray,
    target_points: np.ndarray,
    shadow_population: np.ndarray,
    target_population: np.ndarray,
    target_shadow: np.ndarray | None = None,
    *,
    a: float = 0.3,
    gamma: float = 1.0,
) -> np.ndarray:
    """Offline RMIA membership confidence ``[T, K]`` in [0, 1].

    With ``Pr(x | theta) = p``, the softmax probability of x's label under model theta::

        Pr(x)     = ((1 + a) * mean_OUT Pr(x | shadow) + (1 - a)) / 2
        Pr(z)     = mean over all shadows of Pr(z | shadow)            (population record z)
        LR(x, z)  = (Pr(x | target) / Pr(x)) / (Pr(z | target) / Pr(z))
        score(x)  = fraction of the Q population records z with LR(x, z) > gamma

    ``Pr(x)`` is the paper's offline approximation (Zarifzadeh et al. 2024, section on the
    offline attack): a challenge point is IN for the target with probability 1/2, so
    ``Pr(x) = (Pr_IN(x) + Pr_OUT(x)) / 2``, and ``Pr_IN(x)`` is approximated from OUT
    models alone by the line ``a * Pr_OUT(x) + (1 - a)``. Only OUT shadows of x enter,
    and never the target's own row. ``gamma = 1`` is the paper's usual choice; a larger
    gamma asks for a clearer win over each z and saturates less at 1.

    Computed in log space (finite for any finite margin) with one sort per target row over
    its K thresholds and Q population ratios, never a ``[T, K, Q]`` array. Points without an
    OUT shadow get 0.5 (no evidence either way).
    """
    inputs = rmia_inputs(
        shadow_margin,
        shadow_in,
        target_margin,
        target_points,
        shadow_population,
        target_population,
        target_shadow,
    )
    return rmia_from_inputs(inputs, a=a, gamma=gamma)


def fraction_below(thresholds: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row, the fraction of ``values`` ``[T, Q]`` strictly below each threshold ``[T, K]``.

    One stable sort of each row's thresholds followed by its values: a value equal to a
    threshold sorts after it, so it is not counted. Memory O(T * (K + Q)).
    """
    t = np.asarray(thresholds, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.ndim != 2 or v.ndim != 2 or t.shape[0] != v.shape[0]:
        raise ValueError(f"need [T, K] thresholds and [T, Q] values, got {t.shape} and {v.shape}")
    n_rows, k = t.shape
    if v.shape[1] == 0:
        raise ValueError("fraction_below needs at least one value per row")
    order = np.argsort(np.concatenate([t, v], axis=1), axis=1, kind="stable")
    is_value = order >= k
    values_before = np.cumsum(is_value, axis=1)
    rows, position = np.nonzero(~is_value)
    counts = np.empty((n_rows, k), dtype=np.int64)
    counts[rows, order[rows, position]] = values_before[rows, position]
    return counts / v.shape[1]


def _check_choice(value: str, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def _check_finite(values: np.ndarray, name: str, *, ndim: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != ndim or array.dtype.kind not in "fiu":
        raise ValueError(
            f"{name} must be a {ndim}-D array of numbers, got {array.dtype} {array.shape}"
        )
    array = array.astype(np.float64, copy=False)
    if array.size and not (array.min() >= -MAX_ABS_SCORE and array.max() <= MAX_ABS_SCORE):
        raise ValueError(
            f"{name} holds NaN, infinite or absurdly large values; margins must be finite"
        )
    return array


def _check_targets(target_margin: np.ndarray, target_points: np.ndarray) -> np.ndarray:
    y = _check_finite(target_margin, "target_margin", ndim=2)
    if y.shape != np.shape(target_points):
        raise ValueError(
            f"target_margin has shape {y.shape} but target_points has shape "
            f"{np.shape(target_points)}; they must both be [T, K]"
        )
    return y
