"""``reference``: online LiRA against per-target reference models (DDP;
:mod:`mico.train.per_target`).

Each target ``t`` has ``R`` reference models trained on its revealed training set plus a
balanced half of its challenge points, so each of its points ``k`` has exactly ``R/2`` IN and
``R/2`` OUT references whose data differ from the target's only in the challenge points.  The
target's score ``x`` on the point is compared with theirs::

    online:   sigmoid(log N(x; mean_in, std_in) - log N(x; mean_out, std_out))
    offline:  Phi((x - mean_out) / std_out)
    midpoint: Phi((x - (mean_in + mean_out) / 2) / sqrt((var_in + var_out) / 2))

The midpoint test is the 1st place's ``score - (mean_in + mean_out) / 2`` calibration: with
balanced references its centre is the mean of all K of them, half the noise of a side's mean.

Inputs (:class:`~mico.outputs.store.PhaseScores`): ``margin`` [T, K] the targets' own margins,
``reference_margin`` [T, R, K] and ``reference_in`` [T, R, K].  The candidates, chosen by
cross-validation on the train phase like every attack (:mod:`mico.attacks.selection`):

* ``transform``: ``stable_logit`` (the margin itself) or ``prob`` (see
  :func:`mico.attacks.lira.transform_margin`);
* ``variance``: ``pooled`` (per target and side, the within-point variance pooled over its K
  points: with 4 references a point has 2 scores a side, too few for a variance of its own)
  or ``per-point`` (ddof=1; a side with fewer than 2 scores falls back to the pooled one);
* ``test``: ``online``, ``offline`` or ``midpoint``;
* ``shadows``: the references alone, or together with the bundle's shadow models on the same
  point (``+shadows``; a train target never among its own): the shadows differ from the target
  in far more than the challenge points, but there are many of them (48 train models give a
  demo point about 11 OUT and 37 IN scores beside the references' K/2 each).

The statistics are :func:`mico.attacks.signals.reference_stats`: every attack's fallbacks and
std floor (:meth:`mico.attacks.stats.InOutStats.std`), so saturated probabilities compare with
the mean instead of dividing by zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from mico.attacks.base import OWN_MODELS, Attack, Config, Params
from mico.attacks.inputs import PhaseInputs
from mico.attacks.signals import (
    gaussian_cdf,
    gaussian_log_ratio,
    reference_stats,
    transform_margin,
)
from mico.errors import InputError
from mico.outputs.store import ScenarioScores

REFERENCE_TRANSFORMS = ("stable_logit", "prob")
REFERENCE_VARIANCES = ("pooled", "per-point")
REFERENCE_TESTS = ("online", "offline", "midpoint")


#: ``--references`` when not given: 8 models a target (measured in docs/ddp.md).
DEFAULT_REFERENCES = 8


def check_count(count: int) -> None:
    """``--references`` must be a positive even number (the models come in pairs)."""
    if count < 2 or count % 2:
        raise InputError(
            f"--references must be an even number of at least 2 (complementary pairs), got {count}"
        )


@dataclass(frozen=True)
class ReferenceParams(Params):
    """One variant of the reference attack (see the module docstring)."""

    transform: str = "stable_logit"
    variance: str = "pooled"
    test: str = "online"
    shadows: bool = False


def reference_attack(
    target_margin: np.ndarray,
    reference_margin: np.ndarray,
    reference_in: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    transform: str = "stable_logit",
    variance: str = "pooled",
    test: str = "online",
) -> np.ndarray:
    """Confidences [T, K] in [0, 1] from the targets' and their references' margins;
    ``valid`` [T, R, K] (default: all) leaves entries out of the statistics."""
    if reference_margin.shape != reference_in.shape or reference_margin.ndim != 3:
        raise InputError(
            f"reference margins {reference_margin.shape} and memberships "
            f"{reference_in.shape} must both be [T, R, K]"
        )
    if target_margin.shape != (reference_margin.shape[0], reference_margin.shape[2]):
        raise InputError(
            f"target margins {target_margin.shape} do not match references "
            f"{reference_margin.shape} ([T, K] and [T, R, K])"
        )
    if variance not in REFERENCE_VARIANCES or test not in REFERENCE_TESTS:
        raise InputError(f"unknown variant {variance!r}/{test!r}")
    x = transform_margin(target_margin, transform)
    stats = reference_stats(transform_margin(reference_margin, transform), reference_in, valid)
    std_kind = "pooled-within" if variance == "pooled" else "per-point"
    mean_out, std_out = np.nan_to_num(stats.mean_out), stats.std("out", std_kind)
    if test == "offline":
        return gaussian_cdf(x, mean_out, std_out)
    mean_in, std_in = np.nan_to_num(stats.mean_in), stats.std("in", std_kind)
    if test == "midpoint":
        return gaussian_cdf(x, (mean_in + mean_out) / 2, np.hypot(std_in, std_out) / np.sqrt(2))
    llr = gaussian_log_ratio(x, mean_in, std_in, mean_out, std_out)
    return expit(np.clip(llr, -700.0, 700.0))


def reference_label(params: ReferenceParams) -> str:
    """``reference prob pooled online [+shadows]``: the ``--compare`` row of a variant."""
    label = f"reference {params.transform} {params.variance} {params.test}"
    return label + (" +shadows" if params.shadows else "")


class Reference(Attack):
    """Per-target reference models (DDP): online LiRA on neighbouring datasets."""

    name = "reference"
    summary = "LiRA against per-target reference models trained on the revealed training set"
    show_each = False
    needs = frozenset({OWN_MODELS})

    def configs(self) -> list[Config]:
        return [
            Config(self.name, reference_label(params), params)
            for shadows in (False, True)
            for test in REFERENCE_TESTS
            for transform in REFERENCE_TRANSFORMS
            for variance in REFERENCE_VARIANCES
            for params in (ReferenceParams(transform, variance, test, shadows),)
        ]

    def prepare(self, inputs: PhaseInputs) -> object:
        """The references and, for ``+shadows``, the shadows' scores on each target's points
        appended (a train target's own shadow row marked invalid): [T, R + S, K] each."""
        if inputs.reference_margin is None or inputs.reference_in is None:
            raise InputError("no per-target reference models: the reference attack cannot run")
        shadow = np.moveaxis(inputs.shadow_margin[:, inputs.points], 0, 1)
        shadow_in = np.moveaxis(inputs.shadow_in[:, inputs.points], 0, 1)
        valid = np.ones(shadow.shape, dtype=bool)
        own = np.flatnonzero(inputs.shadow >= 0)
        valid[own, inputs.shadow[own]] = False
        margin = np.concatenate([inputs.reference_margin, shadow], axis=1)
        inside = np.concatenate([inputs.reference_in, shadow_in], axis=1)
        valid = np.concatenate([np.ones(inputs.reference_in.shape, dtype=bool), valid], axis=1)
        return margin, inside, valid

    def predict(self, inputs: PhaseInputs, params: Params, prepared: object) -> np.ndarray:
        assert isinstance(params, ReferenceParams)
        assert inputs.reference_margin is not None and inputs.reference_in is not None
        margin, inside, valid = prepared if params.shadows else (None, None, None)
        return reference_attack(
            inputs.margin,
            inputs.reference_margin if margin is None else margin,
            inputs.reference_in if inside is None else inside,
            valid=valid,
            transform=params.transform,
            variance=params.variance,
            test=params.test,
        )

    def missing(self, scores: ScenarioScores, challenge: str) -> str | None:
        if any(data.reference_margin is None for data in scores.phases.values()):
            return (
                "no per-target reference models: they need bundles that reveal every target's "
                "seed_training (ddp); add --references K (trains K models a target)"
            )
        return None
