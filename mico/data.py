"""Base-dataset loaders in MICO's index order, with whole tensors for batched inference.

Dataset index ``i`` means the same record as in MICO: CIFAR-10 is the five training batches in
order followed by the test batch (N = 60000); Purchase-100 is the rows of ``dataset_purchase``
in file order (N = 197324).  Splits are index lists into these orders, so any reordering here
would silently corrupt every IN/OUT decision downstream.
"""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mico.fileio import save_npy_atomic

CIFAR10_MEAN = (0.49139968, 0.48215841, 0.44653091)
CIFAR10_STD = (0.24703223, 0.24348513, 0.26158784)
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
PURCHASE100_FILE = "dataset_purchase"
PURCHASE100_FEATURES = 600


class TensorPairDataset(Dataset):
    """``(x, y)`` pairs backed by two whole tensors, ``x`` [N, ...] float32 and ``y`` [N] int64.

    Behaves like ``torch.utils.data.TensorDataset`` for code written against MICO, while the
    pipeline slices ``x`` and ``y`` directly instead of collating one record at a time.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if len(x) != len(y):
            raise ValueError(f"features and labels differ in length: {len(x)} != {len(y)}")
        self.x = x
        self.y = y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]


def _missing(path: Path, challenge: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{path} not found: run `python download_files.py --challenge {challenge}` (or add "
        f"--demo for the offline demo), or point --data-dir at the folder holding {challenge}/"
    )


def cifar10_transform(images: np.ndarray) -> torch.Tensor:
    """MICO's CIFAR-10 preprocessing of uint8 [N, 3072] CHW rows: ``x / 255``, then per-channel
    ``(x - mean) / std``, in float32 as torchvision's ``ToTensor`` + ``Normalize`` compute it."""
    x = torch.from_numpy(np.ascontiguousarray(images)).reshape(-1, 3, 32, 32).float().div(255)
    mean = torch.tensor(CIFAR10_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def load_cifar10(dataset_dir: str | Path = ".") -> TensorPairDataset:
    """Load ``<dataset_dir>/cifar10/cifar-10-batches-py``: batches 1-5, then test (N=60000)."""
    folder = Path(dataset_dir) / "cifar10" / CIFAR10_FOLDER
    images, labels = [], []
    for name in CIFAR10_BATCHES:
        path = folder / name
        if not path.is_file():
            raise _missing(path, "cifar10")
        try:
            with path.open("rb") as handle:
                batch = pickle.load(handle, encoding="bytes")  # the official format is a pickle
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            batch_labels = np.asarray(batch[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{path}: not a CIFAR-10 python batch ({exc}); re-download it"
            ) from None
        if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(batch_labels):
            raise ValueError(f"{path}: expected uint8 [n, 3072] data with n labels")
        images.append(data)
        labels.append(batch_labels)
    return TensorPairDataset(
        cifar10_transform(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))
    )


def _purchase_cache(path: Path) -> Path:
    return path.with_name(path.name + ".npy")


def _parse_purchase(path: Path) -> np.ndarray:
    """Parse the text file into uint8 [N, 601] (label column first), the slow step we cache."""
    try:
        table = pd.read_csv(path, header=None, dtype=np.int16, engine="c").to_numpy()
    except (ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: not comma-separated integers ({exc})") from None
    if table.ndim != 2 or table.shape[1] != PURCHASE100_FEATURES + 1:
        raise ValueError(
            f"{path}: expected {PURCHASE100_FEATURES + 1} columns (label, 600 features), "
            f"got {table.shape[1] if table.ndim == 2 else table.shape}"
        )
    labels, features = table[:, 0], table[:, 1:]
    if labels.min() < 1 or labels.max() > 100 or features.min() < 0 or features.max() > 1:
        raise ValueError(f"{path}: labels must be 1..100 and features 0/1")
    return table.astype(np.uint8)


def load_purchase100(dataset_dir: str | Path = ".") -> TensorPairDataset:
    """Load ``<dataset_dir>/purchase100/dataset_purchase``: label = column 0 minus 1.

    Parsing the 200k-row text file takes seconds, so the first load writes a binary copy
    (``dataset_purchase.npy``, uint8) beside it; later loads read that copy unless the text file
    is newer.  A cache that cannot be written (read-only folder) is simply skipped.
    """
    path = Path(dataset_dir) / "purchase100" / PURCHASE100_FILE
    if not path.is_file():
        raise _missing(path, "purchase100")
    cache = _purchase_cache(path)
    table = None
    if cache.is_file() and cache.stat().st_mtime >= path.stat().st_mtime:
        try:
            table = np.load(cache, allow_pickle=False)
        except (ValueError, OSError):
            table = None
        if table is not None and (table.ndim != 2 or table.shape[1] != PURCHASE100_FEATURES + 1):
            table = None
    if table is None:
        table = _parse_purchase(path)
        with contextlib.suppress(OSError):  # a read-only folder works, only without the cache
            save_npy_atomic(cache, table)
    labels = torch.from_numpy(table[:, 0].astype(np.int64) - 1)
    features = torch.from_numpy(table[:, 1:].astype(np.float32))
    return TensorPairDataset(features, labels)
