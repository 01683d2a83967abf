"""Compute every model output a scenario's attacks need, each forward pass exactly once.

Three steps, which ``save_preds.py`` can run together or apart:

* **plan** (:mod:`mico.outputs.plan`): every model's challenge points and membership, the pooled
  unique points, the population; seeds are read for every scenario before any model runs;
* **run** (:func:`run_models`): any subset of the models (a shard), each model's outputs written
  to its own cache file, so shards on several processes or machines share one preds folder and
  an interrupted run resumes at the next model;
* **assemble** (:func:`assemble`): ``scores.npz`` from the caches, refused with the list of
  models that have none yet.

The 2nd-place ``save_preds.py`` re-derived a target's challenge split once per (shadow, target)
pair and ran every shadow over each target's 200 points separately.  Here the points are uploaded
to the device once per scenario, every shadow runs over the pooled set in large batches,
dev/final targets over their own points only, and train targets reuse their shadow outputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mico.bundle.check import require_layout, scenario_dirs
from mico.bundle.digests import DigestStore
from mico.bundle.fileio import check_output_folder
from mico.bundle.layout import SCORES_FILE, digests_path, model_cache_path, scores_path
from mico.errors import InputError
from mico.outputs.inference import Counter, model_outputs
from mico.outputs.plan import (
    DEFAULT_SOURCES,
    PlannedModel,
    ScenarioPlan,
    plan_scenario,
    plan_scenarios,
)
from mico.outputs.provenance import bundle_record
from mico.outputs.store import (
    READ_ERRORS,
    REQUIRED,
    CacheKey,
    ModelOutputs,
    PhaseScores,
    ScenarioScores,
    load_cached,
    points_digest,
    save_cached,
)
from mico.tracks.data import TensorPairDataset
from mico.tracks.models import load_model
from mico.tracks.registry import PHASES, Task

log = logging.getLogger(__name__)

#: Cache suffix of the outputs on the plan's points (none) and on the population points.
POINTS, POPULATION = "", ".population"

#: Models named in a "missing outputs" error before "and N more".
SHOWN_MISSING = 8


@dataclass(frozen=True)
class PredictOptions:
    """How to run the models: device, batch size, extra outputs, model sources, shard."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 4096
    population: int = 0
    population_seed: int = 0
    save_logits: bool = False
    sources: tuple[str, ...] = DEFAULT_SOURCES
    #: ``(K, N)``: run only shard K of N (1-based) and assemble nothing; None runs everything.
    shard: tuple[int, int] | None = None
    #: Run the forward passes under ``torch.autocast`` in this dtype (``--autocast``).
    autocast: torch.dtype | None = None


@dataclass
class RunStats:
    """What one run did: models computed, models found cached, records through a model."""

    models_run: int = 0
    from_cache: int = 0
    records: int = 0


#: A model's outputs per cache suffix (``POINTS``, ``POPULATION``), by the model's label.
Outputs = dict[str, dict[str, ModelOutputs]]


class MissingOutputsError(InputError):
    """Assembling before every model ran; the message lists the models without outputs."""


@dataclass(frozen=True)
class _Job:
    suffix: str
    indices: np.ndarray
    shared: str | None  # name of a point set uploaded once and reused by many models
    logits: bool


def _jobs(plan: ScenarioPlan, model: PlannedModel, options: PredictOptions) -> list[_Job]:
    """The point sets ``model`` runs over: its plan points, then the population if any."""
    shared = "points" if model.is_shadow else None
    jobs = [_Job(POINTS, plan.points_of(model), shared, options.save_logits)]
    if len(plan.population):
        jobs.append(_Job(POPULATION, plan.population, "population", False))
    return jobs


@dataclass(frozen=True)
class _Inputs:
    """What every cache of a scenario is keyed on besides its points: the options, the parsed
    base dataset (its digest) and the store of weight-file digests."""

    options: PredictOptions
    dataset: TensorPairDataset
    digests: DigestStore

    def key(self, plan: ScenarioPlan, model: PlannedModel, job: _Job) -> CacheKey:
        """The cache key of ``model`` on ``job``'s points; reduced-precision outputs are
        cached apart from full ones."""
        weights = plan.weights_of(model, self.digests)
        if self.options.autocast:
            weights = f"{weights}:{self.options.autocast}"
        return CacheKey(points_digest(job.indices), weights, self.dataset.digest)


def _cache(out_dir: Path, model: PlannedModel, job: _Job) -> Path:
    return model_cache_path(out_dir, model.ref.kind, model.ref.id, job.suffix)


def _load(
    plan: ScenarioPlan, out_dir: Path, model: PlannedModel, job: _Job, inputs: _Inputs
) -> ModelOutputs | None:
    key = inputs.key(plan, model, job)
    return load_cached(_cache(out_dir, model, job), key, len(job.indices), logits=job.logits)


class _Runner:
    """Runs models over uploaded points, writing each output to its cache; counts records."""

    def __init__(self, task: Task, inputs: _Inputs) -> None:
        self.task = task
        self.inputs = inputs
        self.dataset = inputs.dataset
        self.options = inputs.options
        self.counter = Counter()
        self._uploaded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def upload(self, indices: np.ndarray, name: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Records ``indices`` on the device; a named set is uploaded once and then reused."""
        if name is not None and name in self._uploaded:
            return self._uploaded[name]
        index = torch.from_numpy(indices)
        device = self.options.device
        data = self.dataset.x[index].to(device), self.dataset.y[index].to(device)
        if name is not None:
            self._uploaded[name] = data
        return data

    def run(self, plan: ScenarioPlan, model: PlannedModel, out_dir: Path) -> tuple[dict, bool]:
        """``model``'s outputs per job, from its caches or computed; and whether it ran."""
        found: dict[str, ModelOutputs] = {}
        net = None
        for job in _jobs(plan, model, self.options):
            cached = _load(plan, out_dir, model, job, self.inputs)
            if cached is not None:
                found[job.suffix] = cached
                continue
            if net is None:
                net = load_model(self.task, model.ref.folder, self.options.device)
            x, y = self.upload(job.indices, job.shared)
            margin, raw = model_outputs(
                net,
                x,
                y,
                self.options.batch_size,
                keep_logits=job.logits,
                counter=self.counter,
                forward=self.task.forward,
                autocast=self.options.autocast,
            )
            outputs = ModelOutputs(margin.numpy(), None if raw is None else raw.numpy())
            _check_finite(model, outputs)
            save_cached(_cache(out_dir, model, job), outputs, self.inputs.key(plan, model, job))
            found[job.suffix] = outputs
        return found, net is not None


def _check_finite(model: PlannedModel, outputs: ModelOutputs) -> None:
    """Refuse a model whose outputs are NaN or infinite, naming it, before anything is cached."""
    bad = ~np.isfinite(outputs.margin)
    if outputs.logits is not None:
        bad |= ~np.isfinite(outputs.logits).all(axis=1)
    if bad.any():
        raise InputError(
            f"{model.ref.folder}: the model's outputs are NaN or infinite on {int(bad.sum())} "
            f"of {len(bad)} records; its weights are broken: re-download or retrain it"
        )


def run_models(
    plan: ScenarioPlan,
    out_dir: Path,
    task: Task,
    dataset: TensorPairDataset,
    options: PredictOptions,
    models: Sequence[PlannedModel] | None = None,
    digests: DigestStore | None = None,
) -> tuple[RunStats, Outputs]:
    """Run ``models`` (default: all of the plan), skipping those whose caches are valid.

    ``digests`` remembers the weight files' digests (default: for this call only)."""
    runner = _Runner(task, _Inputs(options, dataset, digests or DigestStore()))
    stats, outputs = RunStats(), {}
    chosen = plan.models if models is None else models
    bar = tqdm(chosen, desc=f"{plan.scenario} models", unit="model", disable=None)
    for model in bar:
        outputs[model.ref.label], ran = runner.run(plan, model, out_dir)
        stats.models_run += ran
        stats.from_cache += not ran
    stats.records = runner.counter.records
    return stats, outputs


def load_outputs(
    plan: ScenarioPlan,
    out_dir: Path,
    options: PredictOptions,
    dataset: TensorPairDataset,
    digests: DigestStore | None = None,
) -> tuple[Outputs, list[str]]:
    """Every model's outputs from the caches, and the labels of models that have none."""
    inputs = _Inputs(options, dataset, digests or DigestStore())
    outputs: Outputs = {}
    missing = []
    for model in plan.models:
        found = {
            job.suffix: _load(plan, out_dir, model, job, inputs)
            for job in _jobs(plan, model, options)
        }
        if any(value is None for value in found.values()):
            missing.append(f"{plan.scenario} {model.ref.label}")
        else:
            outputs[model.ref.label] = found  # type: ignore[assignment]
    return outputs, missing


def missing_error(missing: list[str]) -> MissingOutputsError:
    """One line naming the models without outputs and what to run."""
    shown = ", ".join(missing[:SHOWN_MISSING])
    more = f" and {len(missing) - SHOWN_MISSING} more" if len(missing) > SHOWN_MISSING else ""
    return MissingOutputsError(
        f"{len(missing)} models have no outputs yet ({shown}{more}): run the missing "
        "save_preds.py --shard K/N, or save_preds.py without --assemble"
    )


def assemble(
    plan: ScenarioPlan,
    outputs: Outputs,
    task: Task,
    dataset: TensorPairDataset,
    options: PredictOptions,
    digests: DigestStore | None = None,
) -> ScenarioScores:
    """``scores.npz``'s contents from every model's outputs (see :mod:`mico.outputs.store`).

    ``dataset`` is the base dataset the outputs were computed on (its labels and digest go
    into the file).  Raises :class:`MissingOutputsError` if a model of the plan has no outputs.
    """
    labels = dataset.y.numpy()
    missing = [f"{plan.scenario} {m.ref.label}" for m in plan.models if m.ref.label not in outputs]
    if missing:
        raise missing_error(missing)
    points, population = plan.points, plan.population
    shadows = plan.shadows
    shadow_out = [outputs[m.ref.label] for m in shadows]
    shadow_margin = np.stack([o[POINTS].margin for o in shadow_out])
    shadow_logits = None
    if options.save_logits:
        shadow_logits = np.stack([o[POINTS].logits for o in shadow_out])
    shadow_pop = np.stack([o[POPULATION].margin for o in shadow_out]) if len(population) else None
    phases = {}
    for phase in PHASES:
        members = [m for m in plan.models if m.ref.kind == phase and m.is_target]
        if not members:
            continue
        cols = np.stack([np.searchsorted(points, m.challenge) for m in members]).astype(np.int64)
        rows = np.array([plan.shadow_row.get(m.ref.label, -1) for m in members], dtype=np.int64)
        margin, logits, pop = [], [], []
        for model, row, col in zip(members, rows, cols, strict=True):
            own = outputs[model.ref.label]
            if row >= 0:
                margin.append(shadow_margin[row, col])
                logits.append(shadow_logits[row, col] if shadow_logits is not None else None)
            else:
                margin.append(own[POINTS].margin)
                logits.append(own[POINTS].logits)
            pop.append(own[POPULATION].margin if len(population) else None)
        solutions = [m.solution for m in members]
        phases[phase] = PhaseScores(
            ids=np.array([m.ref.id for m in members], dtype=np.int64),
            points=cols,
            margin=np.stack(margin),
            shadow=rows,
            solution=np.stack(solutions) if all(s is not None for s in solutions) else None,
            population=np.stack(pop) if len(population) else None,
            logits=np.stack(logits) if options.save_logits else None,
        )
    shadow_in = plan.shadow_in()
    warn_few_out_models(plan.scenario, shadow_in)
    return ScenarioScores(
        points=points,
        labels=labels[points].astype(np.int64),
        shadow_ids=np.array([m.ref.id for m in shadows], dtype=np.int64),
        shadow_margin=shadow_margin,
        shadow_in=shadow_in,
        phases=phases,
        population=population,
        shadow_population=shadow_pop,
        shadow_kind=np.array([m.ref.kind for m in shadows]),
        shadow_logits=shadow_logits,
        provenance=bundle_record(
            plan.root,
            task,
            plan.scenario,
            plan.sources,
            data=dataset.digest,
            fingerprints=plan.fingerprints(digests),
        ),
    )


def write_scores(path: Path, scores: ScenarioScores) -> None:
    """Write ``scores.npz``, saying so when it replaces a damaged one (zero bytes, cut short,
    arrays missing) rather than an older good one."""
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as data:
                damaged = not set(REQUIRED) <= set(data.files)
        except READ_ERRORS:
            damaged = True
        if damaged:
            log.warning("%s: unreadable; rewritten from the per-model caches", path)
    scores.save(path)


def warn_few_out_models(scenario: str, shadow_in: np.ndarray) -> None:
    """Say how many points have fewer than two OUT shadow models, where offline LiRA falls back
    (no OUT model gives confidence 0.5, one OUT model the pooled std).

    MICO's SST-2 models train on 98.7% of the data, so a point has about one OUT model among
    100 train models; the fallback must be visible, never silent.
    """
    out = (~shadow_in).sum(axis=0)
    none, one = int((out == 0).sum()), int((out == 1).sum())
    if none or one:
        log.warning(
            "%s: %d of %d challenge points have no OUT shadow model and %d have one; offline "
            "LiRA scores them 0.5 (none) or with the pooled OUT std (one): add shadow models "
            "(train_shadows.py) or prefer IN-only calibrations (--attack hardness)",
            scenario,
            none,
            len(out),
            one,
        )


def dataset_loader(data_dir: Path) -> Callable[[Task], TensorPairDataset]:
    """``datasets(track)`` for :func:`predict`: each track's base dataset from ``data_dir``,
    read once and only when a scenario of that track is run (DDP has three datasets)."""
    loaded: dict[str, TensorPairDataset] = {}

    def dataset_of(task: Task) -> TensorPairDataset:
        if task.name not in loaded:
            loaded[task.name] = task.load_dataset(data_dir)
        return loaded[task.name]

    return dataset_of


def plan_all(root: Path, task: Task, options: PredictOptions) -> list[ScenarioPlan]:
    """Plan every scenario of the bundle (so bad seeds stop the run before any model runs)."""
    names = [folder.name for folder in scenario_dirs(root, task)]
    return plan_scenarios(
        root, task, names, options.sources, options.population, options.population_seed
    )


@dataclass
class ScenarioResult:
    """One scenario of a ``save_preds`` call: its plan, what ran, the scores if assembled."""

    plan: ScenarioPlan
    stats: RunStats
    scores: ScenarioScores | None


def predict(
    root: Path,
    task: Task,
    datasets: Callable[[Task], TensorPairDataset],
    preds: Path,
    options: PredictOptions,
    *,
    assemble_only: bool = False,
) -> list[ScenarioResult]:
    """save_preds' engine: plan every scenario, run (a shard of) the models, assemble.

    The bundle's layout is checked first (:func:`mico.bundle.check.require_layout`).  ``preds`` is
    ``<preds-dir>/<challenge>``; ``datasets(track)`` gives the base dataset of a
    scenario's track (:meth:`Task.at`: DDP's scenarios each have their own).  With
    ``options.shard`` only that shard runs and nothing is assembled; with ``assemble_only``
    nothing runs, and a model without outputs in any scenario stops the call before any
    ``scores.npz`` is written.
    """
    require_layout(root, task)
    check_output_folder(preds)
    plans = plan_all(root, task, options)
    for plan in plans:  # extra shadows made for another bundle or data stop the run here
        plan.check_made_for(task.challenge, datasets(task.at(plan.scenario)).digest)
    digests = DigestStore(digests_path(preds))
    try:
        if assemble_only:
            return _assemble_only(plans, task, datasets, preds, options, digests)
        results = []
        for plan in tqdm(plans, desc="scenarios", unit="scenario", disable=None):
            out_dir = preds / plan.scenario
            part = task.at(plan.scenario)
            dataset = datasets(part)
            stats, outputs = run_models(
                plan, out_dir, part, dataset, options, plan.in_shard(options.shard), digests
            )
            scores = None
            if options.shard is None:
                scores = assemble(plan, outputs, part, dataset, options, digests)
                write_scores(scores_path(preds, plan.scenario), scores)
            results.append(ScenarioResult(plan, stats, scores))
        return results
    finally:
        digests.save()


def _assemble_only(
    plans: list[ScenarioPlan],
    task: Task,
    datasets: Callable[[Task], TensorPairDataset],
    preds: Path,
    options: PredictOptions,
    digests: DigestStore,
) -> list[ScenarioResult]:
    """``--assemble``: every ``scores.npz`` from the caches, or nothing if a model has none."""
    loaded = []
    for plan in plans:
        dataset = datasets(task.at(plan.scenario))
        outputs = load_outputs(plan, preds / plan.scenario, options, dataset, digests)
        loaded.append((dataset, *outputs))
    missing = [label for _, _, absent in loaded for label in absent]
    if missing:
        raise missing_error(missing)
    results = []
    for plan, (dataset, outputs, _) in zip(plans, loaded, strict=True):
        scores = assemble(plan, outputs, task.at(plan.scenario), dataset, options, digests)
        write_scores(scores_path(preds, plan.scenario), scores)
        results.append(ScenarioResult(plan, RunStats(from_cache=len(plan.models)), scores))
    return results


def save_scenario(
    scenario: Path,
    out_dir: Path,
    task: Task,
    dataset: TensorPairDataset,
    options: PredictOptions,
) -> tuple[ScenarioScores, int]:
    """Plan, run and assemble one scenario folder, writing ``out_dir/scores.npz``.

    Returns the scores and the number of records passed through a model in this call (0 when
    everything came from the per-model caches).
    """
    root = scenario.parent.parent  # <root>/<challenge>/<scenario>
    task = task.at(scenario.name)
    plan = plan_scenario(
        root, task, scenario.name, options.sources, options.population, options.population_seed
    )
    plan.check_made_for(task.challenge, dataset.digest)
    stats, outputs = run_models(plan, out_dir, task, dataset, options)
    scores = assemble(plan, outputs, task, dataset, options)
    write_scores(out_dir / SCORES_FILE, scores)
    return scores, stats.records
