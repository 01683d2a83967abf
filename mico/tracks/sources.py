"""Where a track's data comes from: its Hugging Face repository, published zip and base data.

Leaf dataclasses, so that each track's registry entry (:mod:`mico.tracks`) can name its sources
without importing the downloader (:mod:`mico.fetch.download`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RemoteFile:
    """One base-dataset file fetched as it is into ``<data-dir>/<folder>/<path>``: from a
    Hugging Face repository (``repo_id``, ``repo_type``, ``filename`` inside it, ``revision``)
    through huggingface_hub, or from ``--base-url`` under its last name component."""

    path: str
    repo_id: str
    filename: str
    repo_type: str = "model"
    revision: str = "main"

    @property
    def name(self) -> str:
        """The file name a ``--base-url`` mirror serves it under."""
        return self.filename.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class BaseDataset:
    """A track's base-dataset tarball and what of it lands in ``<data-dir>/<folder>/``.

    ``entry`` is the folder (``is_dir``) or file the track's loader reads; it may sit
    at any depth of the tarball (mirrors repack), the shallowest copy wins.  ``required`` lists
    the files, relative to ``<data-dir>/<folder>``, whose presence means nothing is to be done.

    A track whose data are several plain files (parquet tables, tokenizer files) lists them in
    ``files`` instead of a tarball ``url``; ``check(folder)`` then verifies what arrived (row
    counts, index order) and raises ``ValueError`` if it is not the expected data.
    """

    url: str
    md5: str | None
    folder: str
    entry: str
    is_dir: bool
    required: tuple[str, ...]
    files: tuple[RemoteFile, ...] = ()
    check: Callable[[Path], None] | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Source:
    """Per-track defaults: the Hugging Face repository, the published zip and the base data."""

    repo_id: str
    archive_name: str
    archive_md5: str | None
    base: BaseDataset
    #: Folder of the bundle inside the repository ("" when scenarios sit at its top).
    repo_prefix: str = ""
    #: Approximate bytes of one model's weight files, for the free-space check (None: none).
    model_bytes: int | None = None
