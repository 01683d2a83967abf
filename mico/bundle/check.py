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
    BUNDLE_CONFIG,
    PHASES,
    SELECTION_FILE,
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
from mico.bundle.selection import Selection, downloaded_selections
from mico.errors import ProblemsError, plural

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
    whole: bool = False,
) -> list[LayoutProblem]:
    """Everything that keeps a bundle from being exactly what ``task`` describes.

    A complete bundle has the task's scenarios, each with the model ids MICO's numbering gives
    ``models_per_phase`` (no more, no fewer: an extra train model would silently join the
    shadows, a renamed one would get its prediction in a new folder), and each model its files
    (train models all seeds and ``solution.csv``; ``model.pt`` unless ``need_models`` is off).
    Only ``phases`` are checked.  A file where a folder belongs (or the reverse) is named as
    such, not only as missing.

    A bundle downloaded in part (``selection.json``,
    :func:`mico.bundle.selection.record_selection`) is checked against the parts asked for: what
    they name must be there, anything outside MICO's numbering is still refused, and every model
    present is still checked for its files. ``whole`` ignores that record (a submission, or "is
    this bundle complete?").
    """
    base = challenge_dir(root, task.challenge)
    problems: list[LayoutProblem] = []
    if not base.is_dir():
        return [LayoutProblem(base, "challenge folder missing")]
    parts = None if whole else downloaded_selections(base)
    for name in task.scenarios:
        scenario = base / name
        wanted = parts is None or any(part.keeps_scenario(task, name) for part in parts)
        if not scenario.is_dir():
            if wanted:
                what = "a file, not a scenario folder" if scenario.exists() else "missing"
                problems.append(LayoutProblem(scenario, f"scenario folder {what}"))
            continue
        for phase in phases:
            problems.extend(_check_phase(scenario / phase, task, name, phase, need_models, parts))
    return problems


def require_layout(
    root: str | Path,
    task: Task,
    *,
    need_models: bool = True,
    phases: Sequence[str] = PHASES,
) -> None:
    """:func:`check_layout`, run by every script before any work: raise a
    :class:`~mico.errors.ProblemsError` listing every difference, or, for a bundle that is
    not there at all, one line saying how to get it."""
    base = challenge_dir(root, task.challenge)
    if not base.is_dir():
        raise FileNotFoundError(
            f"{base} not found: run `python download_files.py --challenge {task.challenge}` "
            f"(add --demo for the offline demo) or pass --root"
        )
    problems = check_layout(root, task, need_models=need_models, phases=phases)
    if problems:
        config = (base / BUNDLE_CONFIG).is_file()
        sizes = f"its {BUNDLE_CONFIG}" if config else "MICO's sizes"
        if (base / SELECTION_FILE).is_file():
            sizes += f" (the parts its {SELECTION_FILE} says were downloaded)"
        fix = f", or correct {BUNDLE_CONFIG}" if config else ""
        raise ProblemsError(
            f"{base} differs from the layout {sizes} describes in {plural(len(problems), 'place')} "
            f"(listed above; first: {problems[0]}): restore or re-download what is missing "
            f"(download_files.py), move out what does not belong{fix}; nothing was done",
            problems,
        )


def _check_phase(
    folder: Path,
    whole_task: Task,
    scenario: str,
    phase: str,
    need_models: bool,
    parts: list[Selection] | None,
) -> list[LayoutProblem]:
    task = whole_task.at(scenario)
    numbering = model_ids(task.models_per_phase, phase)
    span = f"model_{numbering.start}..model_{numbering.stop - 1}" if numbering else "none"
    expected = [
        model
        for index, model in enumerate(numbering)
        if parts is None or any(p.keeps(whole_task, scenario, phase, index) for p in parts)
    ]
    if not expected and not folder.exists():
        return []
    if folder.exists() and not folder.is_dir():
        return [LayoutProblem(folder, f"a file where the {phase} folder belongs ({span})")]
    entries = list(folder.iterdir()) if folder.is_dir() else []
    found = {model_id(path): path for path in model_dirs(folder.parent, phase)}
    files = sorted(
        (e for e in entries if is_model_dir_name(e.name) and not e.is_dir()), key=model_id
    )
    problems = [LayoutProblem(e, "a file where a model folder belongs") for e in files]
    missing = [i for i in expected if i not in found and i not in {model_id(e) for e in files}]
    extra = sorted(set(found) - set(numbering))
    if missing:
        problems.append(LayoutProblem(folder, f"missing {_ids(missing)} (expected {span})"))
    if extra:
        problems.append(LayoutProblem(folder, f"unexpected {_ids(extra)} (expected {span})"))
    strays = sorted(
        e.name for e in entries if e.name.startswith("model_") and not is_model_dir_name(e.name)
    )
    if strays:
        problems.append(
            LayoutProblem(folder, f"not model_N names: {', '.join(strays[:5])}; rename them")
        )
    required = bundle_model_files(phase, task.model_files if need_models else (), task.eval_seeds)
    for i in numbering:
        if i in found:
            problems.extend(_check_files(found[i], required))
            if phase == "train" and (found[i] / SOLUTION_FILE).is_file():
                problems.extend(_check_solution(found[i] / SOLUTION_FILE, task))
    return problems


def _check_files(folder: Path, required: Sequence[str]) -> list[LayoutProblem]:
    """A model folder's files that are missing, or are folders where files belong."""
    problems = []
    for name in required:
        path = folder / name
        if not path.is_file():
            what = "a folder, not a file" if path.is_dir() else "missing"
            problems.append(LayoutProblem(path, what))
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
