"""The track registry: one :class:`Task` per MICO track, so no script retypes ``LEN_TRAINING``.

The 2nd-place scripts hard-coded CIFAR-10's ``LEN_TRAINING = 50000`` for Purchase-100 too (the
right value is 150000); every stage here takes a :class:`Task` instead, and asks it for anything
track-specific (architecture, loader, recipe, sources, demo).  Each entry lives in its own module
under :mod:`mico.tracks`.  A bundle may override the sizes with ``<challenge>/bundle.json`` (the
offline demo bundles are smaller than MICO's).
"""

from __future__ import annotations

from pathlib import Path

from mico.bundle.config import read_bundle_config
from mico.bundle.layout import PHASES
from mico.errors import InputError
from mico.tracks import cifar10, ddp, purchase100, sst2
from mico.tracks.base import MICO_MODELS_PER_PHASE, SCENARIO_SUFFIXES, Task

__all__ = [
    "MICO_MODELS_PER_PHASE",
    "PHASES",
    "SCENARIO_SUFFIXES",
    "TASKS",
    "Task",
    "get_task",
    "load_task",
]

#: Every track by name.  A new track is a module under mico/tracks and one entry here.
TASKS: dict[str, Task] = {
    task.name: task for task in (cifar10.TASK, purchase100.TASK, sst2.TASK, ddp.TASK)
}


def get_task(name: str) -> Task:
    """Look up a track by name, with an error that lists the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise InputError(
            f"unknown challenge {name!r}: choose one of {', '.join(sorted(TASKS))}"
        ) from None


def load_task(root: str | Path, name: str) -> Task:
    """The track's constants, overridden by ``<root>/<name>/bundle.json`` where it exists
    (:mod:`mico.bundle.config`: sizes and ``models_per_phase``; a challenge made of several
    tracks, DDP, per scenario, and then it holds those scenarios alone: a demo builds two of
    MICO's three)."""
    task = get_task(name)
    config = read_bundle_config(root, name)
    if config is None:
        return task
    changes = config.sizes.changes()
    if not task.parts:
        if config.scenarios is not None:
            raise InputError(
                f"{config.path}: unknown keys ['scenarios']: {name} has one dataset, so its sizes "
                "are given at the top level"
            )
        return task.replace(**changes)
    if config.scenarios is None:
        return ddp.ddp_challenge(tuple(part.replace(**changes) for part in task.parts))
    named = {scenario: part for part in task.parts for scenario in part.scenarios}
    unknown = sorted(set(config.scenarios) - set(named))
    if unknown:
        raise InputError(
            f"{config.path}: unknown scenarios {unknown}; choose from {', '.join(named)}"
        )
    parts = tuple(
        named[scenario].replace(**{**changes, **sizes.changes()})
        for scenario, sizes in config.scenarios.items()
    )
    return ddp.ddp_challenge(parts)
