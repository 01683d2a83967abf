"""Which files of a bundle to fetch: all of them, or a part chosen by scenario, phase and count.

The SST-2 bundle is about 300 GB (600 RoBERTa-base models of 499 MB), so ``download_files.py``
takes ``--scenarios``, ``--phases`` and ``--models`` and, before fetching, checks that the model
files fit on the disk.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from mico.fileio import write_text_atomic
from mico.layout import SELECTION_FILE, bundle_model_files, model_ids
from mico.sources import BaseDataset
from mico.tasks import Task


@dataclass(frozen=True)
class Selection:
    """A part of the bundle (``--scenarios``, ``--phases``, ``--models``); empty: all of it.

    ``scenarios`` are suffixes (``inf``, ``hi``, ``lo``) or full names; ``models`` keeps the
    first N models of each chosen phase.
    """

    scenarios: tuple[str, ...] = ()
    phases: tuple[str, ...] = ()
    models: int | None = None

    @property
    def everything(self) -> bool:
        return not self.scenarios and not self.phases and self.models is None

    def check(self, task: Task) -> None:
        """Refuse names the track does not have, naming the valid ones."""
        unknown = [s for s in self.scenarios if task.scenario_name(s) is None]
        if unknown:
            valid = ", ".join(task.scenarios)
            raise ValueError(f"--scenarios: unknown {', '.join(unknown)}; choose from {valid}")
        phases = [phase for phase, _ in task.models_per_phase]
        unknown = [p for p in self.phases if p not in phases]
        if unknown:
            raise ValueError(
                f"--phases: unknown {', '.join(unknown)}; choose from {', '.join(phases)}"
            )
        if self.models is not None and self.models < 1:
            raise ValueError(f"--models must be at least 1, got {self.models}")

    def keeps_scenario(self, task: Task, scenario: str) -> bool:
        """Whether ``scenario`` is selected."""
        return not self.scenarios or scenario in {task.scenario_name(s) for s in self.scenarios}

    def keeps(self, task: Task, scenario: str, phase: str, index: int) -> bool:
        """Whether the ``index``-th model (from 0) of ``scenario``/``phase`` is selected."""
        return (
            self.keeps_scenario(task, scenario)
            and (not self.phases or phase in self.phases)
            and (self.models is None or index < self.models)
        )

    def base_datasets(self, task: Task) -> list[BaseDataset]:
        """The base datasets the selected scenarios read (DDP's scenarios have one each)."""
        parts = [
            part
            for part in task.parts or (task,)
            if any(self.keeps_scenario(task, scenario) for scenario in part.scenarios)
        ]
        return [part.source.base for part in parts]


def record_selection(folder: Path, task: Task, selection: Selection) -> None:
    """Add ``selection`` to the parts of the bundle ``folder`` that were downloaded on purpose
    (``selection.json``), before its first file, so that every script checks the bundle
    against what was asked for (:func:`downloaded_selections`), not against MICO's whole
    layout, which a partial download misses by design."""
    named = Selection(
        tuple(str(task.scenario_name(s)) for s in selection.scenarios),
        selection.phases,
        selection.models,
    )
    parts = downloaded_selections(folder) or []
    if named in parts:
        return
    entries = [asdict(part) for part in (*parts, named)]
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / SELECTION_FILE, json.dumps({"parts": entries}, indent=1) + "\n")


def downloaded_selections(folder: Path) -> list[Selection] | None:
    """The parts recorded by :func:`record_selection`, or ``None`` for a whole bundle."""
    path = folder / SELECTION_FILE
    if not path.is_file():
        return None
    try:
        parts = json.loads(path.read_text(encoding="utf-8"))["parts"]
        return [
            Selection(
                tuple(str(s) for s in part["scenarios"]),
                tuple(str(p) for p in part["phases"]),
                None if part["models"] is None else int(part["models"]),
            )
            for part in parts
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{path} is malformed ({exc}): it records which part of the bundle was downloaded; "
            f"delete it and rerun download_files.py with the same --scenarios/--phases/--models"
        ) from None


def bundle_files(task: Task, selection: Selection | None = None) -> list[str]:
    """Every file of a complete bundle (or of ``selection``), relative to ``<challenge>/``, in
    bundle order.

    Model ids run on across phases (MICO: train 0..99, dev 100..149, final 150..199), so the
    counts of ``task.models_per_phase`` (``bundle.json`` may shrink them) give the folder names.
    """
    selection = selection or Selection()
    paths = []
    for scenario in task.scenarios:
        part = task.at(scenario)
        for phase, _ in part.models_per_phase:
            names = bundle_model_files(phase, part.model_files, part.eval_seeds)
            for index, model in enumerate(model_ids(part.models_per_phase, phase)):
                if selection.keeps(task, scenario, phase, index):
                    paths.extend(f"{scenario}/{phase}/model_{model}/{name}" for name in names)
    return paths


def check_free_space(paths: Sequence[str], task: Task, folder: Path) -> None:
    """Refuse a download whose model files would not fit on ``folder``'s disk.

    The size is estimated from the track's ``model_bytes`` (SST-2: 499 MB a model) and the
    number of weight files to fetch, so no request is needed; tracks without an estimate skip
    the check.
    """
    count, needed = 0, 0
    for part in task.parts or (task,):
        if part.source.model_bytes is None:
            continue
        ends = tuple(f"{scenario}/" for scenario in part.scenarios)
        weights = f"/{part.model_files[-1]}"
        found = sum(1 for path in paths if path.startswith(ends) and path.endswith(weights))
        count, needed = count + found, needed + found * part.source.model_bytes
    if not needed:
        return
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise ValueError(
            f"{count} models to fetch need about {_size(needed)} but {existing} has "
            f"{_size(free)} free: free space, or fetch part of the bundle with --scenarios, "
            "--phases or --models"
        )


def _size(count: int) -> str:
    return tqdm.format_sizeof(count, suffix="B", divisor=1024)
