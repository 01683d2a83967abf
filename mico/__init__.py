"""LiRA on MICO: faithful split reconstruction, models, data, attack math and scoring.

Importing the package does no work and loads no torch (the names below are imported on first
use, PEP 562), so every script's ``--help`` answers at once; the scripts at the repository root
drive it.  It is also a drop-in for the competition's ``mico_competition`` package
(``import mico as mico_competition``) with MICO's names and signatures (docs/compat.md),
without torchcsprng or torchvision: ``ChallengeDataset``, ``CNN``/``MLP`` with ``.load``,
``load_model``, ``load_cifar10``, ``load_purchase100``, ``load_sst2`` and the ``scoring``
module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

#: Each public name and the module that defines it.
_EXPORTS: dict[str, str] = {
    "CNN": "mico.tracks.models",
    "MLP": "mico.tracks.models",
    "PHASES": "mico.tracks.registry",
    "TASKS": "mico.tracks.registry",
    "ChallengeDataset": "mico.compat",
    "Splits": "mico.bundle.splits",
    "Task": "mico.tracks.registry",
    "TensorPairDataset": "mico.tracks.data",
    "build_model": "mico.tracks.models",
    "get_task": "mico.tracks.registry",
    "load_cifar10": "mico.compat",
    "load_model": "mico.tracks.models",
    "load_purchase100": "mico.tracks.data",
    "load_sst2": "mico.compat",
    "load_task": "mico.tracks.registry",
    "scoring": "mico.scoring",
    "split_indices": "mico.bundle.splits",
}

#: The same names, spelled out for linters and ``from mico import *``.
__all__ = [
    "CNN",
    "MLP",
    "PHASES",
    "TASKS",
    "ChallengeDataset",
    "Splits",
    "Task",
    "TensorPairDataset",
    "build_model",
    "get_task",
    "load_cifar10",
    "load_model",
    "load_purchase100",
    "load_sst2",
    "load_task",
    "scoring",
    "split_indices",
]

if TYPE_CHECKING:
    from mico import scoring
    from mico.bundle.splits import Splits, split_indices
    from mico.compat import ChallengeDataset, load_cifar10, load_sst2
    from mico.tracks.data import TensorPairDataset, load_purchase100
    from mico.tracks.models import CNN, MLP, build_model, load_model
    from mico.tracks.registry import PHASES, TASKS, Task, get_task, load_task


def __getattr__(name: str) -> object:
    """Import a public name's module on first use and cache the name here (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mico' has no attribute {name!r}")
    value = importlib.import_module(module)
    if name != module.rsplit(".", 1)[-1]:
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
