"""The track registry: one :class:`Task` per MICO track, so no script retypes ``LEN_TRAINING``.

The 2nd-place scripts hard-coded CIFAR-10's ``LEN_TRAINING = 50000`` for Purchase-100 too (the
right value is 150000); every stage here takes a :class:`Task` instead, and asks it for anything
track-specific (architecture, loader, recipe, sources, demo).  Each entry lives in its own module
under :mod:`mico.tracks`.  A bundle may override the sizes with ``<challenge>/bundle.json`` (the
offline demo bundles are smaller than MICO's).
"""

from __future__ import annotations

import json
from pathlib import Path

from mico.layout import bundle_config_path
from mico.tracks import cifar10, purchase100, sst2
from mico.tracks.base import MICO_MODELS_PER_PHASE, PHASES, SCENARIO_SUFFIXES, Task

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
TASKS: dict[str, Task] = {task.name: task for task in (cifar10.TASK, purchase100.TASK, sst2.TASK)}

#: The sizes ``bundle.json`` may set; ``comment`` and ``demo`` are informational.
SIZE_KEYS = ("dataset_len", "len_training", "len_challenge")


def get_task(name: str) -> Task:
    """Look up a track by name, with an error that lists the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(
            f"unknown challenge {name!r}: choose one of {', '.join(sorted(TASKS))}"
        ) from None


def _count(value: object) -> bool:
    """A JSON integer that is not a boolean (``True`` is an ``int`` in Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def load_task(root: str | Path, name: str) -> Task:
    """The track's constants, overridden by ``<root>/<name>/bundle.json`` where it exists.

    The file may set ``dataset_len``, ``len_training``, ``len_challenge`` (positive integers)
    and ``models_per_phase`` (a ``{phase: count}`` object of non-negative integers with at least
    one train model); anything else, a float, a string or a null is an error naming the file,
    so that a typo never silently falls back to MICO's sizes.
    """
    task = get_task(name)
    path = bundle_config_path(root, name)
    if not path.is_file():
        return task
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not readable JSON ({exc}); fix or delete it") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object")
    allowed = {*SIZE_KEYS, "models_per_phase"}
    unknown = set(config) - allowed - {"comment", "demo"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    changes: dict[str, object] = {}
    for key in SIZE_KEYS:
        if key in config:
            value = config[key]
            if not _count(value) or value <= 0:
                raise ValueError(f"{path}: {key} must be a positive integer, got {value!r}")
            changes[key] = value
    if "models_per_phase" in config:
        counts = config["models_per_phase"]
        if not isinstance(counts, dict) or set(counts) != set(PHASES):
            raise ValueError(
                f"{path}: models_per_phase must be an object mapping each of {', '.join(PHASES)} "
                f"to a count, got {counts!r}"
            )
        bad = {k: v for k, v in counts.items() if not _count(v) or v < 0}
        if bad:
            raise ValueError(
                f"{path}: models_per_phase counts must be non-negative integers, got {bad}"
            )
        if counts["train"] < 1:
            raise ValueError(f"{path}: models_per_phase needs at least one train model")
        changes["models_per_phase"] = tuple((phase, counts[phase]) for phase in PHASES)
    return task.replace(**changes)
