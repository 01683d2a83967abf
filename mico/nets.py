"""MICO's target architectures, as ``nn.Module`` classes with MICO's attribute names.

Module structure and attribute names match MICO's training scripts, so the state_dict keys
(``cnn.0.weight``, ``mlp.2.bias``, ...) of its ``model.pt`` files load unchanged.  This module
depends on nothing else in the package: the track registry (:mod:`mico.tasks`) names the
architecture of each track, and :mod:`mico.models` loads files into them.
"""

from __future__ import annotations

import torch
from torch import nn

#: Prefix Opacus' ``GradSampleModule`` adds to every key of a DP-trained model.
OPACUS_PREFIX = "_module."


class CNN(nn.Module):
    """MICO's CIFAR-10 4-layer CNN (about 127.6 M multiply-adds per 3x32x32 image)."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(3, 128, kernel_size=8, stride=2, padding=3),
            nn.Tanh(),
            nn.MaxPool2d(kernel_size=3, stride=1),
            nn.Conv2d(128, 256, kernel_size=3),
            nn.Tanh(),
            nn.Conv2d(256, 256, kernel_size=3),
            nn.Tanh(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Flatten(),
            nn.Linear(in_features=6400, out_features=10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn(x)


class MLP(nn.Module):
    """MICO's Purchase-100 MLP: 600 binary features -> 128 tanh units -> 100 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(600, 128), nn.Tanh(), nn.Linear(128, 100))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def strip_opacus_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop Opacus' ``_module.`` prefix so DP and non-DP models share one key set."""
    return {
        key[len(OPACUS_PREFIX) :] if key.startswith(OPACUS_PREFIX) else key: value
        for key, value in state_dict.items()
    }
