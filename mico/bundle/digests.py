"""Content digests: what a cache or record was made from, by content rather than by time stamp.

Two kinds, both SHA-256:

* **files** (model weights): :func:`file_digest`.  Size and modification time do not identify
  a file: ``cp -p``, ``tar x`` and ``touch -r`` give a different model the old size and time.
  A file is hashed once per run and its digest remembered under its *stamp*, ``(size,
  mtime_ns, inode, ctime_ns, device)``: the kernel sets ``ctime`` to the present on every
  write, rename and ``touch`` and no tool can set it back, and a replaced file gets another
  inode, so an unchanged stamp means unchanged bytes.  A :class:`DigestStore`
  (``<preds>/<challenge>/digests.json``) keeps the digests between runs, so a rerun on an
  unchanged bundle costs one ``stat`` per file; a file whose stamp changed is hashed again.
* **datasets**: :func:`dataset_digest` of the parsed base dataset (every record's features and
  label, as the models see them), computed once per loaded dataset.  It changes when the data
  files change, and also when the code that parses them does.

Measured costs are in ``docs/reliability.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mico.bundle.fileio import write_text_atomic

#: ``(size, mtime_ns, inode, ctime_ns, device)`` of a file.
Stamp = tuple[int, int, int, int, int]

#: Bytes read at a time when hashing a file.
_BLOCK = 1 << 22

#: Version of ``digests.json``'s layout; a store of another version is ignored.
STORE_FORMAT = 1

#: Digests computed by this process, by resolved path and stamp: each file is hashed once per
#: run whichever record asks for it (caches, provenance, the shadows' checks).
_MEMO: dict[tuple[str, Stamp], str] = {}


def stamp(path: Path) -> Stamp:
    """The file's stamp (see the module docstring), through symlinks."""
    info = os.stat(path)
    return (info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns, info.st_dev)


def hash_file(path: Path) -> str:
    """SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class DigestStore:
    """Digests remembered on disk, keyed on resolved path and :data:`Stamp`.

    A missing, unreadable or foreign file starts an empty store (it is only a cache).
    :meth:`save` merges with what is on disk, so shards sharing a folder lose nothing but
    their own concurrent additions, which are simply hashed again next time, and drops the
    entries of files that no longer exist.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.entries: dict[str, list] = self._read() if path is not None else {}
        self.dirty = False
        #: Files this run found or hashed: :meth:`save` need not check that they exist.
        self.seen: set[str] = set()

    def _read(self) -> dict[str, list]:
        assert self.path is not None
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(record, dict) and record.get("format") == STORE_FORMAT:
                files = record.get("files")
                return dict(files) if isinstance(files, dict) else {}
        except (OSError, ValueError):
            pass
        return {}

    def lookup(self, key: str, found: Stamp) -> str | None:
        """The digest stored for ``key`` if it was computed at stamp ``found``."""
        entry = self.entries.get(key)
        ok = isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], str)
        if ok and tuple(entry[0]) == found:  # type: ignore[index]
            self.seen.add(key)
            return entry[1]  # type: ignore[index]
        return None

    def remember(self, key: str, found: Stamp, digest: str) -> None:
        self.entries[key] = [list(found), digest]
        self.seen.add(key)
        self.dirty = True

    def save(self) -> None:
        """Write the store if anything was added (best effort: a read-only folder skips it)."""
        if self.path is None or not self.dirty:
            return
        merged = {**self._read(), **self.entries}
        kept = {p: entry for p, entry in merged.items() if p in self.seen or os.path.exists(p)}
        record = {"format": STORE_FORMAT, "files": kept}
        with contextlib.suppress(OSError):
            write_text_atomic(self.path, json.dumps(record, separators=(",", ":")) + "\n")
            self.dirty = False


def file_digest(path: Path, store: DigestStore | None = None) -> str:
    """SHA-256 of a file, hashed at most once per run and per stamp (module docstring).

    A file that changes while it is hashed is hashed again until two stamps agree, so a
    digest is never remembered for bytes the file no longer holds.
    """
    key = os.path.realpath(path)  # Path.resolve would stat the file once more
    while True:
        before = stamp(path)
        stored = store.lookup(key, before) if store is not None else None
        digest = _MEMO.get((key, before)) or stored
        if digest is not None:
            break  # known at this stamp: one stat, nothing read
        digest = hash_file(path)
        if stamp(path) == before:
            break
    _MEMO[(key, before)] = digest
    if store is not None and stored is None:
        store.remember(key, before, digest)
    return digest


def files_digest(paths: Iterable[Path], store: DigestStore | None = None) -> str:
    """One digest of several files (a model's weight files), each named by its file name;
    ``missing`` stands for a file that is not there, which no real digest equals."""
    parts = []
    for path in paths:
        path = Path(path)
        try:
            digest = file_digest(path, store)  # one stat where the digest is known
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            digest = "missing"
        parts.append(f"{path.name}={digest}")
    return ";".join(parts)


def dataset_digest(x: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 of a dataset's features ``x`` [N, ...] and labels ``y`` [N], with their dtypes
    and shapes: what every model output computed on it depends on."""
    digest = hashlib.sha256()
    for array in (x, y):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()
