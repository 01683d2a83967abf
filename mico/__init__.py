"""LiRA on MICO: faithful split reconstruction, models, data, attack math and scoring.

Importing the package does no work; the scripts at the repository root drive it.  The names
exported here make it a drop-in for the competition's ``mico_competition`` package without
torchcsprng or torchvision.
"""

from mico.data import TensorPairDataset, load_cifar10, load_purchase100
from mico.models import CNN, MLP, build_model, load_model
from mico.splits import ChallengeDataset, Splits, split_indices
from mico.tasks import PHASES, TASKS, Task, get_task, load_task

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
    "load_task",
    "split_indices",
]
