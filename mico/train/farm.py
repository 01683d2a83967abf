"""The model farm: train many model folders with a recipe, atomically, resumably, in parallel.

A :class:`ModelJob` says which dataset records a model trains on (in order), which it is
evaluated on, its DP guarantee (its scenario's, from the track entry) and seed, and the extra
files its folder holds (seeds, solution, membership).  :func:`build_models` trains every job
whose folder is not complete and writes::

    <folder>/model.pt     the state_dict as MICO saves it (DP models keep Opacus' "_module."),
                          or the track's own weight files (``task.write_model``; SST-2:
                          config.json + pytorch_model.bin)
    <folder>/epsilon      achieved epsilon at the scenario's delta ("inf": no DP)
    <folder>/accuracy     accuracy on the job's evaluation records
    <folder>/<name>       each of the job's extra files

Each folder is built as ``.<name>.tmp`` beside it and renamed into place when complete, so a
folder that exists is whole; a rerun discards temporary folders of an interrupted run, skips
complete folders and rebuilds incomplete ones.  The offline demo builds its bundles with it;
extra shadow models are built the same way.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import dataclasses
import logging
import multiprocessing
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from mico.bundle.fileio import atomic_write, write_text_atomic
from mico.bundle.layout import ACCURACY_FILE, EPSILON_FILE, MODEL_FILE
from mico.errors import InputError
from mico.tracks.nets import strip_opacus_prefix
from mico.tracks.recipes import Privacy, Recipe
from mico.tracks.registry import Task
from mico.train.engine import accuracy, dp_noise_multiplier, train_model

log = logging.getLogger(__name__)

#: At most this many evaluation records are scored for a model's ``accuracy`` file.
EVAL_LIMIT = 1000

#: From this many pending models on, CPU training uses a process pool by default.
POOL_FROM = 24


#: Each scenario's random stream, by suffix, from which the offline demo's seeds and extra
#: shadows' designs and seeds derive.  Fixed for good: every demo and shadow built so far has
#: its numbers from it.  They are the suffixes' places in the order first used (inf, hi, lo,
#: then ddp), and a new scenario takes a new number: a stream never follows a position, so
#: reordering a track's scenarios changes no seed.
SEED_STREAMS: dict[str, int] = {"inf": 0, "hi": 1, "lo": 2, "ddp": 3}


def seed_stream(suffix: str) -> int:
    """The random stream of the scenarios with ``suffix`` (see :data:`SEED_STREAMS`)."""
    try:
        return SEED_STREAMS[suffix]
    except KeyError:
        raise KeyError(
            f"scenario suffix {suffix!r} has no seed stream: give it a new number in "
            "mico.train.farm.SEED_STREAMS (never reuse or renumber one)"
        ) from None


@dataclass(frozen=True, eq=False)
class ModelJob:
    """One model folder to build.

    ``train_rows``: dataset indices the model trains on, in MICO's order (members, then the
    rest); ``eval_rows``: records it did not train on, for ``accuracy``; ``files``: extra
    ``(name, content)`` files written into the folder; ``noise_multiplier`` is filled in by
    :func:`build_models` (calibrated once per DP target, not once per model).
    """

    folder: Path
    label: str
    train_rows: np.ndarray
    eval_rows: np.ndarray
    #: The scenario's DP guarantee (:meth:`mico.tracks.base.Task.scenario_privacy`), or None.
    privacy: Privacy | None
    train_seed: int
    files: tuple[tuple[str, bytes], ...] = ()
    noise_multiplier: float | None = None

    @property
    def tmp(self) -> Path:
        """The folder it is built in before the rename."""
        return self.folder.with_name(f".{self.folder.name}.tmp")

    def complete(self, weight_files: tuple[str, ...] = (MODEL_FILE,)) -> bool:
        """Whether the folder holds every file this job writes (``weight_files``: the
        track's, ``task.model_files``)."""
        names = (*weight_files, EPSILON_FILE, ACCURACY_FILE, *(name for name, _ in self.files))
        return self.folder.is_dir() and all((self.folder / n).is_file() for n in names)


class Trained(NamedTuple):
    """What training one job produced, before anything is written: the state_dict (on the CPU,
    ``_module.`` prefix kept for DP models), the achieved epsilon and the held-out accuracy."""

    state_dict: dict[str, torch.Tensor]
    epsilon: float
    accuracy: float


def train_job(
    job: ModelJob,
    task: Task,
    recipe: Recipe,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
) -> Trained:
    """Train one job's model and measure it; writes nothing (a Ray worker returns this)."""
    rows = torch.from_numpy(job.train_rows)
    result = train_model(
        task,
        x[rows],
        y[rows],
        recipe,
        privacy=job.privacy,
        noise_multiplier=job.noise_multiplier,
        seed=job.train_seed,
        device=device,
    )
    model = task.architecture().to(device)
    model.load_state_dict(strip_opacus_prefix(result.state_dict))
    held_out = torch.from_numpy(job.eval_rows[:EVAL_LIMIT])
    test_accuracy = accuracy(model, x[held_out], y[held_out], forward=task.forward)
    return Trained(result.state_dict, result.epsilon, test_accuracy)


def write_model_folder(job: ModelJob, task: Task, trained: Trained) -> None:
    """Write a trained job's folder atomically: built as ``.<name>.tmp``, renamed when whole.

    The weights go through the track's ``write_model`` (which may need the architecture's
    config, never its weights: a fresh ``task.architecture()`` serves).

    A failure while writing (a full disk) removes the temporary folder, so nothing partial is
    left, not even hidden.
    """
    if job.tmp.exists():
        shutil.rmtree(job.tmp)
    try:
        job.tmp.mkdir(parents=True)
        for name, content in job.files:
            with atomic_write(job.tmp / name, "wb") as handle:
                handle.write(content)
        task.write_model(job.tmp, task.architecture(), trained.state_dict)
        write_text_atomic(job.tmp / EPSILON_FILE, f"{trained.epsilon!r}\n")
        write_text_atomic(job.tmp / ACCURACY_FILE, f"{trained.accuracy!r}\n")
        os.replace(job.tmp, job.folder)
    except BaseException:
        shutil.rmtree(job.tmp, ignore_errors=True)
        raise


def build_model_folder(
    job: ModelJob,
    task: Task,
    recipe: Recipe,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
) -> None:
    """Train one model and write its folder atomically (see the module docstring)."""
    write_model_folder(job, task, train_job(job, task, recipe, x, y, device))


def pending_jobs(
    jobs: Sequence[ModelJob], weight_files: tuple[str, ...] = (MODEL_FILE,)
) -> list[ModelJob]:
    """The jobs still to build; temporary and incomplete folders are removed on the way."""
    pending = []
    for job in jobs:
        if job.tmp.exists():
            log.info("discarding %s left by an interrupted run", job.tmp)
            shutil.rmtree(job.tmp)
        if job.complete(weight_files):
            continue
        if job.folder.exists():  # incomplete although renamed: files were removed by hand
            log.warning("rebuilding incomplete %s", job.folder)
            shutil.rmtree(job.folder)
        pending.append(job)
    return pending


def with_noise(jobs: Sequence[ModelJob], recipe: Recipe) -> list[ModelJob]:
    """The jobs with their DP noise multiplier filled in, calibrated once per (training-set
    size, guarantee): the PRV accountant takes seconds, a pool of workers would repeat it.

    Raises ``InputError`` naming the target when the accountant cannot reach it.
    """
    noise: dict[tuple[int, Privacy], float] = {}
    for job in jobs:
        key = (len(job.train_rows), job.privacy)
        if job.privacy is None or key in noise:
            continue
        try:
            noise[key] = dp_noise_multiplier(recipe, len(job.train_rows), job.privacy)
        except ValueError as exc:
            raise InputError(
                f"epsilon {job.privacy.epsilon} cannot be reached with {key[0]} records and "
                f"{recipe.epochs} epochs (PRV accountant: {exc}); raise the epsilon or change "
                "the recipe"
            ) from None
    return [
        dataclasses.replace(job, noise_multiplier=noise.get((len(job.train_rows), job.privacy)))
        for job in jobs
    ]


def default_workers(device: torch.device, pending: int) -> int:
    """Worker processes for CPU training: one per core (each single-threaded), at most 4.

    Small MLP/CNN batches use two threads poorly, and one thread per process keeps a shared
    machine from stalling OpenMP barriers; small runs stay in-process (spawning costs seconds).
    """
    if device.type != "cpu" or pending < POOL_FROM:
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def build_models(
    jobs: Sequence[ModelJob],
    task: Task,
    recipe: Recipe,
    data_dir: Path,
    *,
    device: torch.device,
    workers: int = 0,
    desc: str = "models",
) -> int:
    """Train every job whose folder is not complete; returns how many were built.

    ``workers`` processes train in parallel (0: :func:`default_workers`); each loads the base
    dataset from ``data_dir`` once.
    """
    pending = with_noise(pending_jobs(jobs, task.model_files), recipe)
    if not pending:
        return 0
    workers = max(1, min(workers or default_workers(device, len(pending)), len(pending)))
    log.info(
        "training %d of %d models (%s, %d epochs) on %s with %d worker%s",
        len(pending),
        len(jobs),
        task.name,
        recipe.epochs,
        device,
        workers,
        "s" if workers > 1 else "",
    )
    with tqdm(total=len(pending), desc=desc, unit="model", disable=None) as bar:
        if workers == 1:
            dataset = task.load_dataset(data_dir)
            x, y = dataset.x.to(device), dataset.y.to(device)
            for job in pending:
                bar.set_postfix_str(job.label)
                build_model_folder(job, task, recipe, x, y, device)
                bar.update()
        else:
            _run_pool(pending, task, recipe, data_dir, device, workers, bar)
    return len(pending)


def _run_pool(
    jobs: list[ModelJob],
    task: Task,
    recipe: Recipe,
    data_dir: Path,
    device: torch.device,
    workers: int,
    bar: tqdm,
) -> None:
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # fork after OpenMP use can hang
    with concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(task, data_dir, threads),
    ) as pool:
        futures = [pool.submit(_worker_build, job, recipe, str(device)) for job in jobs]
        try:
            for future in concurrent.futures.as_completed(futures):
                bar.set_postfix_str(future.result().label)
                bar.update()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _keep_freed_memory() -> None:
    """Make glibc's malloc reuse freed memory in this worker process instead of unmapping it.

    DP-SGD on the CNN allocates ~100 MB of per-sample gradients per physical batch; glibc serves
    blocks that large with fresh mappings, so every batch paid for page faults (a quarter of
    the CNN's DP-SGD time, measured as system time).  Only worker processes do this; elsewhere
    (other C libraries, other systems) it is skipped.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    mallopt(m_mmap_max, 0)
    mallopt(m_trim_threshold, 2**30)


#: Per-process state of a pool worker (its task and copy of the dataset); set by _init_worker.
_WORKER: dict[str, object] = {}


def _init_worker(task: Task, data_dir: Path, threads: int) -> None:
    torch.set_num_threads(threads)
    _keep_freed_memory()
    dataset = task.load_dataset(data_dir)
    _WORKER.update(task=task, x=dataset.x, y=dataset.y)


def _worker_build(job: ModelJob, recipe: Recipe, device: str) -> ModelJob:
    task, x, y = _WORKER["task"], _WORKER["x"], _WORKER["y"]
    build_model_folder(job, task, recipe, x, y, torch.device(device))  # type: ignore[arg-type]
    return job
