"""Atomic file writes: a reader (or a rerun after Ctrl-C) never sees a half-written file.

Everything the pipeline writes goes to a temporary file in the destination folder and is renamed
into place only when complete; ``os.replace`` is atomic on POSIX and Windows within one folder.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", *, durable: bool = True) -> Iterator[IO]:
    """Open a temporary file next to ``path``; rename it to ``path`` only if the block succeeds.

    ``durable`` also flushes the data to disk before the rename, so a power cut cannot leave an
    empty file under the final name.  Caches that are validated on every read skip it: an fsync
    costs milliseconds, and ``save_preds.py`` writes one cache file per model.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (newlines written as given)."""
    with atomic_write(path, "w") as handle:
        handle.write(text)


def save_npy_atomic(path: str | Path, array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically."""
    with atomic_write(path, "wb") as handle:
        np.save(handle, array)


def save_npz_atomic(path: str | Path, *, durable: bool = True, **arrays: np.ndarray) -> None:
    """``np.savez`` to ``path`` atomically (uncompressed: these files are read often)."""
    with atomic_write(path, "wb", durable=durable) as handle:
        np.savez(handle, **arrays)
