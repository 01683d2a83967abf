"""MICO's ``load_cifar10`` and ``load_sst2`` with MICO's signatures and behaviour, for
``mico_competition`` code.

``mico_competition.load_cifar10(dataset_dir=".", download=True)`` downloads CIFAR-10 (through
torchvision) when it is missing; the published 2nd-place scripts rely on that.  The pipeline's
own loaders (:mod:`mico.tracks.data`) never touch the network, so that a wrong ``--data-dir`` is a
one-line error rather than a 170 MB download; :func:`load_cifar10` here adds MICO's behaviour
on top, fetching with the project's verified downloader (the track's URL and md5, resumable).
MICO's ``load_purchase100(dataset_dir=".")`` never downloads, so
:func:`mico.tracks.data.load_purchase100` is already its drop-in.

:func:`load_cifar10` returns the pipeline's :class:`~mico.tracks.data.TensorPairDataset`, whose
items are ``(features, label)`` pairs as MICO's datasets yield them, so ``DataLoader`` batches
match.
MICO's ``load_sst2()`` concatenates the ``datasets`` library's GLUE SST-2 train and validation
splits, whose items are ``{"sentence", "label", "idx"}`` dicts; :func:`load_sst2` yields the same
items from the verified parquet tables ``download_files.py --challenge sst2`` stores, without the
``datasets`` package.  (The pipeline itself reads them tokenised, through the SST-2 track.)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from torch.utils.data import ConcatDataset, Dataset

from mico.fetch.download import base_complete, fetch_base
from mico.fetch.urls import Fetcher
from mico.tracks import data, sst2
from mico.tracks.data import TensorPairDataset
from mico.tracks.registry import get_task

#: The downloader's default (``download_files.py --retries``) for the one base tarball.
_RETRIES = 5


def load_cifar10(dataset_dir: str | Path = ".", download: bool = True) -> TensorPairDataset:
    """MICO's ``load_cifar10``: ``<dataset_dir>/cifar10/cifar-10-batches-py``, train then test.

    With ``download`` (MICO's default) a missing dataset is downloaded and md5-checked first;
    without it, a missing dataset is a one-line ``FileNotFoundError``.
    """
    if download:
        _fetch_base("cifar10", Path(dataset_dir))
    return data.load_cifar10(dataset_dir)


def _fetch_base(track: str, dataset_dir: Path) -> None:
    """Download a track's base data into ``dataset_dir`` unless it is complete already."""
    base = get_task(track).source.base
    if not base_complete(dataset_dir / base.folder, base):
        with Fetcher(retries=_RETRIES, quiet=False) as fetcher:
            fetch_base(base, dataset_dir, None, fetcher)


class GlueRows(Dataset):
    """One GLUE SST-2 table as the ``datasets`` library yields it: ``{"sentence": str,
    "label": int, "idx": int}`` per row (``idx`` restarts at 0 in each split, as in GLUE)."""

    def __init__(self, table: pd.DataFrame) -> None:
        self.sentences = table["sentence"].astype(str).tolist()
        self.labels = table["label"].astype(int).tolist()
        self.idx = table["idx"].astype(int).tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, row: int) -> dict[str, object]:
        return {"sentence": self.sentences[row], "label": self.labels[row], "idx": self.idx[row]}


def load_sst2(dataset_dir: str | Path = ".", download: bool = True) -> Dataset:
    """MICO's ``load_sst2()``: GLUE SST-2 train then validation (N = 68221 on the real data),
    from ``<dataset_dir>/sst2/{train,validation}.parquet``.

    MICO's takes no argument (the ``datasets`` cache decides where the data lives); both of
    ours are optional.  With ``download`` a missing copy is fetched and verified first (GLUE's
    row counts, ``idx`` in row order); without it, a missing table is a one-line
    ``FileNotFoundError``.
    """
    folder = Path(dataset_dir)
    if download:
        _fetch_base(sst2.NAME, folder)
    tables = [sst2.read_table(folder / sst2.NAME / name) for name in sst2.TABLES]
    return ConcatDataset([GlueRows(table) for table in tables])
