"""The MICO starting kit's loss threshold: no shadow models, the floor every attack should beat."""

from __future__ import annotations

import numpy as np

from mico.attacks.base import Attack, Config, Params
from mico.attacks.inputs import PhaseInputs
from mico.attacks.signals import transform_margin
from mico.attacks.stats import check_finite


def loss_attack(target_margin: np.ndarray) -> np.ndarray:
    """The loss-threshold baseline: confidence ``p = sigmoid(z) = exp(-loss)`` ``[T, K]``.

    ``p`` rounds to 1.0 for margins above ~36.7, so extremely confident points tie; the
    starting kit's threshold on the loss has the same resolution.
    """
    return transform_margin(check_finite(target_margin, "target_margin", ndim=2), "prob")


class Loss(Attack):
    """The loss-threshold baseline, one fixed configuration."""

    name = "loss"
    summary = "the loss-threshold baseline"
    show_each = True

    def configs(self) -> list[Config]:
        return [Config(self.name, "loss")]

    def predict(self, inputs: PhaseInputs, params: Params, prepared: object) -> np.ndarray:
        return loss_attack(inputs.margin)
