"""MICO's ``load_cifar10`` with MICO's signature and behaviour, for ``mico_competition`` code.

``mico_competition.load_cifar10(dataset_dir=".", download=True)`` downloads CIFAR-10 (through
torchvision) when it is missing; the published 2nd-place scripts rely on that.  The pipeline's
own loaders (:mod:`mico.data`) never touch the network, so that a wrong ``--data-dir`` is a
one-line error rather than a 170 MB download; :func:`load_cifar10` here adds MICO's behaviour
on top, fetching with the project's verified downloader (the track's URL and md5, resumable).
MICO's ``load_purchase100(dataset_dir=".")`` never downloads, so :func:`mico.data.load_purchase100`
is already its drop-in.

It returns the pipeline's :class:`~mico.data.TensorPairDataset`, whose items are
``(features, label)`` pairs as MICO's datasets yield them, so ``DataLoader`` batches match.
"""

from __future__ import annotations

from pathlib import Path

from mico import data
from mico.data import TensorPairDataset
from mico.download import base_complete, fetch_base
from mico.http import Fetcher
from mico.tasks import get_task

#: The downloader's defaults (``download_files.py --jobs/--retries``) for the one base tarball.
_RETRIES = 5


def load_cifar10(dataset_dir: str | Path = ".", download: bool = True) -> TensorPairDataset:
    """MICO's ``load_cifar10``: ``<dataset_dir>/cifar10/cifar-10-batches-py``, train then test.

    With ``download`` (MICO's default) a missing dataset is downloaded and md5-checked first;
    without it, a missing dataset is a one-line ``FileNotFoundError``.
    """
    if download:
        base = get_task("cifar10").source.base
        if not base_complete(Path(dataset_dir) / base.folder, base):
            with Fetcher(jobs=1, retries=_RETRIES, quiet=False) as fetcher:
                fetch_base(base, Path(dataset_dir), None, fetcher)
    return data.load_cifar10(dataset_dir)
