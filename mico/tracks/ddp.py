"""The DP distinguisher (DDP): MICO's fourth task, one low-epsilon scenario per dataset.

Facts (MICO's ``starting-kit/ddp.ipynb`` and training scripts, and the Hugging Face copy
``szanella/MICO-DDP``):

* scenarios ``cifar10_ddp``, ``purchase100_ddp`` and ``sst2_ddp`` under ``ddp/``, each with
  MICO's 100 train, 50 dev and 50 final models and 200 challenge points a model;
* every model is trained exactly as the ``lo`` scenario of its dataset (``train_*_ddp.sh`` is
  byte-identical to ``train_*_lo.sh``: DP-SGD at epsilon 4, delta 1e-5);
* ``len_training``: 50000, 150000 and 67349, as in the ordinary tracks;
* dev and final models reveal ``seed_training`` besides ``seed_challenge``: their whole
  training set except which 100 of their 200 challenge points are members.  ``training`` is
  drawn from ``rest``, which excludes all 200 challenge points, so a dev/final model's training
  set is exactly the revealed ``training`` plus its 100 unknown members.

Each scenario is a copy of its dataset's track (loader, architecture, recipe, demo presets)
living under ``ddp/``, so every stage handles it through the registry; the challenge itself
is the :class:`~mico.tracks.base.Task` whose ``parts`` they are.
"""

from __future__ import annotations

import dataclasses

from mico.tracks import cifar10, purchase100, sst2
from mico.tracks.base import Task

NAME = "ddp"

#: The Hugging Face copy of the bundle (files under ``ddp/<scenario>/...``) and MICO's archive.
_REPO_ID = "szanella/MICO-DDP"
_ARCHIVE = ("ddp.tar.gz", "1b9587c2bdf7867e43fb9da345f395eb")

#: What ``--demo`` builds: the two small datasets (a RoBERTa demo would dominate the run time).
DEMO_PARTS = ("cifar10", "purchase100")

#: Dev and final models reveal the non-challenge part of their training set.
DDP_EVAL_SEEDS = ("seed_challenge", "seed_training")


def ddp_scenario(track: Task) -> Task:
    """``<track>_ddp``: ``track``'s data, model and recipe, under ``ddp/``, with the guarantee of
    its ``lo`` scenario (epsilon 4, delta 1e-5, the track's clipping)."""
    source = dataclasses.replace(
        track.source,
        repo_id=_REPO_ID,
        archive_name=_ARCHIVE[0],
        archive_md5=_ARCHIVE[1],
        repo_prefix=f"{NAME}/",
    )
    privacy = ((NAME, dict(track.privacy)["lo"]),)
    return track.replace(group=NAME, privacy=privacy, eval_seeds=DDP_EVAL_SEEDS, source=source)


def ddp_challenge(parts: tuple[Task, ...]) -> Task:
    """The challenge made of ``parts``.  Its own track fields are those of the first part and
    are never used for a scenario: every stage asks :meth:`Task.at` for the scenario's part."""
    return dataclasses.replace(
        parts[0],
        name=NAME,
        group="",
        parts=parts,
        demo_parts=DEMO_PARTS,
    )


#: The scenarios, in MICO's order.
PARTS: tuple[Task, ...] = tuple(
    ddp_scenario(t) for t in (cifar10.TASK, purchase100.TASK, sst2.TASK)
)

TASK = ddp_challenge(PARTS)
