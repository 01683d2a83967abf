"""Where a track's data comes from: its Hugging Face repository, published zip and base data.

Leaf dataclasses, so that each track's registry entry (:mod:`mico.tracks`) can name its sources
without importing the downloader (:mod:`mico.download`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BaseDataset:
    """A track's base-dataset tarball and what of it lands in ``<data-dir>/<folder>/``.

    ``entry`` is the folder (``is_dir``) or file the track's loader reads; it may sit
    at any depth of the tarball (mirrors repack), the shallowest copy wins.  ``required`` lists
    the files, relative to ``<data-dir>/<folder>``, whose presence means nothing is to be done.
    """

    url: str
    md5: str | None
    folder: str
    entry: str
    is_dir: bool
    required: tuple[str, ...]

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Source:
    """Per-track defaults: the Hugging Face repository, the published zip and the base data."""

    repo_id: str
    archive_name: str
    archive_md5: str
    base: BaseDataset
