"""LiRA on MICO: faithful split reconstruction, models, data, attack math and scoring.

Importing the package does no work; the scripts at the repository root drive it.  It is also a
drop-in for the competition's ``mico_competition`` package (``import mico as mico_competition``)
with MICO's names and signatures (README, "Using mico as mico_competition"), without
torchcsprng or torchvision: ``ChallengeDataset``, ``CNN``/``MLP`` with ``.load``,
``load_model``, ``load_cifar10``, ``load_purchase100``, ``load_sst2`` and the ``scoring``
module.
"""

from mico import scoring
from mico.bundle.splits import Splits, split_indices
from mico.compat import ChallengeDataset, load_cifar10, load_sst2
from mico.tracks.data import TensorPairDataset, load_purchase100
from mico.tracks.models import CNN, MLP, build_model, load_model
from mico.tracks.registry import PHASES, TASKS, Task, get_task, load_task

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
