"""LiRA (Carlini et al. 2022), the 2nd place's attack: arrays in and arrays out, plus its
registry entry.

Shapes as in :mod:`mico.attacks.stats`, with the margins the attack scores::

    shadow_margin [S, P]  float64   true-label logit margin z of shadow s on point p
    target_margin [T, K]  float64   margin of target t on its own k-th challenge point

The margin is ``z = log p_y - log(1 - p_y) = logit_y - logsumexp_{j != y} logit_j``.
Every score transform is a function of z, so one stored array serves all of them.

Choices that differ from the original 2nd-place code, and why:

* Variances use ddof=1 and leave the target out (:mod:`mico.attacks.stats`).
* ``variance="pooled"`` (``--global_variance``) pools as the original and Carlini et al.'s
  ``fix_variance`` do: one std per target, of all OUT (IN) scores of its K points together,
  each point keeping its own mean; with the fixes (correct OUT sets, target left out, float64
  margins, ddof=1).
* ``variance="pooled-within"`` (``--variance pooled-within``) pools the within-point variance
  over the target's K points instead: ``sum_k sum_i (x_ki - mean_k)**2 / sum_k (n_k - 1)``.
* ``variance="bayes"`` (``--variance bayes``, issue 23) replaces each side's Gaussian by a
  normal-inverse-gamma posterior predictive whose prior is fitted by empirical Bayes over the
  scenario's points (:mod:`mico.attacks.bayes`): between per-point and pooled, and most useful
  where a point has few OUT shadows.
* The online attack returns ``sigmoid(log N(x; in) - log N(x; out))``, the posterior
  membership probability under a 1/2 prior, so it lies in [0, 1] (the original wrote raw
  likelihood ratios) and works with every score transform (the original refused).

Fallbacks, so that the output is always finite and in [0, 1] (std fallbacks and floor: see
:meth:`mico.attacks.stats.InOutStats.std`):

* offline, 0 OUT models: confidence 0.5 (no evidence either way).
* online, 0 IN models: the offline confidence; 0 OUT models: 0.5, as offline (a one-sided
  IN test would put those points on a different scale from the rest).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from mico.attacks.base import Attack, CliParam, Config, Params
from mico.attacks.bayes import (
    BAYES_PREDICTIVE,
    BAYES_PRIOR,
    BayesSides,
    bayes_confidence,
    bayes_sides,
)
from mico.attacks.inputs import PhaseInputs
from mico.attacks.signals import (
    VARIANCES,
    InOutStats,
    gaussian_cdf,
    gaussian_log_ratio,
    inout_stats,
    transform_margin,
)
from mico.attacks.stats import check_scores
from mico.errors import InputError

#: LiRA's score transforms (the original's flags; :func:`mico.attacks.signals.transform_margin`).
TRANSFORMS = ("prob", "logit", "stable_logit")

#: LiRA's variances: the Gaussian ones of :data:`mico.attacks.stats.VARIANCES`, and ``bayes``.
LIRA_VARIANCES: tuple[str, ...] = (*VARIANCES, "bayes")


def lira(
    shadow_margin: np.ndarray,
    shadow_in: np.ndarray,
    target_margin: np.ndarray,
    target_points: np.ndarray,
    target_shadow: np.ndarray | None = None,
    *,
    transform: str = "prob",
    variance: str = "per-point",
    online: bool = False,
    sides: BayesSides | None = None,
) -> np.ndarray:
    """Membership confidence ``[T, K]`` float64 in [0, 1] of each target's challenge points.

    Args:
        shadow_margin: ``[S, P]`` margin of shadow model s on unique point p.
        shadow_in: ``[S, P]`` bool, whether shadow s trained on point p.
        target_margin: ``[T, K]`` each target's margin on its own K challenge points.
        target_points: ``[T, K]`` integer column of ``shadow_*`` for each of those points.
        target_shadow: ``[T]`` integer row of ``shadow_*`` that is the target itself (the
            ``train`` phase), -1 where it is none; None means no target is a shadow.
        transform: one of :data:`TRANSFORMS`, see
            :func:`mico.attacks.signals.transform_margin`.
        variance: per-point or pooled std, one of :data:`mico.attacks.stats.VARIANCES`, or
            ``bayes`` (:func:`mico.attacks.bayes.bayes_confidence` with its default prior and
            predictive).
        online: IN vs OUT likelihood ratio instead of the OUT-only (offline) test.
        sides: with ``bayes``, the posteriors of these transformed scores if already
            computed (:func:`bayes_lira_sides`), so offline and online share one prior fit.

    Offline: ``Phi((x - mean_out) / std_out)``, the probability that an OUT model scores
    below the target. Online: ``sigmoid(log N(x; mean_in, std_in) - log N(x; mean_out,
    std_out))``, in log space so tiny densities do not underflow to 0/0. Fallbacks for
    points with few models are in the module docstring.
    """
    x = check_scores(np.asarray(target_margin), "target_margin")
    tp = np.asarray(target_points)
    if x.shape != tp.shape:
        raise InputError(
            f"target_margin has shape {x.shape} but target_points has shape {tp.shape}; "
            "they must both be [T, K]"
        )
    scores = transform_margin(check_scores(np.asarray(shadow_margin), "shadow_margin"), transform)
    y = transform_margin(x, transform)
    if variance == "bayes":
        if sides is None:
            sides = bayes_sides(scores, shadow_in, tp, target_shadow, family=BAYES_PRIOR)
        return bayes_confidence(sides, y, kind=BAYES_PREDICTIVE, online=online)
    return lira_test(inout_stats(scores, shadow_in, tp, target_shadow), y, variance, online)


def lira_test(stats: InOutStats, y: np.ndarray, variance: str, online: bool) -> np.ndarray:
    """LiRA's Gaussian test of the targets' transformed scores ``y`` ``[T, K]`` against
    ``stats`` of the shadows' (see :func:`lira`; ``variance`` one of
    :data:`mico.attacks.stats.VARIANCES`)."""
    std_out = stats.std("out", variance)
    offline = np.where(stats.n_out > 0, gaussian_cdf(y, stats.mean_out, std_out), 0.5)
    if not online:
        return offline

    std_in = stats.std("in", variance)
    log_ratio = gaussian_log_ratio(y, stats.mean_in, std_in, stats.mean_out, std_out)
    online_conf = np.where(stats.n_in > 0, expit(log_ratio), offline)
    return np.where(stats.n_out > 0, online_conf, 0.5)


@dataclass(frozen=True)
class LiraParams(Params):
    """The original's flags: score ``transform`` (``--logit_scaling``,
    ``--stable_logit_scaling``), ``variance`` (``--global_variance``), ``--online_attack``."""

    transform: str = "prob"
    variance: str = "per-point"
    online: bool = False


#: Short names of the pooled variances in labels (per-point has none).
VARIANCE_TAGS: dict[str, str] = {"pooled": "gv", "pooled-within": "gv-within", "bayes": "bayes"}


def lira_label(params: LiraParams) -> str:
    """``lira <online|offline> <transform> [gv|gv-within]``, e.g. ``lira offline prob gv``."""
    parts = ["lira", "online" if params.online else "offline", params.transform]
    tag = VARIANCE_TAGS.get(params.variance)
    return " ".join([*parts, tag] if tag else parts)


class Lira(Attack):
    """LiRA with the original's flags; each combination is a configuration of its own."""

    name = "lira"
    summary = "the 2nd place's LiRA (flags below)"
    show_each = True
    #: The original script's flags (``--original`` picks the published code path, a variant
    #: of its own: :class:`mico.attacks.original.OriginalLira`).
    cli_title = "LiRA options (the original flags; --attack lira only)"
    cli_params = (
        CliParam(
            "--global_variance",
            (
                ("action", "store_true"),
                (
                    "help",
                    "one standard deviation per target, of all OUT (IN) scores of its points "
                    "together (the original's and Carlini et al.'s pooling; = --variance pooled)",
                ),
            ),
            exclusive="variance",
        ),
        CliParam(
            "--variance",
            (
                ("choices", LIRA_VARIANCES),
                ("default", None),
                (
                    "help",
                    "per-point (default), pooled (= --global_variance), pooled-within (one std "
                    "per target: the within-point variance pooled over its points) or bayes (a "
                    "normal-inverse-gamma posterior per point, its prior fitted over the "
                    "scenario's points)",
                ),
            ),
            exclusive="variance",
        ),
        CliParam(
            "--logit_scaling",
            (("action", "store_true"), ("help", "score = log(p / (1 - p)), computed from p")),
            exclusive="scaling",
        ),
        CliParam(
            "--stable_logit_scaling",
            (
                ("action", "store_true"),
                ("help", "score = log p_y - log sum_{j!=y} p_j, exact in log space"),
            ),
            exclusive="scaling",
        ),
        CliParam(
            "--online_attack",
            (
                ("action", "store_true"),
                (
                    "help",
                    "likelihood ratio of IN and OUT Gaussians instead of the OUT-only test (with "
                    "--attack rmia: online RMIA, the same as --attack rmia_online)",
                ),
            ),
        ),
    )

    def from_cli(self, flags: Mapping[str, object]) -> tuple[str, Params | None]:
        """Always a fixed configuration: the original's defaults where no flag is set."""
        transform = "prob"
        if flags.get("logit_scaling"):
            transform = "logit"
        elif flags.get("stable_logit_scaling"):
            transform = "stable_logit"
        variance = (
            "pooled" if flags.get("global_variance") else flags.get("variance") or "per-point"
        )
        return self.name, LiraParams(transform, str(variance), bool(flags.get("online_attack")))

    def configs(self) -> list[Config]:
        """Every flag combination of the original ``run_lira_mia.py``, offline ones first."""
        return [
            self._config(LiraParams(transform, variance, online))
            for online in (False, True)
            for transform in TRANSFORMS
            for variance in LIRA_VARIANCES
        ]

    def _config(self, params: LiraParams) -> Config:
        return Config(self.name, lira_label(params), params)

    def predict(self, inputs: PhaseInputs, params: Params, prepared: object) -> np.ndarray:
        assert isinstance(params, LiraParams)
        y = transform_margin(inputs.margin, params.transform)
        if params.variance == "bayes":
            sides = bayes_lira_sides(inputs, params.transform)
            return bayes_confidence(sides, y, kind=BAYES_PREDICTIVE, online=params.online)
        return lira_test(inputs.stats(params.transform), y, params.variance, params.online)


def bayes_lira_sides(inputs: PhaseInputs, transform: str) -> BayesSides:
    """The ``bayes`` posteriors of the phase's targets under one score ``transform``, fitted
    once per phase (shared by offline and online LiRA and the combiner)."""
    return inputs.shared(
        ("bayes", transform),
        lambda: bayes_sides(
            transform_margin(inputs.shadow_margin, transform),
            inputs.shadow_in,
            inputs.points,
            inputs.target_shadow,
            family=BAYES_PRIOR,
        ),
    )
