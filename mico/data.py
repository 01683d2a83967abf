"""Base-dataset loaders in MICO's index order, with whole tensors for batched inference.

Dataset index ``i`` means the same record as in MICO: CIFAR-10 is the five training batches in
order followed by the test batch (N = 60000); Purchase-100 is the rows of ``dataset_purchase``
in file order (N = 197324).  Splits are index lists into these orders, so any reordering here
would silently corrupt every IN/OUT decision downstream.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mico.digests import dataset_digest
from mico.fileio import save_npz_atomic

CIFAR10_MEAN = (0.49139968, 0.48215841, 0.44653091)
CIFAR10_STD = (0.24703223, 0.24348513, 0.26158784)
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR10_CLASSES = 10
PURCHASE100_FILE = "dataset_purchase"
#: The parsed table beside the text, keyed on the text's size and SHA-256.
PURCHASE100_CACHE = "dataset_purchase.npz"
#: The cache name of earlier versions (keyed on mtime alone): removed when seen.
PURCHASE100_OLD_CACHE = "dataset_purchase.npy"
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
        self._digest: str | None = None

    @property
    def digest(self) -> str:
        """SHA-256 of every record as the models see it (:func:`mico.digests.dataset_digest`),
        computed on first use: caches and records made from these records carry it."""
        if self._digest is None:
            self._digest = dataset_digest(self.x.numpy(), self.y.numpy())
        return self._digest

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


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes; only the latin-1 codec."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _numpy_reconstructors() -> dict[tuple[str, str], object]:
    """The functions numpy pickles arrays with, under their names in numpy 1 and 2."""
    array = np.zeros(1, dtype=np.uint8)
    reconstruct = array.__reduce__()[0]  # numpy.(_)core.multiarray._reconstruct
    frombuffer = array.__reduce_ex__(5)[0]  # numpy.(_)core.numeric._frombuffer
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray}
    allowed[("numpy", "dtype")] = np.dtype
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    allowed[("_codecs", "encode")] = _latin1
    return allowed


#: Everything a CIFAR-10 python batch may name: numpy's array reconstruction and the
#: bytes codec of protocol-2 pickles (the real batches are Python 2 cPickle dumps of a dict
#: of bytes, lists and one uint8 array).  Anything else is refused, so a crafted batch cannot
#: run code.
CIFAR10_PICKLE_GLOBALS = _numpy_reconstructors()


class _BatchUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`CIFAR10_PICKLE_GLOBALS`."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return CIFAR10_PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which a CIFAR-10 batch never holds"
            ) from None


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One python CIFAR-10 batch as ``(data uint8 [n, 3072], labels int64 [n])``, safely.

    The official format is a pickle, and a pickle can run code when loaded: the file is read
    with :class:`_BatchUnpickler`, which builds only plain containers and numpy arrays.  Any
    way the file is malformed is a ``ValueError`` naming it, and so are values that a cast
    would silently change: pixels that are not integers in 0..255 (a float64 batch of 0.3 to
    433.8 would wrap around), labels that are not integers in 0..9 (12 or -1 would crash the
    forward pass much later).
    """
    try:
        batch = _BatchUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"])
    except OSError:
        raise
    except Exception as exc:  # untrusted bytes: every parser failure means a bad file
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{path}: not a CIFAR-10 python batch ({reason}); re-download it"
        ) from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise ValueError(f"{path}: expected uint8 [n, 3072] data with n labels; re-download it")
    problem = _integers_in(data, 0, 255, "pixels") or _integers_in(
        labels, 0, CIFAR10_CLASSES - 1, "labels"
    )
    if problem:
        raise ValueError(f"{path}: {problem}; re-download it")
    return data.astype(np.uint8), labels.astype(np.int64)


def _integers_in(values: np.ndarray, low: int, high: int, what: str) -> str | None:
    """Why ``values`` are not integers in ``[low, high]``, or None."""
    if values.dtype.kind not in "iu":
        return f"{what} are {values.dtype}, expected integers in {low}..{high}"
    if len(values) and (values.min() < low or values.max() > high):
        return f"{what} run from {values.min()} to {values.max()}, expected {low}..{high}"
    return None


def load_cifar10(dataset_dir: str | Path = ".") -> TensorPairDataset:
    """Load ``<dataset_dir>/cifar10/cifar-10-batches-py``: batches 1-5, then test (N=60000)."""
    folder = Path(dataset_dir) / "cifar10" / CIFAR10_FOLDER
    images, labels = [], []
    for name in CIFAR10_BATCHES:
        path = folder / name
        if not path.is_file():
            raise _missing(path, "cifar10")
        data, batch_labels = read_cifar10_batch(path)
        images.append(data)
        labels.append(batch_labels)
    return TensorPairDataset(
        cifar10_transform(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))
    )


def _parse_purchase(path: Path) -> np.ndarray:
    """Parse the text file into uint8 [N, 601] (label column first), the slow step we cache."""
    try:
        table = pd.read_csv(path, header=None, dtype=np.int16, engine="c").to_numpy()
    except (ValueError, pd.errors.ParserError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: not comma-separated integers ({reason})") from None
    if table.ndim != 2 or table.shape[1] != PURCHASE100_FEATURES + 1:
        raise ValueError(
            f"{path}: expected {PURCHASE100_FEATURES + 1} columns (label, 600 features), "
            f"got {table.shape[1] if table.ndim == 2 else table.shape}"
        )
    labels, features = table[:, 0], table[:, 1:]
    if labels.min() < 1 or labels.max() > 100 or features.min() < 0 or features.max() > 1:
        raise ValueError(f"{path}: labels must be 1..100 and features 0/1")
    return table.astype(np.uint8)


def _text_key(path: Path) -> tuple[int, str]:
    """The text's size and SHA-256: what the cache must match (about 0.3 s for 240 MB).

    Not the modification time: ``tar x``, ``cp -p`` and ``rsync -a`` give a replaced text an
    older time than the cache made from the previous one.
    """
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return path.stat().st_size, digest.hexdigest()


def _read_purchase_cache(cache: Path, key: tuple[int, str]) -> np.ndarray | None:
    """The cached table if ``cache`` was made from text with this ``key``; else ``None``."""
    try:
        with np.load(cache, allow_pickle=False) as stored:
            if (int(stored["size"]), str(stored["sha256"])) != key:
                return None
            table = stored["table"]
    except Exception:  # missing, truncated or foreign: parse the text again
        return None
    if table.ndim != 2 or table.shape[1] != PURCHASE100_FEATURES + 1 or table.dtype != np.uint8:
        return None
    return table


def load_purchase100(dataset_dir: str | Path = ".") -> TensorPairDataset:
    """Load ``<dataset_dir>/purchase100/dataset_purchase``: label = column 0 minus 1.

    Parsing the 200k-row text file takes seconds, so the first load writes the parsed table
    (``dataset_purchase.npz``, uint8) beside it with the text's size and SHA-256; later loads
    read it only when both still match, and rebuild it otherwise.  A cache that cannot be
    written (read-only folder) is simply skipped.
    """
    path = Path(dataset_dir) / "purchase100" / PURCHASE100_FILE
    if not path.is_file():
        raise _missing(path, "purchase100")
    cache = path.with_name(PURCHASE100_CACHE)
    with contextlib.suppress(OSError):
        path.with_name(PURCHASE100_OLD_CACHE).unlink(missing_ok=True)
    key = _text_key(path)
    table = _read_purchase_cache(cache, key)
    if table is None:
        table = _parse_purchase(path)
        with contextlib.suppress(OSError):  # a read-only folder works, only without the cache
            save_npz_atomic(cache, table=table, size=np.int64(key[0]), sha256=np.str_(key[1]))
    labels = torch.from_numpy(table[:, 0].astype(np.int64) - 1)
    features = torch.from_numpy(table[:, 1:].astype(np.float32))
    return TensorPairDataset(features, labels)
