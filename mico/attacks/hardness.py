"""The 1st-place MICO attack: difficulty calibration (Watson et al., ICLR 2022).

A per-point score of the target (higher = member) minus a per-point reference computed from
the shadows (the target's own row left out), then min-max normalised over the phase. See
:data:`HARDNESS_SCORES` and :data:`HARDNESS_VARIANTS`; shapes as in :mod:`mico.attacks.stats`,
with ``shadow_margin [S, P]`` and ``target_margin [T, K]`` the true-label logit margins z,
``p = sigmoid(z)`` the softmax probability of the true label and ``-loss = log p``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mico.attacks.base import Attack, Config, Params
from mico.attacks.inputs import PhaseInputs
from mico.attacks.signals import InOutStats, inout_stats, standardise, transform_margin
from mico.attacks.stats import check_finite, check_targets
from mico.errors import InputError

#: Per-point scores the hardness attack calibrates, each oriented so that higher = member:
#: ``loss`` is -cross-entropy = log p, ``prob`` is p, ``margin`` is z (the logit-scaled
#: confidence, LiRA's ``stable_logit``).
#: Each is a transform of :func:`mico.attacks.signals.transform_margin`.
_SCORES = {"loss": "log_prob", "prob": "prob", "margin": "stable_logit"}
HARDNESS_SCORES: tuple[str, ...] = tuple(_SCORES)

#: Calibrations of the 1st-place solution: ``in``: score - mean of the IN shadows;
#: ``mid``: score - (IN mean + OUT mean) / 2; ``std``: (score - mean) / std of all shadows.
HARDNESS_VARIANTS: tuple[str, ...] = ("in", "mid", "std")


def hardness_score(margin: np.ndarray, score: str) -> np.ndarray:
    """The per-point score of :data:`HARDNESS_SCORES` (same shape as ``margin``)."""
    if score not in _SCORES:
        raise InputError(f"unknown score {score!r}; choose one of {', '.join(HARDNESS_SCORES)}")
    return transform_margin(margin, _SCORES[score])


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
      :meth:`mico.attacks.stats.InOutStats.std` (the target's pooled std where a point has < 2).

    Where a side the variant needs is empty, the reference is ``mean(ALL)``; where no shadow
    is left at all, the calibrated score is 0 (the point carries no evidence).
    """
    _check_choice(variant, HARDNESS_VARIANTS, "variant")
    y = hardness_score(check_targets(target_margin, target_points), score)
    x = hardness_score(check_finite(shadow_margin, "shadow_margin", ndim=2), score)
    everyone = inout_stats(x, np.ones(x.shape, dtype=bool), target_points, target_shadow)
    stats = inout_stats(x, shadow_in, target_points, target_shadow)
    return calibrate(y, stats, everyone, variant)


def calibrate(y: np.ndarray, stats: InOutStats, everyone: InOutStats, variant: str) -> np.ndarray:
    """The calibration ``variant`` of :func:`hardness_calibrated` of the targets' scores ``y``
    ``[T, K]``, from the shadows' IN/OUT ``stats`` and their all-shadows statistics
    ``everyone`` (its ``*_in`` fields) of the same score."""
    _check_choice(variant, HARDNESS_VARIANTS, "variant")
    n_all, mean_all = everyone.n_in, everyone.mean_in
    if variant == "std":
        return np.where(n_all >= 1, standardise(y, mean_all, everyone.std("in")), 0.0)
    if variant == "in":
        have = stats.n_in >= 1
        reference = stats.mean_in
    else:
        have = (stats.n_in >= 1) & (stats.n_out >= 1)
        reference = 0.5 * (stats.mean_in + stats.mean_out)
    reference = np.where(have, reference, np.where(n_all >= 1, mean_all, y))
    return y - reference


def shared_calibrated(inputs: PhaseInputs, score: str, variant: str) -> np.ndarray:
    """:func:`calibrate` on a phase's inputs, from its shared statistics (also the
    combiner's hardness features)."""
    transform = _SCORES[score]
    y = transform_margin(inputs.margin, transform)
    return calibrate(y, inputs.stats(transform), inputs.stats(transform, everyone=True), variant)


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


def _check_choice(value: str, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise InputError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


@dataclass(frozen=True)
class HardnessParams(Params):
    """Which score of :data:`HARDNESS_SCORES` and calibration of :data:`HARDNESS_VARIANTS`."""

    score: str = "loss"
    variant: str = "mid"


class Hardness(Attack):
    """The 1st place's calibration; the score x variant is chosen by CV on the train phase."""

    name = "hardness"
    summary = "the 1st place's per-point calibration"

    def configs(self) -> list[Config]:
        """Score x calibration variants of the 1st-place attack."""
        return [
            Config(self.name, f"hardness {s} {v}", HardnessParams(s, v))
            for s in HARDNESS_SCORES
            for v in HARDNESS_VARIANTS
        ]

    def predict(self, inputs: PhaseInputs, params: Params, prepared: object) -> np.ndarray:
        assert isinstance(params, HardnessParams)
        _check_choice(params.score, HARDNESS_SCORES, "score")
        return minmax(shared_calibrated(inputs, params.score, params.variant))
