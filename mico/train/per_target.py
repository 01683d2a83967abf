"""Per-target models (``--attack reference``): DP's neighbouring datasets, trained.

"Reference models" in the attack's name and on disk (``<root>/reference_models/``, kept so that
existing roots reuse what they trained); "per-target models" in the code, because a reference
means ground truth (``--truth``) and shadow models elsewhere.

DDP reveals each dev/final model's ``seed_training``, so its training set is known except for
which 100 of its 200 challenge points are members (:mod:`mico.tracks.ddp`).  For every target
(train models too, so that the attack can be scored and its variant chosen), ``K`` reference
models are trained with the target's recipe on its revealed ``training`` set plus half of its
challenge points.  They come in complementary pairs: pair ``i`` draws a random half ``H_i`` of
the 200 points (seeded by the target), one model trains on ``H_i``, the other on the rest.  So

* every challenge point is IN for exactly ``K/2`` references and OUT for ``K/2``;
* every reference trains on exactly ``len_training`` records, like the target;
* a reference's data differ from the target's only in the challenge points: the closest thing
  to the neighbouring datasets of the DP definition;
* growing ``K`` adds pairs and keeps the models already trained (the design is prefix-stable).

Models are built by the model farm (:mod:`mico.train.farm`; Ray with ``ray``), written atomically,
and skipped when complete, so a rerun trains nothing twice.  Their margins on the target's
challenge points are cached per target (:func:`mico.bundle.layout.per_target_cache_path`), validated
against the points and the model files, and attached to the phase's
:class:`~mico.outputs.store.PhaseScores` for :mod:`mico.attacks.reference`.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from mico.attacks.reference import check_count
from mico.bundle.digests import DigestStore, files_digest
from mico.bundle.layout import (
    SOLUTION_FILE,
    data_root,
    digests_path,
    model_dir,
    model_name,
    per_target_cache_path,
    per_target_models_dir,
)
from mico.bundle.records import read_seeds, read_solution, solution_line
from mico.bundle.splits import split_indices
from mico.errors import InputError
from mico.outputs.inference import model_outputs
from mico.outputs.store import (
    CacheKey,
    ModelOutputs,
    ScenarioScores,
    load_cached,
    points_digest,
    save_cached,
)
from mico.tracks.data import TensorPairDataset
from mico.tracks.devices import resolve_device
from mico.tracks.models import load_model
from mico.tracks.recipes import Privacy, Recipe
from mico.tracks.registry import Task
from mico.train.farm import ModelJob, build_models
from mico.train.shadows import resolve_recipe

if TYPE_CHECKING:
    from mico.attacks.run import RunOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PerTargetOptions:
    """How to build references: ``count`` a target (even), the bundle ``root``, where base data
    and caches live, the device, local workers or a Ray ``address``, and the seed."""

    count: int
    root: Path
    data_dir: Path
    preds: Path
    device: torch.device
    workers: int = 0
    ray: str | None = None
    seed: int = 0
    batch_size: int = 512


def per_target_keep(seed: int, scenario: str, model: int, count: int, length: int) -> np.ndarray:
    """bool ``[count, length]``: reference ``r`` trains on challenge point ``k``.

    Row ``2i`` is a random half of the points (exactly ``length // 2``), row ``2i + 1`` its
    complement; pair ``i``'s half depends on ``(seed, scenario, model, i)`` alone.
    """
    keep = np.zeros((count, length), dtype=bool)
    tag = zlib.crc32(scenario.encode())
    for pair in range(count // 2):
        rng = np.random.default_rng([seed, 0x4EF, tag, model, pair])
        keep[2 * pair, rng.permutation(length)[: length // 2]] = True
        keep[2 * pair + 1] = ~keep[2 * pair]
    return keep


@dataclass(frozen=True)
class Target:
    """One target's revealed data: challenge points [2m] (challenge order), its non-challenge
    training records and records it never saw (for the references' accuracy)."""

    phase: str
    id: int
    challenge: np.ndarray
    training: np.ndarray
    evaluation: np.ndarray


def read_target(root: Path, task: Task, scenario: str, phase: str, model: int) -> Target:
    """A target's splits from its seeds; refuses a model whose training set is not revealed."""
    folder = model_dir(root, task.challenge, scenario, phase, model)
    seeds = read_seeds(folder)
    if seeds["seed_training"] is None:
        raise InputError(
            f"{folder}: no seed_training, so its training set is not revealed; --attack "
            "reference needs it for every target (the DDP bundles publish it)"
        )
    part = task.at(scenario)
    splits = split_indices(
        part.dataset_len,
        part.len_training,
        part.len_challenge,
        seeds["seed_challenge"],  # type: ignore[arg-type]
        seeds["seed_training"],
        None,
    )
    assert splits.training is not None and splits.evaluation is not None
    return Target(phase, model, splits.challenge, splits.training, splits.evaluation)


def per_target_jobs(
    options: PerTargetOptions, task: Task, scenario: str, target: Target, privacy: Privacy | None
) -> list[ModelJob]:
    """The ``count`` reference models of one target (see the module docstring)."""
    keep = per_target_keep(options.seed, scenario, target.id, options.count, len(target.challenge))
    base = per_target_models_dir(options.root, task.challenge, scenario, target.phase, target.id)
    jobs = []
    tag = zlib.crc32(scenario.encode())
    for index, row in enumerate(keep):
        rng = np.random.default_rng([options.seed, 0x5EED, tag, target.id, index])
        jobs.append(
            ModelJob(
                folder=base / model_name(index),
                label=f"{scenario}/{target.phase}/{model_name(target.id)}/ref_{index}",
                # MICO's order: members (here the kept challenge points), then training.
                train_rows=np.concatenate([target.challenge[row], target.training]),
                eval_rows=target.evaluation,
                privacy=privacy,
                train_seed=int(rng.integers(0, 2**62)),
                files=((SOLUTION_FILE, solution_line(row.astype(np.int8)).encode()),),
            )
        )
    return jobs


def run_stage(
    options: RunOptions, task: Task, scenario: str, scores: ScenarioScores, preds: Path, count: int
) -> int:
    """``run_lira_mia.py``'s reference stage (:data:`mico.attacks.run.PerTargetStage`): build or
    reuse ``count`` references a target where and how ``options`` say, attach their margins to
    ``scores`` and return the models trained."""
    per_target_options = PerTargetOptions(
        count=count,
        root=Path(options.root),
        data_dir=data_root(options.root, options.data_dir),
        preds=preds,
        device=resolve_device(options.device),
        workers=options.workers,
        ray=options.ray,
    )
    return attach_per_target_models(scores, task, scenario, per_target_options)


def attach_per_target_models(
    scores: ScenarioScores, task: Task, scenario: str, options: PerTargetOptions
) -> int:
    """Build (or reuse) every target's references, and set ``reference_margin`` and
    ``reference_in`` [T, R, K] on each phase of ``scores``.  Returns the models trained."""
    check_count(options.count)
    part = task.at(scenario)
    choice = resolve_recipe(options.root, task, None, scenario)
    privacy = choice.privacy[task.suffix(scenario)]
    targets = {
        phase: [read_target(options.root, task, scenario, phase, int(i)) for i in data.ids]
        for phase, data in scores.phases.items()
    }
    for phase, data in scores.phases.items():
        for target, columns in zip(targets[phase], data.points, strict=True):
            if not np.array_equal(scores.points[columns], target.challenge):
                raise InputError(
                    f"{scenario}/{phase}/{model_name(target.id)}: scores.npz was computed for "
                    "other challenge points; rerun save_preds.py"
                )
    jobs = [
        job
        for phase_targets in targets.values()
        for target in phase_targets
        for job in per_target_jobs(options, task, scenario, target, privacy)
    ]
    pending = sum(not job.complete(part.model_files) for job in jobs)
    count = sum(len(t) for t in targets.values())
    log.info(
        "%s: %d reference models (%d a target x %d targets), %d to train (%s)",
        scenario,
        len(jobs),
        options.count,
        count,
        pending,
        choice.source,
    )
    built = _build(jobs, part, choice.recipe, scenario, options)
    dataset = part.load_dataset(options.data_dir)
    digests = DigestStore(digests_path(options.preds))
    bar = tqdm(total=count, desc=f"{scenario} reference outputs", unit="target", disable=None)
    with bar:
        for phase, data in scores.phases.items():
            margins, kept = [], []
            for target in targets[phase]:
                margin, keep = _target_margins(target, part, scenario, dataset, options, digests)
                margins.append(margin)
                kept.append(keep)
                bar.update()
            data.reference_margin = np.stack(margins)
            data.reference_in = np.stack(kept)
    digests.save()
    return built


def _build(
    jobs: list[ModelJob], part: Task, recipe: Recipe, scenario: str, options: PerTargetOptions
) -> int:
    """Train the missing reference models locally or on Ray."""
    desc = f"{scenario} references"
    if options.ray is not None:
        from mico.train.ray_backend import build_models_ray

        return build_models_ray(
            jobs,
            part,
            recipe,
            options.data_dir,
            device=options.device,
            address=options.ray,
            workers=options.workers,
            desc=desc,
        )
    return build_models(
        jobs,
        part,
        recipe,
        options.data_dir,
        device=options.device,
        workers=options.workers,
        desc=desc,
    )


def _target_margins(
    target: Target,
    part: Task,
    scenario: str,
    dataset: TensorPairDataset,
    options: PerTargetOptions,
    digests: DigestStore,
) -> tuple[np.ndarray, np.ndarray]:
    """``(margin [R, K], in [R, K])`` of one target's references, from the cache when it
    matches the points, every model file's contents and the base data, else computed and
    cached."""
    base = per_target_models_dir(options.root, part.challenge, scenario, target.phase, target.id)
    folders = [base / model_name(r) for r in range(options.count)]
    weights = files_digest((f / name for f in folders for name in part.model_files), digests)
    key = CacheKey(points_digest(target.challenge), weights, dataset.digest)
    path = per_target_cache_path(options.preds / scenario, target.phase, target.id)
    length = len(target.challenge)
    keep = np.stack([read_solution(folder, length).astype(bool) for folder in folders])
    shape = (options.count, length)
    cached = load_cached(path, key, options.count * length)
    if cached is not None:
        return cached.margin.reshape(shape), keep
    rows = torch.from_numpy(target.challenge)
    x, y = dataset.x[rows].to(options.device), dataset.y[rows].to(options.device)
    margins = []
    for folder in folders:
        model = load_model(part, folder, options.device)
        margins.append(model_outputs(model, x, y, options.batch_size, forward=part.forward)[0])
    margin = np.stack(margins).astype(np.float64)
    # The store's per-model cache, flattened: its checks (points, model contents, data,
    # length, finite values) are the ones these margins need.
    save_cached(path, ModelOutputs(margin.ravel()), key)
    return margin, keep
