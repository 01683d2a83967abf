"""The on-disk challenge layout: scenarios, phases, model folders, seeds, solutions, predictions.

::

    <root>/<challenge>/[bundle.json]
      <challenge>_{inf,hi,lo}/{train,dev,final}/model_N/
        seed_challenge            every model
        seed_training, seed_membership, solution.csv      train models only
        model.pt                  the target's state_dict
        prediction.csv            written by run_lira_mia.py

Every reader names the offending path in its error, because a bundle of 600 folders is too
large to debug from a bare ``ValueError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mico.fileio import write_text_atomic
from mico.splits import Splits, read_seed, split_indices
from mico.tasks import PHASES, Task

_MODEL_DIR = re.compile(r"^model_(\d+)$")
SEED_FILES = ("seed_challenge", "seed_training", "seed_membership")


def challenge_dir(root: str | Path, task: Task) -> Path:
    """``<root>/<challenge>``, the folder that holds the three scenarios."""
    return Path(root) / task.name


def scenario_dirs(root: str | Path, task: Task) -> list[Path]:
    """The scenario folders that exist, in MICO's order (inf, hi, lo); files are ignored."""
    base = challenge_dir(root, task)
    if not base.is_dir():
        raise FileNotFoundError(
            f"{base} not found: run `python download_files.py --challenge {task.name}` "
            f"(add --demo for the offline demo) or pass --root"
        )
    found = [base / name for name in task.scenarios if (base / name).is_dir()]
    if not found:
        raise FileNotFoundError(f"{base}: none of the scenarios {', '.join(task.scenarios)} exist")
    return found


def model_dirs(scenario: str | Path, phase: str) -> list[Path]:
    """``model_N`` folders of one phase in numeric order (``model_2`` before ``model_10``)."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}: choose one of {', '.join(PHASES)}")
    folder = Path(scenario) / phase
    if not folder.is_dir():
        return []
    numbered = []
    for entry in folder.iterdir():
        match = _MODEL_DIR.match(entry.name)
        if match and entry.is_dir():
            numbered.append((int(match.group(1)), entry))
    return [entry for _, entry in sorted(numbered)]


def model_id(model_dir: str | Path) -> int:
    """The ``N`` of ``model_N``."""
    match = _MODEL_DIR.match(Path(model_dir).name)
    if not match:
        raise ValueError(f"{model_dir}: not a model_N folder")
    return int(match.group(1))


def read_seeds(model_dir: str | Path) -> dict[str, int | None]:
    """The three seeds of a model; ``seed_challenge`` is required, the others may be absent."""
    model_dir = Path(model_dir)
    seeds: dict[str, int | None] = {"seed_challenge": read_seed(model_dir / "seed_challenge")}
    for name in SEED_FILES[1:]:
        seeds[name] = read_seed(model_dir / name) if (model_dir / name).exists() else None
    return seeds


def model_splits(model_dir: str | Path, task: Task) -> Splits:
    """Reconstruct a model's splits from its seed files (dataset-index arrays)."""
    seeds = read_seeds(model_dir)
    return split_indices(
        task.dataset_len,
        task.len_training,
        task.len_challenge,
        seeds["seed_challenge"],  # type: ignore[arg-type]
        seeds["seed_training"],
        seeds["seed_membership"],
    )


def _read_csv_line(path: Path, length: int, what: str) -> list[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} missing") from None
    lines = [line for line in text.splitlines() if line.strip()]  # MICO wrote "\r\n" endings
    if len(lines) != 1:
        raise ValueError(f"{path}: expected one line of {length} values, got {len(lines)} lines")
    fields = [field.strip() for field in lines[0].split(",")]
    if len(fields) != length:
        raise ValueError(f"{path}: expected {length} comma-separated values, got {len(fields)}")
    return fields


def read_solution(path: str | Path, length: int) -> np.ndarray:
    """A ``solution.csv`` (0/1 per challenge point, challenge order) as int8 [length]."""
    path = Path(path)
    if path.is_dir():
        path = path / "solution.csv"
    fields = _read_csv_line(path, length, "solution")
    if any(field not in ("0", "1") for field in fields):
        raise ValueError(f"{path}: solution values must be 0 or 1")
    return np.array([int(field) for field in fields], dtype=np.int8)


def read_prediction(path: str | Path, length: int) -> np.ndarray:
    """A ``prediction.csv`` as float64 [length]; values must be finite and in [0, 1]."""
    path = Path(path)
    if path.is_dir():
        path = path / "prediction.csv"
    fields = _read_csv_line(path, length, "prediction")
    try:
        values = np.array([float(field) for field in fields], dtype=np.float64)
    except ValueError:
        raise ValueError(f"{path}: predictions must be numbers") from None
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        raise ValueError(f"{path}: {int(bad.sum())} values are NaN or outside [0, 1]")
    return values


def write_prediction(path: str | Path, values: np.ndarray) -> None:
    """Write one line of comma-separated confidences atomically (MICO's ``prediction.csv``).

    ``repr``-exact floats keep ties and low-FPR ordering intact; the official scorer reads them
    with ``float``.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
        raise ValueError(f"{path}: refusing to write predictions that are not finite in [0, 1]")
    path = Path(path)
    if path.is_dir():
        path = path / "prediction.csv"
    write_text_atomic(path, ",".join(repr(float(v)) for v in values) + "\n")


def write_solution(path: str | Path, solution: np.ndarray) -> None:
    """Write a ``solution.csv`` as MICO did (``csv.writer``: one line ending in ``\\r\\n``)."""
    write_text_atomic(path, ",".join(str(int(v)) for v in solution) + "\r\n")


@dataclass(frozen=True)
class LayoutProblem:
    """One thing missing or malformed in a bundle, for listing all problems at once."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def check_layout(root: str | Path, task: Task, *, need_models: bool = True) -> list[LayoutProblem]:
    """Every missing scenario, model folder, seed, solution or model file of a bundle.

    A complete bundle has the task's three scenarios, each with ``expected_models(phase)``
    models per phase; train models need all seeds and ``solution.csv``.
    """
    base = challenge_dir(root, task)
    problems: list[LayoutProblem] = []
    if not base.is_dir():
        return [LayoutProblem(base, "challenge folder missing")]
    for name in task.scenarios:
        scenario = base / name
        if not scenario.is_dir():
            problems.append(LayoutProblem(scenario, "scenario folder missing"))
            continue
        for phase in PHASES:
            found = model_dirs(scenario, phase)
            expected = task.expected_models(phase)
            if len(found) != expected:
                problem = f"{len(found)} model folders, expected {expected}"
                problems.append(LayoutProblem(scenario / phase, problem))
            required = ["seed_challenge"] + (["model.pt"] if need_models else [])
            if phase == "train":
                required += ["seed_training", "seed_membership", "solution.csv"]
            for folder in found:
                problems.extend(
                    LayoutProblem(folder / file, "missing")
                    for file in required
                    if not (folder / file).is_file()
                )
    return problems
