"""Building a track's model and loading MICO's ``model.pt`` files into it, safely.

The architectures live in :mod:`mico.nets` (re-exported here, as MICO's package has them beside
``load_model``).  Files come from the internet: they are read with ``weights_only=True``, which
refuses pickled code.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from mico.nets import CNN, MLP, OPACUS_PREFIX, strip_opacus_prefix
from mico.tasks import Task, get_task

__all__ = ["CNN", "MLP", "OPACUS_PREFIX", "build_model", "load_model", "strip_opacus_prefix"]


def build_model(task: Task | str) -> nn.Module:
    """A freshly initialised model of the track's architecture."""
    task = get_task(task) if isinstance(task, str) else task
    return task.architecture()


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
