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

from mico.bundle.layout import bundle_config_path
from mico.tracks import cifar10, ddp, purchase100, sst2
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
TASKS: dict[str, Task] = {
    task.name: task for task in (cifar10.TASK, purchase100.TASK, sst2.TASK, ddp.TASK)
}

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
    so that a typo never silently falls back to MICO's sizes.  A challenge made of several
    tracks (DDP) takes the sizes per scenario, ``"scenarios": {"cifar10_ddp": {sizes}, ...}``,
    and then holds those scenarios alone (a demo builds two of MICO's three).
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
    allowed = {*SIZE_KEYS, "models_per_phase", *(("scenarios",) if task.parts else ())}
    unknown = set(config) - allowed - {"comment", "demo"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    changes = _sizes(config, path)
    if "models_per_phase" in config:
        changes["models_per_phase"] = _models_per_phase(config["models_per_phase"], path)
    if not task.parts:
        return task.replace(**changes)
    per_scenario = config.get("scenarios")
    if per_scenario is None:
        parts = tuple(part.replace(**changes) for part in task.parts)
    else:
        if not isinstance(per_scenario, dict) or not per_scenario:
            raise ValueError(f"{path}: scenarios must map scenario names to their sizes")
        named = {scenario: part for part in task.parts for scenario in part.scenarios}
        unknown = sorted(set(per_scenario) - set(named))
        if unknown:
            raise ValueError(f"{path}: unknown scenarios {unknown}; choose from {', '.join(named)}")
        parts = tuple(
            named[scenario].replace(**{**changes, **_scenario_sizes(sizes, path, scenario)})
            for scenario, sizes in per_scenario.items()
        )
    return ddp.ddp_challenge(parts)


def _scenario_sizes(config: object, path: Path, scenario: str) -> dict[str, object]:
    """One scenario's entry of a ``bundle.json``'s ``scenarios``: sizes and models_per_phase."""
    if not isinstance(config, dict):
        raise ValueError(f"{path}: {scenario}: expected an object of sizes")
    allowed = [*SIZE_KEYS, "models_per_phase"]
    if extra := set(config) - set(allowed):
        raise ValueError(f"{path}: {scenario}: unknown keys {sorted(extra)}; allowed: {allowed}")
    changes = _sizes(config, path, scenario)
    if "models_per_phase" in config:
        changes["models_per_phase"] = _models_per_phase(config["models_per_phase"], path)
    return changes


def _sizes(config: dict, path: Path, scenario: str = "") -> dict[str, object]:
    """The ``SIZE_KEYS`` a ``bundle.json`` object sets, checked."""
    where = f"{path}: {scenario + ': ' if scenario else ''}"
    changes: dict[str, object] = {}
    for key in SIZE_KEYS:
        if key in config:
            value = config[key]
            if not _count(value) or value <= 0:
                raise ValueError(f"{where}{key} must be a positive integer, got {value!r}")
            changes[key] = value
    return changes


def _models_per_phase(counts: object, path: Path) -> tuple[tuple[str, int], ...]:
    """``models_per_phase`` of a ``bundle.json``, checked."""
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
    return tuple((phase, counts[phase]) for phase in PHASES)
