"""Safe import of bundle zips, bundle folders and base-dataset tarballs.

Archives come from the internet or from users, so every member is checked before the first
byte is written: absolute names, ``..`` components, links and special files make the whole
archive refused (:func:`safe_member_parts`), and paths are rebuilt from the checked components,
so nothing can land outside the target folder.  Each file is written with
:func:`mico.bundle.fileio.atomic_write`: an interrupted import leaves complete files or none.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

from mico.bundle.fileio import atomic_write
from mico.bundle.layout import BUNDLE_CONFIG
from mico.errors import InputError
from mico.tracks.registry import Task

logger = logging.getLogger(__name__)

#: Bytes per copy step.
COPY_BYTES = 1 << 20


def safe_member_parts(name: str, archive: Path) -> tuple[str, ...]:
    """Path components of an archive member, refusing any name that could leave the target.

    Absolute names (``/x``, ``\\x``, ``C:x``), ``..`` components and NUL bytes raise
    ``ValueError``; ``.`` and empty components are dropped.  Backslashes count as separators
    so a name made on Windows cannot smuggle ``..\\``.
    """
    absolute = name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) is not None
    parts = tuple(part for part in re.split(r"[/\\]", name) if part not in ("", "."))
    if absolute or ".." in parts or "\0" in name:
        raise InputError(
            f"{archive}: refusing unsafe member {name!r} (absolute path or '..'); nothing was "
            f"extracted"
        )
    return parts


def _refuse_special(archive: Path, name: str) -> InputError:
    return InputError(
        f"{archive}: refusing member {name!r}: links and special files are not allowed; "
        f"nothing was extracted"
    )


def _bundle_offset(tops: set[str], task: Task, source: Path) -> int:
    """Leading components to drop so that member paths are relative to ``<challenge>/``.

    The published zips hold ``<challenge>/<scenario>/...``; a zip or folder of the challenge
    folder's content (``<scenario>/...``) is accepted too.
    """
    if task.challenge in tops:
        return 1
    if tops & set(task.scenarios):
        return 0
    raise InputError(
        f"{source}: holds neither {task.challenge}/ nor its scenario folders "
        f"({', '.join(task.scenarios)}); is it a {task.challenge} bundle?"
    )


def _in_bundle(relative: tuple[str, ...], task: Task) -> bool:
    """Whether a path relative to ``<challenge>/`` belongs to the bundle (not ``__MACOSX`` &c)."""
    return relative == (BUNDLE_CONFIG,) or (len(relative) > 1 and relative[0] in task.scenarios)


def import_zip(zip_path: Path, root: Path, task: Task, *, quiet: bool) -> int:
    """Extract the bundle in ``zip_path`` into ``<root>/<challenge>/``; returns the file count.

    Every member is checked before the first byte is written; each file is written atomically
    and overwrites what was there (the zip is the source being imported).
    """
    target = root / task.challenge
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = []
            for info in archive.infolist():
                parts = safe_member_parts(info.filename, zip_path)
                # Unix file type from the mode bits; zips made on Windows (or by Python's
                # writestr) carry none, which means a plain file.
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise _refuse_special(zip_path, info.filename)
                if parts and not info.is_dir():
                    members.append((info, parts))
            offset = _bundle_offset({parts[0] for _, parts in members}, task, zip_path)
            chosen = []
            for info, parts in members:
                relative = parts[offset:]
                if (offset == 0 or parts[0] == task.challenge) and _in_bundle(relative, task):
                    chosen.append((info, relative))
            skipped = len(members) - len(chosen)
            if skipped:
                logger.info("%s: ignoring %d files outside the bundle", zip_path, skipped)
            _verify_members(archive, [info for info, _ in chosen], quiet=quiet)
            for info, relative in tqdm(
                chosen, desc="extracting", unit="file", disable=True if quiet else None
            ):
                with archive.open(info) as source, atomic_write(target.joinpath(*relative)) as out:
                    shutil.copyfileobj(source, out, COPY_BYTES)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # also a member's bad CRC
        raise InputError(
            f"{zip_path}: not a valid zip ({exc}); nothing was extracted, download it again"
        ) from None
    return len(chosen)


def _verify_members(
    archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], *, quiet: bool
) -> None:
    """Decompress every member and check its CRC-32 before the first one is written.

    ``zipfile`` checks a member's CRC only once it is read to the end, so a corrupt payload
    found while extracting would leave the files before it imported and the rest missing.
    This pass reads the archive once more (the second read mostly comes from the page cache).
    """
    for info in tqdm(members, desc="verifying", unit="file", disable=True if quiet else None):
        with archive.open(info) as source:
            while source.read(COPY_BYTES):
                pass


def _link_or_copy(source: Path, dest: Path) -> None:
    """Hard-link ``source`` to ``dest`` where the file system allows, else copy; atomically."""
    if dest.exists() and os.path.samefile(source, dest):
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    temporary = dest.with_name(f".{dest.name}.link")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:  # another file system, or links not supported
        with source.open("rb") as src, atomic_write(dest) as out:
            shutil.copyfileobj(src, out, COPY_BYTES)
        return
    os.replace(temporary, dest)


def import_folder(folder: Path, root: Path, task: Task) -> int:
    """Link or copy a bundle folder into ``<root>/<challenge>/``; returns the file count.

    ``folder`` may be a root holding ``<challenge>/`` or the challenge folder itself.
    """
    tops = {entry.name for entry in folder.iterdir() if entry.is_dir()}
    source = folder / task.challenge if _bundle_offset(tops, task, folder) else folder
    target = root / task.challenge
    if target.exists() and os.path.samefile(source, target):
        return 0
    files = [source / BUNDLE_CONFIG] if (source / BUNDLE_CONFIG).is_file() else []
    for scenario in task.scenarios:
        for directory, _, names in os.walk(source / scenario, followlinks=True):
            files.extend(Path(directory) / name for name in names)
    for path in files:
        _link_or_copy(path, target / path.relative_to(source))
    return len(files)


def _tar_members(
    tar: tarfile.TarFile, archive: Path, entry: str, is_dir: bool
) -> list[tuple[tarfile.TarInfo, tuple[str, ...]]]:
    """``(member, path under the target)`` of the entry to extract, every member checked first."""
    files = []
    for member in tar.getmembers():
        parts = safe_member_parts(member.name, archive)
        if not (member.isreg() or member.isdir()):
            raise _refuse_special(archive, member.name)
        if member.isreg() and parts:
            files.append((member, parts))
    found = []
    for member, parts in files:
        if is_dir and entry in parts[:-1]:
            depth = parts.index(entry)
            found.append((depth, member, parts[depth:]))
        elif not is_dir and parts[-1] == entry:
            found.append((len(parts) - 1, member, parts[-1:]))
    if not found:
        kind = "folder" if is_dir else "file"
        raise InputError(f"{archive}: no {kind} {entry} inside; is it the right download?")
    shallowest = min(depth for depth, _, _ in found)
    chosen = [(member, relative) for depth, member, relative in found if depth == shallowest]
    return chosen if is_dir else chosen[:1]


def extract_tar_entry(archive: Path, folder: Path, entry: str, *, is_dir: bool) -> None:
    """Extract the folder or file named ``entry`` from a tarball into ``folder``, file by file.

    ``entry`` may sit at any depth (mirrors repack archives); the shallowest copy wins and
    lands directly in ``folder``, e.g. ``cifar-10-batches-py/`` or ``dataset_purchase``.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member, relative in _tar_members(tar, archive, entry, is_dir):
                source = tar.extractfile(member)
                if source is None:
                    raise _refuse_special(archive, member.name)
                with source, atomic_write(folder.joinpath(*relative)) as out:
                    shutil.copyfileobj(source, out, COPY_BYTES)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"{archive}: not a readable tar archive ({exc})") from None
