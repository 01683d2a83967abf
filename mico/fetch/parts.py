"""Which files of a bundle to fetch: all of them, or a part chosen by scenario, phase and count.

The SST-2 bundle is about 300 GB (600 RoBERTa-base models of 499 MB), so ``download_files.py``
takes ``--scenarios``, ``--phases`` and ``--models`` and, before fetching, checks that the model
files fit on the disk.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from mico.bundle.layout import bundle_model_files, model_ids
from mico.bundle.selection import Selection
from mico.errors import InputError
from mico.tracks.registry import Task


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
        raise InputError(
            f"{count} models to fetch need about {_size(needed)} but {existing} has "
            f"{_size(free)} free: free space, or fetch part of the bundle with --scenarios, "
            "--phases or --models"
        )


def _size(count: int) -> str:
    return tqdm.format_sizeof(count, suffix="B", divisor=1024)
