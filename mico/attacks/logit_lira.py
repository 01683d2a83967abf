"""LiRA on full-logit signals (issue 23): more of each model's output than the true-label margin.

Every other shadow attack here reads the true-label margin ``z = logit_y - logsumexp_{j != y}
logit_j``, which forgets how the logit vector is placed: a model can reach the same margin with
a high true-label logit or with low competitors. ``save_preds.py --save-logits`` stores the full
vectors (``shadow_logits [S, P, C]``, ``<phase>_logits [T, K, C]``), and this attack scores one
scalar signal of them per (model, point), chosen by cross-validation among
:data:`SIGNALS`:

* ``true_logit``: ``logit_y``, the raw true-label logit (its level, not only its lead);
* ``centred``: ``logit_y - mean_j logit_j``, the true-label logit against the class average;
* ``hinge``: ``logit_y - max_{j != y} logit_j``, the lead over the strongest competitor
  (Carlini et al.'s LiRA code scores this for CIFAR-10).

Each signal goes through LiRA's test unchanged (:func:`mico.attacks.lira.lira_test`, the signal
itself as the score): offline or online, with the pooled (``--global_variance``) or the Bayesian
(``--variance bayes``) variance, the target's own row left out as everywhere. Signals are
computed in float64 from the stored float32 logits.

On the purchase100 default demo no single one of these beat the margin (docs/budget.md): the
attack is here so that CV can pick it where it helps (e.g. DP models, whose logit scale moves),
and so ``--compare`` shows it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mico.attacks.base import LOGITS, Attack, Config, Params
from mico.attacks.bayes import BAYES_PREDICTIVE, BAYES_PRIOR, bayes_confidence, bayes_sides
from mico.attacks.inputs import PhaseInputs
from mico.attacks.lira import lira_test
from mico.attacks.signals import inout_stats
from mico.errors import InputError

#: The full-logit signals, see the module docstring.
SIGNALS: tuple[str, ...] = ("true_logit", "centred", "hinge")

#: The variances each signal is tested with (LiRA's names).
LOGIT_VARIANCES: tuple[str, ...] = ("pooled", "bayes")


def logit_signal(logits: np.ndarray, labels: np.ndarray, signal: str) -> np.ndarray:
    """The ``signal`` of logit vectors ``[..., C]`` with true labels ``[...]`` (any leading
    shape, the same for both): float64 ``[...]``."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim < 1 or z.shape[:-1] != y.shape or z.shape[-1] < 2:
        raise InputError(
            f"logits must be [..., C] with C >= 2 and labels [...], got {z.shape} and {y.shape}"
        )
    if not np.all(np.isfinite(z)):
        raise InputError("stored logits hold NaN or infinity: rerun save_preds.py --save-logits")
    true = np.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    if signal == "true_logit":
        return true
    if signal == "centred":
        return true - z.mean(axis=-1)
    if signal == "hinge":
        others = z.copy()
        np.put_along_axis(others, y[..., None], -np.inf, axis=-1)
        return true - others.max(axis=-1)
    raise InputError(f"unknown signal {signal!r}; choose one of {', '.join(SIGNALS)}")


@dataclass(frozen=True)
class LogitLiraParams(Params):
    """Which full-logit ``signal``, which LiRA ``variance`` and whether ``online``."""

    signal: str = "true_logit"
    variance: str = "pooled"
    online: bool = False


class LogitLira(Attack):
    """LiRA on a full-logit signal (module docstring); every combination is a CV candidate."""

    name = "logit_lira"
    summary = (
        "LiRA on a full-logit signal (true-label logit, class-centred logit or hinge), chosen "
        "by CV; needs save_preds.py --save-logits"
    )
    needs = frozenset({LOGITS})

    def configs(self) -> list[Config]:
        """Offline ones first, the pooled true-label logit the default."""
        return [
            self._config(LogitLiraParams(signal, variance, online))
            for online in (False, True)
            for signal in SIGNALS
            for variance in LOGIT_VARIANCES
        ]

    def _config(self, params: LogitLiraParams) -> Config:
        test = "online" if params.online else "offline"
        variance = "gv" if params.variance == "pooled" else params.variance
        return Config(self.name, f"logit_lira {test} {params.signal} {variance}", params)

    def predict(self, inputs: PhaseInputs, params: Params, prepared: object) -> np.ndarray:
        assert isinstance(params, LogitLiraParams)
        shadow, target = inputs.shared(
            ("logit_signal", params.signal), lambda: _signals(inputs, params.signal)
        )
        if params.variance == "bayes":
            sides = inputs.shared(
                ("bayes", "logit_signal", params.signal),
                lambda: bayes_sides(
                    shadow,
                    inputs.shadow_in,
                    inputs.points,
                    inputs.target_shadow,
                    family=BAYES_PRIOR,
                ),
            )
            return bayes_confidence(sides, target, kind=BAYES_PREDICTIVE, online=params.online)
        stats = inputs.shared(
            ("logit_stats", params.signal),
            lambda: inout_stats(shadow, inputs.shadow_in, inputs.points, inputs.target_shadow),
        )
        return lira_test(stats, target, params.variance, params.online)


def _signals(inputs: PhaseInputs, signal: str) -> tuple[np.ndarray, np.ndarray]:
    """The shadows' ``[S, P]`` and the targets' ``[T, K]`` values of one full-logit signal."""
    if inputs.shadow_logits is None or inputs.logits is None:
        raise InputError("no stored logits: rerun save_preds.py with --save-logits")
    labels = np.broadcast_to(inputs.labels, inputs.shadow_margin.shape)
    shadow = logit_signal(inputs.shadow_logits, labels, signal)
    target = logit_signal(inputs.logits, inputs.labels[inputs.points], signal)
    return shadow, target
