"""``<challenge>/selection.json``: the parts of a bundle downloaded on purpose.

The SST-2 bundle is about 300 GB, so ``download_files.py`` may fetch a part of any bundle
(``--scenarios``, ``--phases``, ``--models``).  A :class:`Selection` names such a part; the
record of the parts fetched lets every script's layout check (:mod:`mico.bundle.check`)
expect what was asked for instead of MICO's whole layout.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mico.bundle.fileio import write_text_atomic
from mico.bundle.layout import SELECTION_FILE
from mico.errors import InputError

if TYPE_CHECKING:
    from mico.tracks.base import Task
    from mico.tracks.sources import BaseDataset


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
            raise InputError(f"--scenarios: unknown {', '.join(unknown)}; choose from {valid}")
        phases = [phase for phase, _ in task.models_per_phase]
        unknown = [p for p in self.phases if p not in phases]
        if unknown:
            raise InputError(
                f"--phases: unknown {', '.join(unknown)}; choose from {', '.join(phases)}"
            )
        if self.models is not None and self.models < 1:
            raise InputError(f"--models must be at least 1, got {self.models}")

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
        raise InputError(
            f"{path} is malformed ({exc}): it records which part of the bundle was downloaded; "
            f"delete it and rerun download_files.py with the same --scenarios/--phases/--models"
        ) from None
