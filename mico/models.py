"""MICO's two target architectures and a safe loader for their ``model.pt`` files.

Module structure and attribute names match MICO's training scripts, so the state_dict keys
(``cnn.0.weight``, ``mlp.2.bias``, ...) load unchanged.  Files come from the internet: they are
read with ``weights_only=True``, which refuses pickled code.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from mico.tasks import Task, get_task

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


MODEL_CLASSES: dict[str, type[nn.Module]] = {"CNN": CNN, "MLP": MLP}


def build_model(task: Task | str) -> nn.Module:
    """A freshly initialised model of the track's architecture."""
    task = get_task(task) if isinstance(task, str) else task
    return MODEL_CLASSES[task.model_name]()


def strip_opacus_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop Opacus' ``_module.`` prefix so DP and non-DP models share one key set."""
    return {
        key[len(OPACUS_PREFIX) :] if key.startswith(OPACUS_PREFIX) else key: value
        for key, value in state_dict.items()
    }


def load_model(task: Task | str, path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load a MICO ``model.pt`` (a pickled state_dict) into the track's model, in eval mode.

    A missing, truncated, non-tensor or mismatched file raises ``ValueError`` or
    ``FileNotFoundError`` naming the file, instead of torch's multi-screen traceback.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file missing; is the bundle complete?")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{path}: not a readable state_dict ({reason[:200]}); re-download the file"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state_dict of tensors, got {type(state).__name__}")
    model = build_model(task)
    try:
        model.load_state_dict(strip_opacus_prefix(state))
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        name = type(model).__name__
        raise ValueError(f"{path}: does not fit the {name} model ({first})") from None
    return model.to(device).eval()
