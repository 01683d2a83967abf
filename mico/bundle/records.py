"""The files of a bundle's model folders: seeds, solutions and predictions, read and written.

Paths and file names come from :mod:`mico.bundle.layout`.  Every reader names the offending path
in its error, because a bundle of 600 folders is too large to debug from a bare ``ValueError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mico.bundle.fileio import write_text_atomic
from mico.bundle.layout import (
    PREDICTION_FILE,
    SEED_FILES,
    SOLUTION_FILE,
)
from mico.bundle.splits import Splits, read_seed, split_indices
from mico.errors import InputError

if TYPE_CHECKING:
    from mico.tracks.base import Task


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
    task = task.at(Path(model_dir).parent.parent.name)
    return split_indices(
        task.dataset_len,
        task.len_training,
        task.len_challenge,
        seeds["seed_challenge"],  # type: ignore[arg-type]
        seeds["seed_training"],
        seeds["seed_membership"],
    )


def _read_csv_line(path: Path, length: int, what: str, raw: bytes | None = None) -> list[str]:
    """The ``length`` fields of a one-line CSV (``raw``: its bytes, if already read); MICO's
    files are ASCII."""
    try:
        raw = path.read_bytes() if raw is None else raw
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} missing") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not a text {what} file (byte {raw[exc.start]:#04x} at offset {exc.start})"
        ) from None
    lines = [line for line in text.splitlines() if line.strip()]  # MICO wrote "\r\n" endings
    if len(lines) != 1:
        raise InputError(f"{path}: expected one line of {length} values, got {len(lines)} lines")
    fields = [field.strip() for field in lines[0].split(",")]
    if len(fields) != length:
        raise InputError(f"{path}: expected {length} comma-separated values, got {len(fields)}")
    return fields


def read_solution(path: str | Path, length: int, raw: bytes | None = None) -> np.ndarray:
    """A ``solution.csv`` (0/1 per challenge point, challenge order) as int8 [length];
    ``raw``: its bytes, where the caller has read them already."""
    path = Path(path)
    if raw is None and path.is_dir():
        path = path / SOLUTION_FILE
    fields = _read_csv_line(path, length, "solution", raw)
    if any(field not in ("0", "1") for field in fields):
        raise InputError(f"{path}: solution values must be 0 or 1")
    solution = np.array([int(field) for field in fields], dtype=np.int8)
    members = int(solution.sum())
    if members != length // 2:  # MICO splits the challenge points in halves, m and m
        raise InputError(
            f"{path}: {members} of {length} values are 1, a MICO solution has exactly "
            f"{length // 2} members and {length // 2} non-members; is it the right file?"
        )
    return solution


def read_prediction(path: str | Path, length: int, raw: bytes | None = None) -> np.ndarray:
    """A ``prediction.csv`` as float64 [length]; values must be finite and in [0, 1].
    ``raw``: its bytes, where the caller has read them already."""
    path = Path(path)
    if raw is None and path.is_dir():
        path = path / PREDICTION_FILE
    fields = _read_csv_line(path, length, "prediction", raw)
    try:
        values = np.array([float(field) for field in fields], dtype=np.float64)
    except ValueError:
        raise InputError(f"{path}: predictions must be numbers") from None
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        raise InputError(f"{path}: {int(bad.sum())} values are NaN or outside [0, 1]")
    return values


def write_prediction(path: str | Path, values: np.ndarray) -> None:
    """Write one line of comma-separated confidences atomically (MICO's ``prediction.csv``).

    ``repr``-exact floats keep ties and low-FPR ordering intact; the official scorer reads them
    with ``float``.
    """
    path = Path(path)
    text = prediction_line(values, path)
    if path.is_dir():
        path = path / PREDICTION_FILE
    write_text_atomic(path, text)


def prediction_line(values: np.ndarray, where: str | Path = "prediction") -> str:
    """The exact text :func:`write_prediction` writes; ValueError naming ``where`` if the
    values are not finite in [0, 1]."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
        raise InputError(f"{where}: refusing to write predictions that are not finite in [0, 1]")
    return ",".join(repr(float(v)) for v in values) + "\n"


def solution_line(solution: np.ndarray) -> str:
    """A ``solution.csv``'s content as MICO wrote it (``csv.writer``: one line ending in
    ``\\r\\n``)."""
    return ",".join(str(int(v)) for v in solution) + "\r\n"


def write_solution(path: str | Path, solution: np.ndarray) -> None:
    """Write a ``solution.csv`` atomically, as MICO did (see :func:`solution_line`)."""
    write_text_atomic(path, solution_line(solution))
