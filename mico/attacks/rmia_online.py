"""Online RMIA: the relative attack of Zarifzadeh, Liu and Shokri, "Low-Cost High-Power
Membership Inference Attacks" (ICML 2024), with IN *and* OUT reference models.

MICO's train models give each challenge point IN shadows as well as OUT ones (on Purchase-100
about three quarters of them are IN), so ``Pr(x)`` need not be extrapolated from OUT models
with the offline ``a`` of :mod:`mico.attacks.rmia`: it is measured. Shapes as there::

    shadow_margin     [S, P]  shadows' margins on the challenge points
    target_margin     [T, K]  each target's margin on its own challenge points
    shadow_population [S, Q]  shadows' margins on Q population (non-challenge) records
    target_population [T, Q]  targets' margins on them

With ``Pr(x | theta) = sigmoid(z / tau)`` for margin z (``tau = 1``: the softmax probability
of the true label) and the target's own shadow row always left out::

    Pr(x)    = (trim_mean IN Pr(x | shadow) + trim_mean OUT Pr(x | shadow)) / 2
    Pr(z)    = mean over all shadows of Pr(z | shadow)
    LR(x, z) = (Pr(x | target) / Pr(x)) / (Pr(z | target) / Pr(z))
    score(x) = fraction of the Q population records z with LR(x, z) > gamma

Choices, and why:

* ``Pr(x)`` is the average of the IN and the OUT means, not the mean of all shadows: the
  paper's reference models are half IN, half OUT (a 1/2 membership prior, as a challenge
  point's), while MICO's train models are IN for ~76% of a point's shadows; the plain mean
  would lean towards IN.
* Each side's mean is trimmed, cutting ``int(0.2 * n)`` values from each end as
  ``scipy.stats.trim_mean(..., 0.2)``; the 0.2 cut follows the paper's research code (as
  reported in this project's issue 15), and makes Pr(x) robust to a shadow that failed to
  fit x or fitted it unusually well.
* ``Pr(z)`` is the plain mean over all shadows (as in :mod:`mico.attacks.rmia`): population
  records are IN for a shadow exactly as often as for a target, so no rebalancing is needed.
* ``tau`` softens the probability. The paper's other signals (soft margin, Taylor softmax)
  need every logit, which ``scores.npz`` does not hold; ``sigmoid(z / tau)`` is the
  temperature-scaled two-class form of the softmax that the stored margin allows.
* ``tau`` and ``gamma`` are chosen by the k-fold CV of ``--compare``
  (:mod:`mico.attacks.selection`).

Fallbacks: a point with shadows on one side only uses that side's mean for ``Pr(x)``; a point
with no shadow at all gets 0.5 (no evidence either way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mico.attacks.base import POPULATION, Attack, Config, Params
from mico.attacks.inputs import PhaseInputs
from mico.attacks.rmia import (
    MIN_USEFUL_POPULATION,
    ONLINE,
    RECOMMENDED_POPULATION,
    fraction_below,
    has_population,
)
from mico.attacks.signals import population_log_ratio, transform_margin, trimmed_side_means
from mico.attacks.stats import check_finite, check_targets
from mico.errors import InputError
from mico.outputs.store import ScenarioScores

#: Fraction cut from each end of a side's shadow values before averaging (research code).
TRIM = 0.2

#: Candidate temperatures of the signal, chosen by CV with gamma = 1. On the purchase100 demo
#: a softer signal ranks better (inf train TPR@10%: 0.660 at tau 1, 0.698 at 4, 0.703 at 16).
RMIA_ONLINE_TAU: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)

#: Thresholds besides gamma = 1, tried with tau = 1 only: a softer signal's ratios all lie
#: near 1, so any fixed gamma > 1 (or < 1) there scores (almost) every point 0 (or 1).
RMIA_ONLINE_GAMMA: tuple[float, ...] = (2.0, 4.0)

_TINY = float(np.finfo(np.float64).tiny)


@dataclass(frozen=True)
class OnlineInputs:
    """Per temperature: ``log_ratio_x`` ``[T, K]`` = log(Pr(x | target) / Pr(x)),
    ``log_ratio_z`` ``[T, Q]`` = log(Pr(z | target) / Pr(z)) and ``has_shadows`` ``[T, K]``."""

    log_ratio_x: np.ndarray
    log_ratio_z: np.ndarray
    has_shadows: np.ndarray


def online_inputs(
    shadow_margin: np.ndarray,
    shadow_in: np.ndarray,
    target_margin: np.ndarray,
    target_points: np.ndarray,
    shadow_population: np.ndarray,
    target_population: np.ndarray,
    target_shadow: np.ndarray | None = None,
    *,
    tau: float = 1.0,
) -> OnlineInputs:
    """The log ratios of :func:`rmia_online` for one temperature (see the module docstring)."""
    if not tau > 0.0 or not np.isfinite(tau):
        raise InputError(f"online RMIA's temperature must be a positive number, got {tau}")
    y = check_targets(target_margin, target_points)
    sm = check_finite(shadow_margin, "shadow_margin", ndim=2)
    sp = check_finite(shadow_population, "shadow_population", ndim=2)
    tpop = check_finite(target_population, "target_population", ndim=2)
    n_shadows, n_targets = sm.shape[0], y.shape[0]
    if sp.shape[0] != n_shadows or tpop.shape != (n_targets, sp.shape[1]) or sp.shape[1] == 0:
        raise InputError(
            f"population margins have shapes {sp.shape} (shadows) and {tpop.shape} (targets); "
            f"expected [{n_shadows}, Q] and [{n_targets}, Q] with Q >= 1"
        )
    mask = np.asarray(shadow_in)
    if mask.dtype != np.bool_ or mask.shape != sm.shape:
        raise InputError(f"shadow_in must be a boolean [S, P] array like shadow_margin {sm.shape}")
    if target_shadow is not None and n_shadows < 2 and np.any(np.asarray(target_shadow) >= 0):
        raise InputError("online RMIA needs a shadow besides the target itself")
    mean_in, n_in, mean_out, n_out = trimmed_side_means(
        transform_margin(sm / tau, "prob"), mask, np.asarray(target_points), target_shadow, TRIM
    )
    pr_x = np.where(
        (n_in > 0) & (n_out > 0),
        0.5 * (np.nan_to_num(mean_in) + np.nan_to_num(mean_out)),
        np.where(n_in > 0, mean_in, mean_out),
    )
    log_pr_x = np.log(np.maximum(np.nan_to_num(pr_x), _TINY))
    log_ratio_x = transform_margin(y / tau, "log_prob") - log_pr_x
    log_ratio_z = population_log_ratio(sp, tpop, target_shadow, tau=tau)
    return OnlineInputs(log_ratio_x, log_ratio_z, (n_in + n_out) > 0)


def online_from_inputs(inputs: OnlineInputs, gamma: float = 1.0) -> np.ndarray:
    """Online RMIA confidences ``[T, K]`` from prepared inputs for one ``gamma``."""
    if not gamma > 0.0 or not np.isfinite(gamma):
        raise InputError(f"RMIA's gamma must be a positive number, got {gamma}")
    fraction = fraction_below(inputs.log_ratio_x - np.log(gamma), inputs.log_ratio_z)
    return np.where(inputs.has_shadows, fraction, 0.5)


def rmia_online(
    shadow_margin: np.ndarray,
    shadow_in: np.ndarray,
    target_margin: np.ndarray,
    target_points: np.ndarray,
    shadow_population: np.ndarray,
    target_population: np.ndarray,
    target_shadow: np.ndarray | None = None,
    *,
    tau: float = 1.0,
    gamma: float = 1.0,
) -> np.ndarray:
    """Online RMIA membership confidence ``[T, K]`` in [0, 1] (see the module docstring)."""
    inputs = online_inputs(
        shadow_margin,
        shadow_in,
        target_margin,
        target_points,
        shadow_population,
        target_population,
        target_shadow,
        tau=tau,
    )
    return online_from_inputs(inputs, gamma)


def shared_online_inputs(inputs: PhaseInputs, tau: float) -> OnlineInputs:
    """:func:`online_inputs` of a phase for one temperature, computed once per phase and
    shared (``--compare``'s combiner reads the ``tau = 1`` ones)."""
    arrays = inputs.with_population("online RMIA")
    return inputs.shared(("rmia_online", tau), lambda: online_inputs(*arrays, tau=tau))


@dataclass(frozen=True)
class RmiaOnlineParams(Params):
    """The signal's temperature ``tau`` and the likelihood-ratio threshold ``gamma``."""

    tau: float = 1.0
    gamma: float = 1.0


class RmiaOnline(Attack):
    """Online RMIA; ``tau`` and ``gamma`` are chosen by CV on the train phase."""

    name = ONLINE
    needs = frozenset({POPULATION})
    summary = (
        "online RMIA: Pr(x) from IN and OUT shadows, trimmed means (needs save_preds.py "
        f"--population N, e.g. {RECOMMENDED_POPULATION})"
    )

    def configs(self) -> list[Config]:
        """Every ``tau`` with gamma = 1, then tau = 1 with the other gammas; the paper's plain
        probability with gamma = 1 first."""
        grid = [(t, 1.0) for t in RMIA_ONLINE_TAU] + [(1.0, g) for g in RMIA_ONLINE_GAMMA]
        return [
            Config(self.name, f"rmia online tau={t:g} gamma={g:g}", RmiaOnlineParams(t, g))
            for t, g in grid
        ]

    def prepare(self, inputs: PhaseInputs) -> dict[float, OnlineInputs]:
        """The log ratios of every temperature, computed once per phase (and shared)."""
        return {tau: shared_online_inputs(inputs, tau) for tau in RMIA_ONLINE_TAU}

    def predict(self, inputs: PhaseInputs, params: Params, prepared: object) -> np.ndarray:
        assert isinstance(params, RmiaOnlineParams) and isinstance(prepared, dict)
        return online_from_inputs(prepared[params.tau], params.gamma)

    def missing(self, scores: ScenarioScores, challenge: str) -> str | None:
        if has_population(scores):
            return None
        return (
            f"no population outputs, which --attack {self.name} needs; run "
            f"`python save_preds.py --challenge {challenge} --population "
            f"{RECOMMENDED_POPULATION}` (only the population records are evaluated)"
        )

    def warning(self, scores: ScenarioScores) -> str | None:
        """The score, a fraction of Q records, can take only Q + 1 values."""
        q = len(scores.population)
        if 0 < q < MIN_USEFUL_POPULATION:
            return f"only {q} population records: online RMIA's score takes {q + 1} values"
        return None
