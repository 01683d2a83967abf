"""Whether a bundle is exactly what its task describes: every difference listed at once.

A bundle of 600 model folders is checked before any work, so that a missing seed, a renamed
folder or an extra train model is reported as a list, not as the first crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mico.bundle.layout import (
    PHASES,
    SOLUTION_FILE,
    bundle_model_files,
    challenge_dir,
    is_model_dir_name,
    model_dirs,
    model_id,
    model_ids,
    model_name,
)
from mico.bundle.records import read_solution

if TYPE_CHECKING:
    from mico.tracks.base import Task


def scenario_dirs(root: str | Path, task: Task) -> list[Path]:
    """The scenario folders that exist, in MICO's order (inf, hi, lo); files are ignored."""
    base = challenge_dir(root, task.challenge)
    if not base.is_dir():
        raise FileNotFoundError(
            f"{base} not found: run `python download_files.py --challenge {task.challenge}` "
            f"(add --demo for the offline demo) or pass --root"
        )
    found = [base / name for name in task.scenarios if (base / name).is_dir()]
    if not found:
        raise FileNotFoundError(f"{base}: none of the scenarios {', '.join(task.scenarios)} exist")
    return found


@dataclass(frozen=True)
class LayoutProblem:
    """One thing missing or malformed in a bundle, for listing all problems at once."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def _ids(ids: list[int]) -> str:
    shown = ", ".join(model_name(i) for i in ids[:5])
    return shown + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def check_layout(
    root: str | Path,
    task: Task,
    *,
    need_models: bool = True,
    phases: Sequence[str] = PHASES,
) -> list[LayoutProblem]:
    """Everything that keeps a bundle from being exactly what ``task`` describes.

    A complete bundle has the task's scenarios, each with the model ids MICO's numbering gives
    ``models_per_phase`` (no more, no fewer: an extra train model would silently join the
    shadows, a renamed one would get its prediction in a new folder), and each model its files
    (train models all seeds and ``solution.csv``; ``model.pt`` unless ``need_models`` is off).
    Only ``phases`` are checked (a submission needs dev and final alone).
    """
    base = challenge_dir(root, task.challenge)
    problems: list[LayoutProblem] = []
    if not base.is_dir():
        return [LayoutProblem(base, "challenge folder missing")]
    for name in task.scenarios:
        scenario = base / name
        if not scenario.is_dir():
            problems.append(LayoutProblem(scenario, "scenario folder missing"))
            continue
        for phase in phases:
            problems.extend(_check_phase(scenario / phase, task.at(name), phase, need_models))
    return problems


def _check_phase(folder: Path, task: Task, phase: str, need_models: bool) -> list[LayoutProblem]:
    expected = model_ids(task.models_per_phase, phase)
    found = {model_id(path): path for path in model_dirs(folder.parent, phase)}
    problems = []
    missing = [i for i in expected if i not in found]
    extra = sorted(set(found) - set(expected))
    span = f"model_{expected.start}..model_{expected.stop - 1}" if expected else "none"
    if missing:
        problems.append(LayoutProblem(folder, f"missing {_ids(missing)} (expected {span})"))
    if extra:
        problems.append(LayoutProblem(folder, f"unexpected {_ids(extra)} (expected {span})"))
    if folder.is_dir():
        strays = sorted(
            entry.name
            for entry in folder.iterdir()
            if entry.name.startswith("model_") and not is_model_dir_name(entry.name)
        )
        if strays:
            problems.append(
                LayoutProblem(folder, f"not model_N names: {', '.join(strays[:5])}; rename them")
            )
    required = bundle_model_files(phase, task.model_files if need_models else (), task.eval_seeds)
    for i in expected:
        if i in found:
            problems.extend(
                LayoutProblem(found[i] / file, "missing")
                for file in required
                if not (found[i] / file).is_file()
            )
            if phase == "train" and (found[i] / SOLUTION_FILE).is_file():
                problems.extend(_check_solution(found[i] / SOLUTION_FILE, task))
    return problems


def _check_solution(path: Path, task: Task) -> list[LayoutProblem]:
    """A train solution that does not hold ``2m`` values means the sizes are wrong."""
    try:
        read_solution(path, task.num_challenges)
    except ValueError as exc:
        reason = str(exc).removeprefix(f"{path}: ")
        hint = f"len_challenge={task.len_challenge} means {task.num_challenges} challenge points"
        return [LayoutProblem(path, f"{reason} ({hint}; check bundle.json)")]
    return []
