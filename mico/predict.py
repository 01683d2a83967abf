"""Compute every model output a scenario's attacks need, each forward pass exactly once.

The 2nd-place ``save_preds.py`` re-derived a target's challenge split once per (shadow, target)
pair and ran every shadow over each target's 200 points separately, so a point shared by several
targets was evaluated again and again.  Here each scenario's challenge points are reconstructed
once per model, pooled into one sorted set of unique dataset indices, uploaded to the device
once, and every shadow (``train`` model) runs over that set in large batches; ``dev``/``final``
targets run over their own points only.  Train targets reuse their shadow outputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mico.bundle import model_splits
from mico.data import TensorPairDataset
from mico.inference import Counter, model_outputs
from mico.layout import model_dirs, model_id
from mico.models import load_model
from mico.splits import Splits, challenge_indices, read_seed
from mico.store import (
    SCORES_FILE,
    PhaseScores,
    ScenarioScores,
    load_cached_margin,
    model_stamp,
    points_digest,
    save_cached_margin,
)
from mico.tasks import PHASES, Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictOptions:
    """How to run the models: device, batch size, extra outputs."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 4096
    population: int = 0
    population_seed: int = 0
    save_logits: bool = False
    autocast: torch.dtype | None = None


@dataclass
class _Model:
    phase: str
    folder: Path
    challenge: np.ndarray
    splits: Splits | None = None  # full splits, train models only

    @property
    def id(self) -> int:
        return model_id(self.folder)


def _scenario_models(scenario: Path, task: Task) -> list[_Model]:
    """Every model of the scenario with its challenge points; train models with full splits.

    Only a train (shadow) model needs the full split tree (its training set decides IN/OUT);
    a dev/final target needs its 2m challenge points, 200 steps of one shuffle.
    """
    models = []
    folders = [(phase, f) for phase in PHASES for f in model_dirs(scenario, phase)]
    for phase, folder in tqdm(folders, desc=f"{scenario.name} splits", leave=False, disable=None):
        if phase == "train":
            splits = model_splits(folder, task)
            if splits.solution is None:
                raise ValueError(f"{folder}: train models need seed_training and seed_membership")
            models.append(_Model(phase, folder, splits.challenge, splits))
        else:
            seed = read_seed(folder / "seed_challenge")
            challenge = challenge_indices(task.dataset_len, task.len_challenge, seed)
            models.append(_Model(phase, folder, challenge))
    if not any(m.phase == "train" for m in models):
        raise ValueError(f"{scenario}/train: no train models, so no shadow models for the attack")
    return models


def warn_few_out_models(scenario: str, shadow_in: np.ndarray) -> None:
    """Say how many points have fewer than two OUT shadow models, where offline LiRA falls back
    (:mod:`mico.lira`: no OUT model gives confidence 0.5, one OUT model the pooled std).

    MICO's SST-2 models train on 98.7% of the data, so a point has about one OUT model among
    100 train models; the fallback must be visible, never silent.
    """
    out = (~shadow_in).sum(axis=0)
    none, one = int((out == 0).sum()), int((out == 1).sum())
    if none or one:
        log.warning(
            "%s: %d of %d challenge points have no OUT shadow model and %d have one; offline "
            "LiRA scores them 0.5 (none) or with the pooled OUT std (one): add shadow models "
            "or prefer IN-only calibrations (--attack hardness)",
            scenario,
            none,
            len(out),
            one,
        )


def choose_population(dataset_len: int, exclude: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` sorted dataset indices outside ``exclude`` (the challenge points), seeded."""
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    candidates = np.setdiff1d(np.arange(dataset_len, dtype=np.int64), exclude)
    if count > len(candidates):
        available = len(candidates)
        raise ValueError(
            f"--population {count} exceeds the {available} non-challenge records of this "
            f"bundle: pass --population {available} or fewer"
        )
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=count, replace=False))


class _Runner:
    """Runs models over uploaded points with a per-model cache; counts records evaluated."""

    def __init__(self, task: Task, dataset: TensorPairDataset, options: PredictOptions) -> None:
        self.task = task
        self.dataset = dataset
        self.options = options
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

    def margins(
        self,
        model: _Model,
        cache: Path,
        indices: np.ndarray,
        shared: str | None = None,
        *,
        logits: bool = False,
    ) -> np.ndarray:
        """The model's margins on ``indices`` from the cache, or computed and cached.

        ``shared`` names a point set many models use (uploaded on first need, then kept).
        """
        weights = model.folder / self.task.model_files[-1]
        digest, stamp = points_digest(indices), model_stamp(weights)
        if self.options.autocast is not None:  # other precision, other margins: other cache key
            stamp = f"{stamp}:{self.options.autocast}"
        cached = load_cached_margin(cache, digest, stamp, len(indices))
        if cached is not None:
            return cached
        net = load_model(self.task, weights, self.options.device)
        x, y = self.upload(indices, shared)
        margin, raw = model_outputs(
            net,
            x,
            y,
            self.options.batch_size,
            keep_logits=logits,
            counter=self.counter,
            forward=self.task.forward,
            autocast=self.options.autocast,
        )
        out = margin.numpy()
        save_cached_margin(cache, out, digest, stamp, None if raw is None else raw.numpy())
        return out


def save_scenario(
    scenario: Path,
    out_dir: Path,
    task: Task,
    dataset: TensorPairDataset,
    options: PredictOptions,
) -> tuple[ScenarioScores, int]:
    """Compute (or resume) one scenario's outputs and write ``scores.npz``.

    Returns the scores and the number of records passed through a model in this call (0 when
    everything came from the per-model caches).
    """
    models = _scenario_models(scenario, task)
    points = np.unique(np.concatenate([m.challenge for m in models]))
    population = choose_population(
        task.dataset_len, points, options.population, options.population_seed
    )
    runner = _Runner(task, dataset, options)
    shadows = [m for m in models if m.phase == "train"]
    shadow_margin = np.empty((len(shadows), len(points)), dtype=np.float64)
    shadow_population = np.empty((len(shadows), len(population)), dtype=np.float64)
    target_population: dict[tuple[str, int], np.ndarray] = {}
    target_margin: dict[tuple[str, int], np.ndarray] = {}

    bar = tqdm(models, desc=f"{scenario.name} models", unit="model", disable=None)
    for model in bar:
        folder = out_dir / "models" / model.phase
        if model.phase == "train":
            row = shadows.index(model)
            shadow_margin[row] = runner.margins(
                model,
                folder / f"model_{model.id}.npz",
                points,
                "points",
                logits=options.save_logits,
            )
        else:
            key = (model.phase, model.id)
            target_margin[key] = runner.margins(
                model, folder / f"model_{model.id}.npz", model.challenge
            )
        if len(population):
            values = runner.margins(
                model, folder / f"model_{model.id}.population.npz", population, "population"
            )
            if model.phase == "train":
                shadow_population[shadows.index(model)] = values
            else:
                target_population[(model.phase, model.id)] = values

    shadow_in = np.stack([m.splits.training_mask()[points] for m in shadows])
    warn_few_out_models(scenario.name, shadow_in)
    column = {int(p): k for k, p in enumerate(points)}
    phases = {}
    for phase in PHASES:
        members = [m for m in models if m.phase == phase]
        if not members:
            continue
        cols = np.array([[column[int(p)] for p in m.challenge] for m in members])
        if phase == "train":
            rows = np.array([shadows.index(m) for m in members], dtype=np.int64)
            margin = shadow_margin[rows[:, None], cols]
            solution = np.stack([m.splits.solution for m in members])
            pop = shadow_population[rows] if len(population) else None
        else:
            rows = np.full(len(members), -1, dtype=np.int64)
            margin = np.stack([target_margin[(phase, m.id)] for m in members])
            solution = None
            pop = (
                np.stack([target_population[(phase, m.id)] for m in members])
                if len(population)
                else None
            )
        ids = np.array([m.id for m in members], dtype=np.int64)
        phases[phase] = PhaseScores(ids, cols.astype(np.int64), margin, rows, solution, pop)

    scores = ScenarioScores(
        points=points,
        labels=dataset.y[torch.from_numpy(points)].numpy().astype(np.int64),
        shadow_ids=np.array([m.id for m in shadows], dtype=np.int64),
        shadow_margin=shadow_margin,
        shadow_in=shadow_in,
        phases=phases,
        population=population,
        shadow_population=shadow_population if len(population) else None,
    )
    scores.save(out_dir / SCORES_FILE)
    return scores, runner.counter.records
