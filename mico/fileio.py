"""Safe file writes: a reader (or a rerun after Ctrl-C) never sees a half-written file.

Everything the pipeline writes goes to a temporary file in the destination folder and is renamed
into place only when complete; ``os.replace`` is atomic on POSIX and Windows within one folder.
What a plain ``open(path, "w")`` would do is kept where it matters:

* the new file gets ``0666`` minus the umask (or the mode of the file it replaces), not the
  ``0600`` of ``mkstemp``;
* a symlink to a regular file is followed: its target is replaced, the link stays;
* anything else that is not a regular file (``/dev/null``, ``/dev/stdout``, a FIFO) is written
  through once the content is complete, never replaced; a folder or block device is refused
  with one line.

Temporary names are ``.<name>.<host>.<pid>.<random>.tmp``, so a file left by a killed run is
recognisable as dead (same host, no such process) and removed by the next write into its folder
(:func:`remove_stale_temps`).  A full disk, or a folder that cannot hold files, is reported
naming the file the user asked for (never the temporary), and the previous version, if any,
stays as it was.  :func:`check_output_file` and :func:`check_output_folder` make the same
checks up front, so a script refuses a bad output path before its first write.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import secrets
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

#: Errors that mean "no room for this file": reported as one line naming it.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

#: ``.<name>.<host>.<pid>.<token>.tmp``: this project's temporary names.
_TEMP = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>[0-9]+)\.[0-9a-f]{8}\.tmp$")

#: Folders already swept of dead temporaries by this process (one listing per folder and run).
_swept: set[Path] = set()


def _host() -> str:
    """This machine's name as it appears in temporary names (letters, digits and ``-``)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete this project's temporaries in ``folder`` whose writer is dead; returns them.

    Only names made on this host by a process that no longer exists are touched: a temporary
    of a live writer (another run, another machine on a shared disk) stays.
    """
    host, removed = _host(), []
    if os.name != "posix":  # os.kill(pid, 0) is no liveness probe elsewhere
        return removed
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            match = _TEMP.match(entry.name)
            if match and match["host"] == host and not _alive(int(match["pid"])):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _cannot_write(path: Path, folder: Path, exc: OSError) -> OSError:
    """``exc`` (raised for a temporary or a parent folder) as one line naming ``path``."""
    if exc.errno in _NO_SPACE:
        return _no_space(path, exc)
    error = OSError(
        f"{path}: cannot write into {folder} ({exc.strerror or type(exc).__name__}); choose "
        "another folder"
    )
    error.errno = exc.errno
    return error


def _existing_ancestor(folder: Path) -> Path:
    """``folder`` or its nearest ancestor that exists (what a ``mkdir -p`` would write into)."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def _probe(path: Path, folder: Path) -> None:
    """Create and remove an empty temporary in ``folder``: the only sure test that it can hold
    a new file (``os.access`` says yes to root under ``/proc``, and knows nothing of quotas)."""
    if not folder.is_dir():
        raise ValueError(f"{path}: {folder} is a file, not a folder; choose another path")
    probe = _temp_name(folder / f"{path.name}.probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise _cannot_write(path, folder, exc) from None


def check_output_file(path: str | Path) -> None:
    """Refuse, in one line naming ``path``, an output file that a later write would fail on: a
    folder or block device, a path through a file, or a folder that cannot hold new files.  A
    device or FIFO passes (it is written through)."""
    path = Path(path)
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        info = None
    if info is not None and (stat.S_ISDIR(info.st_mode) or stat.S_ISBLK(info.st_mode)):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a block device"
        raise ValueError(f"{path} is {kind}, not a file: choose a file name to write")
    if info is not None and not stat.S_ISREG(info.st_mode):
        return
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    _probe(path, _existing_ancestor(target.parent))


def check_output_folder(folder: str | Path) -> None:
    """Refuse, in one line naming ``folder``, an output folder that is a file, lies under one,
    or cannot hold new files."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder: choose a folder to write into")
    _probe(folder, _existing_ancestor(folder))


def _no_space(path: Path, exc: OSError) -> OSError:
    error = OSError(
        f"{path}: cannot write, {exc.strerror or 'no space left'}; free space or choose another "
        f"folder, then rerun (nothing was replaced)"
    )
    error.errno = exc.errno
    return error


@contextlib.contextmanager
def _write_through(path: Path, mode: str) -> Iterator[IO]:
    """Write into a device or FIFO, as ``open`` would: it is not ours to replace.

    The block writes to memory and the result goes out in one piece once complete: a failure
    part-way sends nothing, and writers that seek (``zipfile``) work on pipes and on devices
    whose position never moves (``/dev/null``).  Outputs are small: a zip, a plot, a CSV.
    """
    buffer: IO = io.BytesIO() if "b" in mode else io.StringIO()
    yield buffer
    try:
        with open(path, mode) as handle:
            handle.write(buffer.getvalue())
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise _no_space(path, exc) from None
        raise


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", *, durable: bool = True) -> Iterator[IO]:
    """Open a temporary file next to ``path``; rename it to ``path`` only if the block succeeds.

    ``durable`` also flushes the data to disk before the rename, so a power cut cannot leave an
    empty file under the final name.  Caches that are validated on every read skip it: an fsync
    costs milliseconds, and ``save_preds.py`` writes one cache file per model.  See the module
    docstring for symlinks, devices, modes and stale temporaries.
    """
    path = Path(path)
    try:
        info = path.stat()  # through symlinks, /proc/self/fd/N included
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):
        if stat.S_ISDIR(info.st_mode) or stat.S_ISBLK(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a block device"
            raise ValueError(f"{path} is {kind}, not a file: choose a file name to write")
        with _write_through(path, mode) as handle:
            yield handle
        return
    asked = path
    if path.is_symlink():  # replace the file it points to; the link stays a link
        path = Path(os.path.realpath(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot_write(asked, _existing_ancestor(path.parent), exc) from None
    if path.parent not in _swept:
        remove_stale_temps(path.parent)
        _swept.add(path.parent)
    while True:
        tmp = _temp_name(path)
        try:  # 0666 minus the umask, applied by the kernel as for a plain open
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise _cannot_write(asked, path.parent, exc) from None
    try:
        with os.fdopen(fd, mode) as handle:
            if info is not None and hasattr(os, "fchmod"):  # keep the replaced file's mode
                os.fchmod(handle.fileno(), stat.S_IMODE(info.st_mode))
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in _NO_SPACE:
            raise _no_space(path, exc) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
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
