"""Which configuration wrote the ``prediction.csv`` files: one set, never a silent mixture.

MICO's ``prediction.csv`` is one line of numbers, with no room for a note, so
``run_lira_mia.py`` records beside the bundle (``<root>/<challenge>/predictions.json``,
:func:`mico.bundle.layout.manifest_path`) the configuration it ran and the SHA-256 of every file it
is about to write, *before* writing them, together with the previous manifest's configuration and
digests. A run killed half-way thus leaves files that match one of two named configurations,
and :func:`check_predictions` (``save_zip.py``) refuses such a mixture in one line naming both;
a file that matches neither (edited, or written by something else) is refused too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from mico.bundle.fileio import write_text_atomic
from mico.bundle.layout import manifest_path
from mico.errors import InputError

FORMAT_VERSION = 1


def digest_text(text: str) -> str:
    """SHA-256 of a file's text as written (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_manifest(
    root: Path, challenge: str, configuration: str, texts: Mapping[Path, str]
) -> None:
    """Record ``configuration`` and the digests of ``texts`` (``{path: content}``, paths under
    ``root``) before they are written, keeping the previous manifest's as ``previous``."""
    path = manifest_path(root, challenge)
    previous = _read(path)
    record = {
        "version": FORMAT_VERSION,
        "configuration": configuration,
        "files": {_key(root, file): digest_text(text) for file, text in texts.items()},
        "previous": None
        if previous is None
        else {"configuration": previous["configuration"], "files": previous["files"]},
    }
    write_text_atomic(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def check_predictions(
    root: Path, challenge: str, files: Mapping[Path, bytes], *, force: bool = False
) -> str | None:
    """A one-line problem if ``files`` (path to content, as the caller read it: ``save_zip.py``
    reads each prediction once) do not all come from the manifest's configuration.

    Returns None when every file matches the last configuration written; a message naming
    both configurations when some still hold the previous one's predictions; a message
    naming the files that match neither.  Without a manifest nothing can be checked, so that
    is a problem too, unless ``force`` (``save_zip.py --force``) accepts the files unchecked.
    """
    path = manifest_path(root, challenge)
    manifest = _read(path)
    if manifest is None:
        if force:
            return None
        return (
            f"{path} is missing, so nothing says which configuration wrote these prediction "
            "files (they may mix several): rerun run_lira_mia.py with the flags you want to "
            "submit, which rebuilds it, or pass --force to zip them unchecked"
        )
    if manifest.get("version") != FORMAT_VERSION:
        return (
            f"{path} has format version {manifest.get('version')!r}, this code reads "
            f"{FORMAT_VERSION}: rerun run_lira_mia.py, which rewrites it with the predictions"
        )
    current, previous = manifest["configuration"], manifest.get("previous") or {}
    old, unknown, new = [], [], 0
    for file, content in files.items():
        key = _key(root, file)
        digest = hashlib.sha256(content).hexdigest()
        if manifest["files"].get(key) == digest:
            new += 1
            continue
        if previous.get("files", {}).get(key) == digest:
            old.append(key)
        else:
            unknown.append(key)
    if old:
        return (
            f"the predictions mix two configurations: {len(old)} files (e.g. {old[0]}) are from "
            f"'{previous['configuration']}', {new} from '{current}' (the run writing them "
            "stopped half-way); rerun run_lira_mia.py"
        )
    if unknown:
        return (
            f"{len(unknown)} prediction files (e.g. {unknown[0]}) were not written by "
            f"'{current}', the configuration {path} records; rerun run_lira_mia.py"
        )
    return None


def _key(root: Path, file: Path) -> str:
    return Path(file).relative_to(root).as_posix()


def _read(path: Path) -> dict | None:
    """The manifest, or None if there is none; an unreadable one is an error naming it."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
            raise InputError("not a manifest")
        str(record["configuration"])
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"{path}: unreadable ({exc}); delete it and rerun run_lira_mia.py"
        ) from None
    return record
