"""Building a track's model and loading MICO's ``model.pt`` files into it, safely.

The architectures live in :mod:`mico.tracks.nets` (re-exported here, as MICO's package has them
beside ``load_model``).  Files come from the internet: they are read with ``weights_only=True``,
which refuses pickled code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mico.bundle.layout import MODEL_FILE
from mico.tracks.nets import CNN, MLP, OPACUS_PREFIX, load_weights, strip_opacus_prefix
from mico.tracks.registry import Task, get_task

__all__ = [
    "CNN",
    "MLP",
    "OPACUS_PREFIX",
    "build_model",
    "load_model",
    "model_file",
    "strip_opacus_prefix",
]


def build_model(task: Task | str) -> nn.Module:
    """A freshly initialised model of the track's architecture."""
    task = get_task(task) if isinstance(task, str) else task
    return task.architecture()


def model_file(path: str | Path) -> Path:
    """The weight file meant by ``path``: a model folder's ``model.pt``, or the file itself.

    MICO's ``load_model`` takes the folder; the pipeline passes the file.  Both are accepted
    because the two cannot be confused: a folder is never a weight file.
    """
    path = Path(path)
    return path / MODEL_FILE if path.is_dir() else path


def load_model(task: Task | str, path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The track's model with the weights of a MICO model, in eval mode.

    MICO's signature: ``load_model('cifar10', 'cifar10/cifar10_inf/train/model_0')`` reads that
    folder's ``model.pt``; a path to the file itself works too.  A missing, truncated,
    non-tensor or mismatched file raises ``ValueError`` or ``FileNotFoundError`` naming it.
    A track whose folders hold other files (``task.read_model``) reads them its own way;
    ``path`` is then the model folder or its weights file.
    """
    task = get_task(task) if isinstance(task, str) else task
    if task.read_model is not None:
        return task.read_model(Path(path), device)
    return load_weights(build_model(task), model_file(path), device)
