"""The signals every attack composes: each formula lives here once.

Shapes as in :mod:`mico.attacks.stats` (``S`` shadows, ``P`` points, ``T`` targets, ``K``
points per target, ``Q`` population records). What is here, and who reads it:

* **score transforms** of the true-label margin z (:func:`transform_margin`): LiRA's three,
  the log-probability (-loss) of the hardness calibration and RMIA, and RMIA's softened
  probability ``sigmoid(z / tau)`` (pass ``z / tau``);
* **IN/OUT statistics** with one fallback chain and one std floor (:func:`inout_stats`,
  :class:`InOutStats`, :func:`std_floor`, implemented in :mod:`mico.attacks.stats`), also for
  per-target reference models (:func:`reference_stats`), and RMIA's trimmed side means
  (:func:`trimmed_side_means`);
* **Gaussian tests**: the offline ``Phi((y - mean_out) / std_out)`` (:func:`gaussian_cdf`) and
  the log-likelihood ratio of the IN and OUT Gaussians (:func:`gaussian_log_ratio`); the
  Student-t ratio of ``--variance bayes`` is :func:`mico.attacks.bayes.bayes_log_ratio`;
* **Pr(z)**, the shadows' mean probability of each population record with the target's own
  row left out, as the log ratio ``log(Pr(z | target) / Pr(z))`` (:func:`population_log_ratio`).

A train target's own shadow row never enters its statistics (``target_shadow``, -1: none).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, log_expit, ndtr

from mico.attacks.stats import (
    STD_FLOOR_REL,
    VARIANCES,
    Z_CAP,
    InOutStats,
    inout_stats,
    standardise,
    std_floor,
)
from mico.errors import InputError

__all__ = [
    "STD_FLOOR_REL",
    "TRANSFORMS",
    "VARIANCES",
    "Z_CAP",
    "InOutStats",
    "gaussian_cdf",
    "gaussian_log_ratio",
    "inout_stats",
    "population_log_ratio",
    "reference_stats",
    "standardise",
    "std_floor",
    "transform_margin",
    "trimmed_side_means",
]

#: Every score transform of a margin (:func:`transform_margin`).
TRANSFORMS: tuple[str, ...] = ("prob", "logit", "stable_logit", "log_prob")

_P_LOW = float(np.finfo(np.float64).tiny)
_P_HIGH = 1.0 - 2.0**-53
_TINY = float(np.finfo(np.float64).tiny)


def transform_margin(margin: np.ndarray, transform: str) -> np.ndarray:
    """Turn true-label logit margins z (any shape) into scores (same shape, float64).

    * ``"prob"``: softmax probability of the true label, ``p = sigmoid(z)``, computed
      stably (no overflow for large |z|).
    * ``"logit"`` (the original ``--logit_scaling``): ``log(p / (1 - p))`` computed naively
      from the float64 probability, as the original did. p is clipped into
      ``[finfo.tiny, 1 - 2**-53]`` so the result is finite, which means it saturates at
      ``log(2**53 - 1) ~= 36.74`` for z above ~36.7 (p rounds to 1) and at about -708.4
      for z below ~-708 (p underflows), and loses precision as z approaches 36.7.
    * ``"stable_logit"`` (``--stable_logit_scaling``): ``log p_y - log sum_{j != y} p_j``,
      which is z itself; exact, never saturates.
    * ``"log_prob"``: ``log p`` = -cross-entropy loss, exact in log space.
    """
    z = np.asarray(margin, dtype=np.float64)
    if transform == "prob":
        return expit(z)
    if transform == "logit":
        p = np.clip(expit(z), _P_LOW, _P_HIGH)
        return np.log(p / (1.0 - p))
    if transform == "stable_logit":
        return z.copy()
    if transform == "log_prob":
        return log_expit(z)
    raise InputError(f"unknown transform {transform!r}; choose one of {', '.join(TRANSFORMS)}")


def gaussian_cdf(y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``Phi((y - mean) / std)``: the probability that a score of the Gaussian lies below
    ``y`` (LiRA's offline test); distances capped as :func:`standardise` caps them."""
    return ndtr(standardise(y, mean, std))


def gaussian_log_ratio(
    y: np.ndarray,
    mean_in: np.ndarray,
    std_in: np.ndarray,
    mean_out: np.ndarray,
    std_out: np.ndarray,
) -> np.ndarray:
    """``log N(y; mean_in, std_in) - log N(y; mean_out, std_out)`` (LiRA's online test), in
    log space so tiny densities never underflow to 0/0; NaN means count as 0."""
    z_out = standardise(y, mean_out, std_out)
    z_in = standardise(y, mean_in, std_in)
    return 0.5 * (z_out * z_out - z_in * z_in) + np.log(std_out) - np.log(std_in)


def reference_stats(
    reference_score: np.ndarray, reference_in: np.ndarray, valid: np.ndarray | None = None
) -> InOutStats:
    """IN/OUT statistics of per-target reference models: ``reference_score`` and
    ``reference_in`` ``[T, R, K]`` (target t's R models on its K points), ``valid`` (default
    all) leaving entries out of both sides. The same statistics, fallbacks and floor as
    :func:`inout_stats`, each target's K points its own columns."""
    scores = np.asarray(reference_score, dtype=np.float64)
    n_targets, n_refs, k = scores.shape
    columns = np.arange(n_targets * k, dtype=np.int64).reshape(n_targets, k)

    def flat(values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(values, 1, 0).reshape(n_refs, n_targets * k))

    keep = None if valid is None else flat(np.asarray(valid, dtype=bool))
    return inout_stats(
        flat(scores), flat(np.asarray(reference_in, dtype=bool)), columns, valid=keep
    )


def trimmed_side_means(
    shadow_score: np.ndarray,
    shadow_in: np.ndarray,
    target_points: np.ndarray,
    target_shadow: np.ndarray | None = None,
    trim: float = 0.2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Trimmed IN and OUT means of ``shadow_score`` ``[S, P]`` at each target's points, cutting
    ``int(trim * n)`` values from each end as ``scipy.stats.trim_mean(..., trim)`` does.

    Returns ``(mean_in, n_in, mean_out, n_out)``, each ``[T, K]``; a mean is NaN where its
    side has no shadow. The target's own row (``target_shadow``, -1 = none) is left out.
    Vectorised over targets: one sort of an ``[S, T, K]`` gather, NaN (not on the side)
    sorting last, then a prefix-sum difference over the kept middle of each column.
    """
    values = shadow_score[:, target_points]
    is_in = shadow_in[:, target_points]
    keep = np.ones(values.shape[:2], dtype=bool)
    if target_shadow is not None:
        rows = np.asarray(target_shadow)
        own = rows >= 0
        keep[rows[own], np.nonzero(own)[0]] = False
    results = []
    for side in (is_in, ~is_in):
        on_side = side & keep[:, :, None]
        ordered = np.sort(np.where(on_side, values, np.nan), axis=0)
        n = on_side.sum(axis=0)
        cut = np.floor(trim * n).astype(np.int64)
        prefix = np.concatenate(
            [np.zeros((1, *n.shape)), np.cumsum(np.nan_to_num(ordered), axis=0)], axis=0
        )
        upper = np.take_along_axis(prefix, (n - cut)[None], axis=0)[0]
        lower = np.take_along_axis(prefix, cut[None], axis=0)[0]
        kept = n - 2 * cut
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(kept > 0, (upper - lower) / np.maximum(kept, 1), np.nan)
        results += [mean, n]
    return results[0], results[1], results[2], results[3]


def population_log_ratio(
    shadow_population: np.ndarray,
    target_population: np.ndarray,
    target_shadow: np.ndarray | None = None,
    *,
    tau: float = 1.0,
) -> np.ndarray:
    """``log(Pr(z | target) / Pr(z))`` ``[T, Q]`` for every population record z, with
    ``Pr(z | model) = sigmoid(margin / tau)`` and ``Pr(z)`` the mean over every shadow but
    the target itself (``shadow_population [S, Q]``, ``target_population [T, Q]`` margins).

    The population records are non-challenge records, IN for a shadow exactly as often as for
    a target (each is in a model's training set with probability (len_training - m) / (N -
    2m)), so the plain mean estimates ``Pr(z) = E_theta Pr(z | theta)`` without the
    rebalancing a challenge point needs. A target with no other shadow gets 0 (no evidence).
    """
    n_targets, n_pop = np.shape(target_population)
    columns = np.broadcast_to(np.arange(n_pop, dtype=np.int64), (n_targets, n_pop))
    prob = transform_margin(np.asarray(shadow_population) / tau, "prob")
    pz = inout_stats(prob, np.ones(prob.shape, dtype=bool), columns, target_shadow)
    log_pr_z = np.log(np.maximum(np.nan_to_num(pz.mean_in), _TINY))
    log_p = transform_margin(np.asarray(target_population) / tau, "log_prob")
    return np.where(pz.n_in >= 1, log_p - log_pr_z, 0.0)
