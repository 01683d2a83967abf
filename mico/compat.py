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
from typing import TypeVar

import pandas as pd
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from mico.bundle.splits import read_seed, split_positions
from mico.errors import InputError
from mico.fetch.download import base_complete, fetch_base
from mico.fetch.urls import Fetcher
from mico.tracks import data, sst2
from mico.tracks.data import TensorPairDataset
from mico.tracks.registry import get_task

#: The downloader's default (``download_files.py --retries``) for the one base tarball.
_RETRIES = 5

#: MICO's ``m``: members (and non-members) among a model's challenge points, the default of
#: :meth:`ChallengeDataset.from_path`.
LEN_CHALLENGE = 100

C = TypeVar("C", bound="ChallengeDataset")


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


class ChallengeDataset:
    """Drop-in for ``mico_competition.ChallengeDataset``: MICO's nested ``Subset`` tree.

    ``challenge``/``rest`` are subsets of ``dataset``, ``training``/``evaluation`` subsets of
    ``rest`` and ``nonmember``/``member`` subsets of ``challenge``, exactly as MICO builds them,
    so code written against the competition package sees the same objects.  Seeds that are
    ``None`` leave the subsets that depend on them as ``None``.
    """

    def __init__(
        self,
        dataset: Dataset,
        len_training: int,
        len_challenge: int,
        seed_challenge: int,
        seed_training: int | None = None,
        seed_membership: int | None = None,
    ) -> None:
        self.dataset = dataset
        self.len_training = len_training
        self.len_challenge = len_challenge
        self.len_dataset = len(dataset)  # type: ignore[arg-type]
        pos = split_positions(
            self.len_dataset,
            len_training,
            len_challenge,
            seed_challenge,
            seed_training,
            seed_membership,
        )
        self.challenge = Subset(dataset, pos.challenge.tolist())
        self.rest = Subset(dataset, pos.rest.tolist())
        self.training = self.evaluation = self.member = self.nonmember = None
        if pos.training is not None and pos.evaluation is not None:
            self.training = Subset(self.rest, pos.training.tolist())
            self.evaluation = Subset(self.rest, pos.evaluation.tolist())
        if pos.member is not None and pos.nonmember is not None:
            self.nonmember = Subset(self.challenge, pos.nonmember.tolist())
            self.member = Subset(self.challenge, pos.member.tolist())

    @classmethod
    def from_path(
        cls: type[C],
        path: str | Path,
        dataset: Dataset,
        len_training: int,
        len_challenge: int = LEN_CHALLENGE,
    ) -> C:
        """Build from a model folder; ``seed_training``/``seed_membership`` may be absent.

        A classmethod, as MICO's is, so a subclass gets instances of itself.
        """
        path = Path(path)
        seeds = {}
        for name in ("seed_training", "seed_membership"):
            seeds[name] = read_seed(path / name) if (path / name).exists() else None
        return cls(
            dataset,
            len_training,
            len_challenge,
            read_seed(path / "seed_challenge"),
            seeds["seed_training"],
            seeds["seed_membership"],
        )

    def get_challenges(self) -> Subset:
        """The 2m challenge points in challenge order."""
        return self.challenge

    def get_solutions(self) -> list[int]:
        """1 for each challenge point that is a member, in challenge order."""
        if self.member is None:
            raise InputError("solutions need seed_membership (only train models publish it)")
        members = set(self.member.indices)
        return [int(k in members) for k in range(len(self.challenge))]

    def get_train_dataset(self) -> Dataset:
        """What the model trained on: members first, then the rest of its training set."""
        if self.member is None or self.training is None:
            raise InputError("the training set needs seed_training and seed_membership")
        return ConcatDataset([self.member, self.training])

    def get_eval_dataset(self) -> Dataset:
        """Points of ``rest`` the model never saw."""
        if self.evaluation is None:
            raise InputError("the evaluation set needs seed_training")
        return self.evaluation


def subset_dataset_indices(subset: Subset) -> torch.Tensor:
    """Dataset indices of a (possibly nested) ``Subset``, resolving each level of nesting."""
    indices = torch.as_tensor(subset.indices, dtype=torch.long)
    parent = subset.dataset
    while isinstance(parent, Subset):
        indices = torch.as_tensor(parent.indices, dtype=torch.long)[indices]
        parent = parent.dataset
    return indices
