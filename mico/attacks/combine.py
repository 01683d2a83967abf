"""Signals combined: several per-point membership signals of the stored outputs turned into one.

Every signal is computed from ``scores.npz`` with each target's own shadow row left out, and
oriented so that higher means member (shapes as in :mod:`mico.attacks.stats`):

=================  =========================================================================
``llr_logit``      online LiRA log-likelihood ratio of the margin z (``stable_logit``)
``llr_prob``       online LiRA log-likelihood ratio of the probability sigmoid(z)
``z_out``          offline LiRA: (z - mean OUT) / std OUT
``hard_margin``    1st place's calibration: (z - mean ALL) / std ALL
``hard_loss``      1st place's calibration: log p - (mean IN + mean OUT) / 2 of log p
``rmia_online``    online RMIA's fraction (tau = 1, gamma = 1), as a log-odds, where the
                   population outputs are stored (:mod:`mico.attacks.rmia_online`)
=================  =========================================================================

With ``--variance bayes`` (issue 23; the ``bayes`` variants below) the two LiRA log-likelihood
ratios use the normal-inverse-gamma posterior predictives of :mod:`mico.attacks.bayes` instead
of the per-point Gaussians (:func:`mico.attacks.bayes.bayes_log_ratio`, the same posteriors
``lira ... bayes`` fits, shared with it); the other signals are unchanged.

Two combiners, each with either variance (configurations of one attack, chosen by CV as
``--compare`` does):

* ``ms-lira``: the sum of the two online LiRA log-likelihood ratios, as multi-signal LiRA
  sums per-signal ratios. It assumes the signals independent; both are functions of the same
  margin, so they are not, and the sum reweights the two Gaussian fits rather than adding
  evidence.
* ``logreg``: a logistic regression over all signals above (each through ``arcsinh`` so that
  a few enormous ratios do not dominate, then standardised), fitted per scenario on the train
  phase's ground truth. Leave-one-target-out: a train target's confidences come from a model
  fitted on the other train targets only, so a target never trains its own combiner;
  ``dev``/``final`` use the model fitted on every train target.

The logistic regression's outputs are log-odds (mapped into [0, 1] by arcsinh and a min-max
over the phase, monotone) on a common scale (each fit estimates the
same membership probability), so pooling the leave-one-out fits' outputs is meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import logit

from mico.attacks.base import Attack, Config, Params
from mico.attacks.bayes import BAYES_PREDICTIVE, bayes_log_ratio
from mico.attacks.hardness import minmax, shared_calibrated
from mico.attacks.inputs import PhaseInputs
from mico.attacks.lira import bayes_lira_sides
from mico.attacks.rmia_online import online_from_inputs, shared_online_inputs
from mico.attacks.signals import (
    InOutStats,
    gaussian_log_ratio,
    inout_stats,
    standardise,
    transform_margin,
)
from mico.errors import InputError

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

COMBINERS: tuple[str, ...] = ("ms-lira", "logreg")

#: The LiRA log ratios' model: per-point Gaussians, or ``--variance bayes``'s predictives.
COMBINE_VARIANCES: tuple[str, ...] = ("per-point", "bayes")

#: The two LiRA log-ratio signals and the score transform of each.
_LLR_TRANSFORMS = {"llr_logit": "stable_logit", "llr_prob": "prob"}

#: The logistic regression's inverse regularisation strength (sklearn's default).
LOGREG_C = 1.0

#: Confidences are clipped into [eps, 1 - eps] before the log-odds of ``rmia_online``.
_EPS = 1e-6


def lira_log_ratio(
    shadow_margin: np.ndarray,
    shadow_in: np.ndarray,
    target_margin: np.ndarray,
    target_points: np.ndarray,
    target_shadow: np.ndarray | None,
    transform: str,
) -> np.ndarray:
    """Online LiRA's ``log N(y; in) - log N(y; out)`` ``[T, K]`` (per-point std), 0 where a
    side has no shadow; the log-odds of :func:`mico.attacks.lira.lira`'s online confidence."""
    stats = inout_stats(
        transform_margin(shadow_margin, transform), shadow_in, target_points, target_shadow
    )
    return log_ratio_feature(stats, transform_margin(target_margin, transform))


def log_ratio_feature(stats: InOutStats, y: np.ndarray) -> np.ndarray:
    """:func:`lira_log_ratio` from the shadows' statistics and the targets' scores ``y``."""
    ratio = gaussian_log_ratio(y, stats.mean_in, stats.std("in"), stats.mean_out, stats.std("out"))
    return np.where((stats.n_in > 0) & (stats.n_out > 0), ratio, 0.0)


def signals(inputs: PhaseInputs, variance: str = "per-point") -> dict[str, np.ndarray]:
    """Every signal of the module docstring ``{name: [T, K]}`` on one phase, the LiRA ratios
    under ``variance`` (:data:`COMBINE_VARIANCES`), from the statistics the phase's other
    attacks share (computed once per phase)."""
    if variance not in COMBINE_VARIANCES:
        raise InputError(f"unknown variance {variance!r}; choose one of {COMBINE_VARIANCES}")
    return inputs.shared(("combine", "signals", variance), lambda: _signals(inputs, variance))


def _signals(inputs: PhaseInputs, variance: str) -> dict[str, np.ndarray]:
    logit_stats, margin = inputs.stats("stable_logit"), inputs.margin
    if variance == "bayes":
        out = {name: bayes_feature(inputs, t) for name, t in _LLR_TRANSFORMS.items()}
    else:
        out = {
            name: log_ratio_feature(inputs.stats(t), transform_margin(margin, t))
            for name, t in _LLR_TRANSFORMS.items()
        }
    z_out = standardise(margin, logit_stats.mean_out, logit_stats.std("out"))
    out["z_out"] = np.where(logit_stats.n_out > 0, z_out, 0.0)
    out["hard_margin"] = shared_calibrated(inputs, "margin", "std")
    out["hard_loss"] = shared_calibrated(inputs, "loss", "mid")
    if inputs.has_population:
        fraction = online_from_inputs(shared_online_inputs(inputs, 1.0), 1.0)
        out["rmia_online"] = logit(np.clip(fraction, _EPS, 1.0 - _EPS))
    return out


def bayes_feature(inputs: PhaseInputs, transform: str) -> np.ndarray:
    """Online LiRA's log ratio ``[T, K]`` under ``--variance bayes`` (Student-t posterior
    predictives, the posteriors shared with ``lira``), 0 where a side has no location."""
    sides = bayes_lira_sides(inputs, transform)
    y = transform_margin(inputs.margin, transform)
    ratio = bayes_log_ratio(sides, y, kind=BAYES_PREDICTIVE)
    return np.where((sides.post_in.kappa > 0) & (sides.post_out.kappa > 0), ratio, 0.0)


def features(signal: dict[str, np.ndarray]) -> np.ndarray:
    """The logistic regression's inputs ``[T, K, F]``: ``arcsinh`` of each signal."""
    return np.arcsinh(np.stack([signal[name] for name in sorted(signal)], axis=-1))


def _fit(x: np.ndarray, y: np.ndarray) -> Pipeline:
    # Imported here: scikit-learn takes a second to load, and only this combiner needs it.
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=LOGREG_C, max_iter=1000))
    return model.fit(x.reshape(-1, x.shape[-1]), y.ravel())


def logreg_scores(
    train_x: np.ndarray, train_y: np.ndarray, x: np.ndarray | None = None
) -> np.ndarray:
    """Log-odds ``[T, K]`` of the logistic regression over features ``[T, K, F]``.

    ``x`` None: the train targets themselves, each from a model fitted without it
    (leave-one-target-out); else ``x``'s targets, from the model fitted on all train targets.
    """
    if x is not None:
        return (
            _fit(train_x, train_y)
            .decision_function(x.reshape(-1, x.shape[-1]))
            .reshape(x.shape[:2])
        )
    n_targets = train_x.shape[0]
    if n_targets < 2:
        raise InputError("the logistic combiner needs at least 2 train models")
    out = np.empty(train_x.shape[:2])
    for t in range(n_targets):
        others = np.arange(n_targets) != t
        out[t] = _fit(train_x[others], train_y[others]).decision_function(train_x[t])
    return out


@dataclass(frozen=True)
class CombineParams(Params):
    """Which combiner of :data:`COMBINERS`, and the LiRA ratios' ``variance``
    (:data:`COMBINE_VARIANCES`)."""

    combiner: str = "logreg"
    variance: str = "per-point"


def combine_label(params: CombineParams) -> str:
    """``combine <combiner> [bayes]``: the ``--compare`` row of a variant."""
    label = f"combine {params.combiner}"
    return label + (" bayes" if params.variance == "bayes" else "")


class Combine(Attack):
    """Signals combined; the combiner and variance are chosen by CV on the train phase."""

    name = "combine"
    summary = "signals combined: MS-LiRA sum of log ratios, or a leave-one-out logistic model"

    def configs(self) -> list[Config]:
        """The logistic combiner first, then the MS-LiRA sum; per-point Gaussians first."""
        return [
            Config(self.name, combine_label(params), params)
            for variance in COMBINE_VARIANCES
            for combiner in reversed(COMBINERS)
            for params in (CombineParams(combiner, variance),)
        ]

    def prepare(self, inputs: PhaseInputs) -> dict[str, dict[str, np.ndarray]]:
        """A cache of both combiners' confidences per variance, filled on first use (the
        logistic fits are shared by nothing else)."""
        return {}

    def predict(self, inputs: PhaseInputs, params: Params, prepared: object) -> np.ndarray:
        assert isinstance(params, CombineParams) and isinstance(prepared, dict)
        if params.variance not in prepared:
            prepared[params.variance] = _combined(inputs, params.variance)
        return prepared[params.variance][params.combiner]


def _combined(inputs: PhaseInputs, variance: str) -> dict[str, np.ndarray]:
    """Both combiners' confidences on one phase, the LiRA ratios under ``variance``."""
    signal = signals(inputs, variance)
    train = inputs.train
    if train is None or train.solution is None:
        raise InputError("the logistic combiner needs a train phase with solutions")
    if inputs.phase == "train":
        logodds = logreg_scores(features(signal), train.solution)
    else:
        train_x = features(signals(train, variance))
        logodds = logreg_scores(train_x, train.solution, features(signal))
    # arcsinh, then min-max over the phase: monotone, into [0, 1], and unlike a sigmoid it
    # never rounds large log-odds to a tie at 1.
    return {
        "logreg": minmax(np.arcsinh(logodds)),
        "ms-lira": minmax(np.arcsinh(signal["llr_logit"] + signal["llr_prob"])),
    }
