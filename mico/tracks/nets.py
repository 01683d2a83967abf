"""MICO's target architectures, as ``nn.Module`` classes with MICO's attribute names.

Module structure and attribute names match MICO's training scripts, so the state_dict keys
(``cnn.0.weight``, ``mlp.2.bias``, ...) of its ``model.pt`` files load unchanged.  This module
depends on nothing else in the package: the track registry (:mod:`mico.tracks.registry`) names the
architecture of each track, and :mod:`mico.tracks.models` loads files into them.

``CNN.load(path)`` and ``MLP.load(path)`` are MICO's classmethods with the same signature, but
read the file safely: ``model.pt`` files come from the internet, and ``weights_only=True``
refuses pickled code.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from mico.errors import InputError

#: Prefix Opacus' ``GradSampleModule`` adds to every key of a DP-trained model.
OPACUS_PREFIX = "_module."


#: Any module, and MICO's architectures: what :func:`load_weights` and ``load`` return.
M = TypeVar("M", bound=nn.Module)
L = TypeVar("L", bound="_Loadable")


def read_state_dict(
    path: str | Path, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Read a pickled state_dict with ``weights_only=True``.

    A missing, truncated or non-tensor file raises ``FileNotFoundError`` or ``ValueError``
    naming the file, instead of torch's multi-screen traceback.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except IsADirectoryError:
        raise InputError(
            f"{path} is a folder: pass the weight file inside it, or load_model()"
        ) from None
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: model file missing; is the bundle complete?") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"{path}: not a readable state_dict ({reason[:200]}); re-download the file"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: expected a state_dict of tensors, got {type(state).__name__}")
    return state


def load_weights(model: M, path: str | Path, device: str | torch.device = "cpu") -> M:
    """Load a ``model.pt`` into ``model`` (Opacus' prefix dropped); the model, in eval mode."""
    state = strip_opacus_prefix(read_state_dict(path, device))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        # torch's first line is only "Error(s) in loading state_dict for MLP:"; the detail
        # (missing, unexpected or mis-shaped keys) follows on the next lines.
        name = type(model).__name__
        detail = " ".join(str(exc).split()).removeprefix(
            f"Error(s) in loading state_dict for {name}: "
        )
        detail = detail if len(detail) <= 300 else detail[:297] + "..."
        raise InputError(f"{path}: does not fit the {name} model ({detail})") from None
    return model.to(device).eval()


class _Loadable(nn.Module):
    """MICO's ``load`` classmethod, shared by its architectures."""

    @classmethod
    def load(cls: type[L], path: str | Path) -> L:
        """A model of this class with the weights of the ``model.pt`` file ``path``, in eval
        mode (MICO's ``CNN.load`` / ``MLP.load``)."""
        return load_weights(cls(), path)


class CNN(_Loadable):
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


class MLP(_Loadable):
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
