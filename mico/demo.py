"""Offline demo: a small MICO-format challenge from synthetic data, built with no network.

``python download_files.py --challenge purchase100 --demo`` synthesises a base dataset in the
real file format, then trains target models with MICO's recipes (:mod:`mico.training`, scaled
down in data and epochs) into a bundle that ``save_preds.py``, ``run_lira_mia.py`` and
``save_zip.py`` read unchanged.  ``--demo tiny`` is a preset small enough for tests.

On-disk contract (the first two paths are exactly where the real data would be)::

    <data-dir>/purchase100/dataset_purchase      label 1..100 then 600 0/1 ints, one row a line
    <data-dir>/cifar10/cifar-10-batches-py/      data_batch_1..5 + test_batch (5/6 : 1/6 split),
                                                 pickled {b"data": uint8 [n, 3072] CHW,
                                                 b"labels", b"batch_label", b"filenames"}
    <data-dir>/<challenge>/demo.json             what synthesised the data (seed, size, version)
    <root>/<challenge>/bundle.json               dataset_len, len_training, len_challenge,
                                                 models_per_phase and the "demo" settings
    <root>/<challenge>/<challenge>_{inf,hi,lo}/{train,dev,final}/model_N/
        seed_challenge                           every model
        seed_training, seed_membership,          train models only, as in MICO
        solution.csv
        model.pt                                 state_dict; DP models keep Opacus' "_module."
        epsilon                                  achieved epsilon at delta 1e-5 ("inf": no DP)
        accuracy                                 accuracy on (part of) the model's evaluation split
    <reference-dir>/<challenge>/demo.json        the same "demo" settings as bundle.json
    <reference-dir>/<challenge>/<challenge>_{inf,hi,lo}/{dev,final}/model_N/
        seed_challenge, seed_training,           the organisers' ground truth that a real bundle
        seed_membership, solution.csv            hides: score dev/final predictions locally

Model ids follow MICO: train ``0..T-1``, dev from ``T``, final after dev.  Every seed derives
from ``--seed`` and the model's place in the bundle, so a run is reproducible and resumable:
each model folder is built as ``<phase>/.model_N.tmp`` and renamed when complete, a rerun skips
finished folders and rebuilds interrupted ones.  A demo never writes over data or bundles it did
not make, nor mixes two demo configurations in one folder.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import pickle
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mico.bundle import check_layout, model_dirs, write_solution
from mico.cli import data_dir, resolve_device
from mico.data import (
    CIFAR10_BATCHES,
    CIFAR10_FOLDER,
    PURCHASE100_FEATURES,
    PURCHASE100_FILE,
    load_dataset,
)
from mico.fileio import atomic_write, write_text_atomic
from mico.models import build_model, strip_opacus_prefix
from mico.splits import Splits, split_indices
from mico.tasks import BUNDLE_CONFIG, PHASES, SCENARIO_SUFFIXES, Task, get_task
from mico.training import (
    DELTA,
    MAX_GRAD_NORM,
    MICO_RECIPES,
    SCENARIO_EPSILON,
    Recipe,
    accuracy,
    dp_noise_multiplier,
    train_model,
)

log = logging.getLogger(__name__)

#: Bump when a synthesiser changes its output, so old demo data is not silently reused.
SYNTHESIS_VERSION = 1

#: Name of the marker that records which demo configuration made a folder.
DEMO_MARKER = "demo.json"

#: At most this many evaluation-split records are scored for a model's ``accuracy`` file.
EVAL_LIMIT = 1000


@dataclass(frozen=True)
class Preset:
    """Sizes of a demo bundle.  ``eval_models`` is per phase (dev and final each);
    ``recipe_changes`` are departures from MICO's recipe, each explained where it is set."""

    dataset_len: int
    len_training: int
    train_models: int
    eval_models: int
    epochs: int
    len_challenge: int = 100
    recipe_changes: tuple[tuple[str, float], ...] = ()


#: Presets per track.  Purchase-100's default keeps the real ratio len_training / dataset_len
#: (150000 / 197324 = 0.76), so with 48 train models a challenge point has about 11 OUT models.
#: CIFAR-10's CNN costs about 3 ms per image and pass on a 2-core CPU (DP-SGD about twice that),
#: so its default trains 16 train models on a quarter of a 1000-image dataset (MICO: 5/6),
#: which leaves about 12 OUT models per point, for 8 epochs.  MICO's SGD rate 0.005 assumes
#: ~78000 steps; these models take ~64, so the default raises it to 0.02 (at 0.005 the CNN
#: barely moves from its initialisation and there is little to attack).  DP models keep 0.5.
PRESETS: dict[str, dict[str, Preset]] = {
    "purchase100": {
        "default": Preset(
            dataset_len=8000, len_training=6080, train_models=48, eval_models=8, epochs=15
        ),
        "tiny": Preset(dataset_len=1200, len_training=900, train_models=4, eval_models=1, epochs=3),
    },
    "cifar10": {
        "default": Preset(
            dataset_len=1000,
            len_training=250,
            train_models=16,
            eval_models=2,
            epochs=8,
            recipe_changes=(("lr", 0.02),),
        ),
        "tiny": Preset(dataset_len=360, len_training=200, train_models=2, eval_models=1, epochs=1),
    },
}


@dataclass(frozen=True)
class DemoConfig:
    """Everything that determines a demo bundle's contents."""

    challenge: str
    preset: str
    seed: int
    dataset_len: int
    len_training: int
    len_challenge: int
    train_models: int
    eval_models: int
    epochs: int
    recipe_changes: tuple[tuple[str, float], ...] = ()

    @property
    def task(self) -> Task:
        """The track with this bundle's sizes (what ``load_task`` reads back)."""
        task = dataclasses.replace(
            get_task(self.challenge),
            dataset_len=self.dataset_len,
            len_training=self.len_training,
            len_challenge=self.len_challenge,
            models_per_phase=tuple(self.models_per_phase.items()),
        )
        task.validate()
        return task

    @property
    def models_per_phase(self) -> dict[str, int]:
        return {"train": self.train_models, "dev": self.eval_models, "final": self.eval_models}

    @property
    def recipe(self) -> Recipe:
        """MICO's recipe for the track with this demo's epochs (and the preset's changes)."""
        return MICO_RECIPES[self.challenge].replace(epochs=self.epochs, **dict(self.recipe_changes))

    def model_ids(self, phase: str) -> range:
        """MICO numbering: train 0..T-1, then dev, then final."""
        first = {
            "train": 0,
            "dev": self.train_models,
            "final": self.train_models + self.eval_models,
        }
        return range(first[phase], first[phase] + self.models_per_phase[phase])

    def settings(self) -> dict[str, object]:
        """The ``"demo"`` entry of ``bundle.json``: a rerun resumes only if it is identical."""
        return {
            "preset": self.preset,
            "seed": self.seed,
            "synthesis_version": SYNTHESIS_VERSION,
            "recipe": dataclasses.asdict(self.recipe),
            "dp_epsilon": {k: v for k, v in SCENARIO_EPSILON.items() if v is not None},
            "delta": DELTA,
            "max_grad_norm": MAX_GRAD_NORM,
        }

    def bundle_json(self) -> dict[str, object]:
        return {
            "comment": "offline demo bundle made by `download_files.py --demo` from synthetic "
            "data; not MICO's data",
            "dataset_len": self.dataset_len,
            "len_training": self.len_training,
            "len_challenge": self.len_challenge,
            "models_per_phase": self.models_per_phase,
            "demo": self.settings(),
        }

    def data_marker(self) -> dict[str, object]:
        """What the synthetic base dataset depends on."""
        return {
            "challenge": self.challenge,
            "seed": self.seed,
            "dataset_len": self.dataset_len,
            "synthesis_version": SYNTHESIS_VERSION,
        }


def make_config(
    challenge: str,
    preset: str = "default",
    *,
    seed: int = 0,
    train_models: int | None = None,
    eval_models: int | None = None,
    dataset_len: int | None = None,
    epochs: int | None = None,
) -> DemoConfig:
    """A preset with the given knobs overridden.

    A new ``dataset_len`` keeps the preset's ratio ``len_training / dataset_len``.
    """
    if challenge not in PRESETS:
        raise ValueError(f"no demo for {challenge!r}: choose one of {', '.join(sorted(PRESETS))}")
    if preset not in PRESETS[challenge]:
        raise ValueError(f"unknown demo preset {preset!r}: use {' or '.join(PRESETS[challenge])}")
    base = PRESETS[challenge][preset]
    if seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {seed}")
    len_training = base.len_training
    if dataset_len is not None:
        len_training = round(dataset_len * base.len_training / base.dataset_len)
    config = DemoConfig(
        challenge=challenge,
        preset=preset,
        seed=seed,
        dataset_len=dataset_len if dataset_len is not None else base.dataset_len,
        len_training=len_training,
        len_challenge=base.len_challenge,
        train_models=train_models if train_models is not None else base.train_models,
        eval_models=eval_models if eval_models is not None else base.eval_models,
        epochs=epochs if epochs is not None else base.epochs,
        recipe_changes=base.recipe_changes,
    )
    for name in ("train_models", "eval_models", "epochs"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    try:
        config.task  # noqa: B018 (validates the sizes)
    except ValueError:
        minimum = math.ceil((base.len_challenge * 3) * base.dataset_len / base.len_training)
        raise ValueError(
            f"--dataset-len {config.dataset_len} is too small for {challenge}: each model needs "
            f"{2 * base.len_challenge} challenge points and a training set; use at least {minimum}"
        ) from None
    return config


# --------------------------------------------------------------------------------------------
# Synthetic base datasets


#: Rows or images synthesised per random stream, to bound memory for large ``--dataset-len``.
_CHUNK = 8192


def _stream(seed: int, track: int, part: int) -> np.random.Generator:
    """Independent random streams for the data: ``part`` 0 draws the class structure, ``part``
    ``k >= 1`` the records of chunk ``k - 1`` (the model seeds use other streams)."""
    return np.random.default_rng([seed, 0xDA7A, track, part])


#: Purchase-like record model: mean density, products each profile favours, their mean boost,
#: and the log-normal spread of product popularity.
_PURCHASE_SHAPE = (0.09, 50, 5.0, 0.5)


def synthesize_purchase100(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Purchase-100-like records: ``features`` uint8 [n, 600] (0/1), ``labels`` int64 [n] 0..99.

    The real dataset holds shoppers' purchase histories over 600 products (1 = bought),
    clustered into 100 classes with k-means.  We mimic that story: product popularity is
    log-normal, each of 100 shopper profiles favours 50 random products (5x on average), each
    shopper's basket size varies (log-normal activity), and the label is the nearest centroid
    of the sampled baskets (one k-means assignment step), a deterministic but non-trivial
    function of the features with unequal class sizes.  About 9% of the entries are 1 (53
    products a row): that density is our assumption, as the real file cannot be inspected
    offline.  What matters for the demo is that the MLP fits its training set and generalises
    only partly (about 87% test accuracy without DP in the default preset, 30% and 15% with
    epsilon 10 and 4), which gives the membership signal MICO's Purchase-100 models have.
    """
    classes, dim = 100, PURCHASE100_FEATURES
    density, favoured, boost, spread = _PURCHASE_SHAPE
    rng = _stream(seed, 100, 0)
    profiles = np.tile(rng.lognormal(0.0, spread, dim), (classes, 1))
    for profile in profiles:
        chosen = rng.choice(dim, favoured, replace=False)
        profile[chosen] *= boost * rng.uniform(0.5, 1.5, favoured)
    profiles *= density / profiles.mean(axis=1, keepdims=True)
    features = np.empty((n, dim), dtype=np.uint8)
    groups = np.empty(n, dtype=np.int64)
    for part, start in enumerate(range(0, n, _CHUNK), start=1):
        rng = _stream(seed, 100, part)
        rows = min(_CHUNK, n - start)
        group = rng.integers(0, classes, rows)
        activity = rng.lognormal(-0.125, 0.5, (rows, 1))  # mean 1
        chance = np.minimum(profiles[group] * activity, 0.95)
        features[start : start + rows] = rng.random((rows, dim)) < chance
        groups[start : start + rows] = group
    return features, _nearest_centroid(features, groups, classes)


def _nearest_centroid(features: np.ndarray, groups: np.ndarray, classes: int) -> np.ndarray:
    """One k-means assignment step: the index of the nearest group mean (squared Euclidean)."""
    sums = np.zeros((classes, features.shape[1]), dtype=np.float64)
    for start in range(0, len(features), _CHUNK):
        block = features[start : start + _CHUNK].astype(np.float32)
        onehot = np.eye(classes, dtype=np.float32)[groups[start : start + _CHUNK]]
        sums += onehot.T @ block
    counts = np.bincount(groups, minlength=classes)
    centroids = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, and |x|^2 is the same for every c.
    offset = (centroids**2).sum(axis=1)
    labels = np.empty(len(features), dtype=np.int64)
    for start in range(0, len(features), _CHUNK):
        block = features[start : start + _CHUNK].astype(np.float32)
        labels[start : start + _CHUNK] = (offset - 2 * block @ centroids.T).argmin(axis=1)
    return labels


#: CIFAR-like image model: gratings per class, the largest share of a second class blended in,
#: and the amplitudes of smooth clutter and pixel noise (tuned so that the CNN overfits).
_CIFAR_COMPONENTS, _CIFAR_BLEND, _CIFAR_CLUTTER, _CIFAR_NOISE = 3, 0.5, 1.2, 0.25


def synthesize_cifar10(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10-like images: ``images`` uint8 [n, 3072] (3x32x32, CHW), ``labels`` int64 [n].

    Each class is a colour scheme plus three oriented colour gratings; an image is its class
    pattern, randomly shifted and blended with another class (up to 50%), over smooth random
    clutter and pixel noise, with random contrast.  Generalising is hard (ambiguous blends,
    strong clutter) while memorising a training image's clutter is easy: the CNN overfits,
    which gives the membership signal.
    """
    classes, components = 10, _CIFAR_COMPONENTS
    rng = _stream(seed, 10, 0)
    signs = rng.choice([-1, 1], (classes, components, 2))
    freqs = rng.uniform(1.0, 4.0, (classes, components, 2)) * signs
    colours = rng.standard_normal((classes, components, 3))
    base = rng.uniform(-0.5, 0.5, (classes, 3))
    grid = np.stack(np.mgrid[0:32, 0:32][::-1]) / 32.0  # [2 (x, y), 32, 32]

    def pattern(c: np.ndarray, shift: np.ndarray, phase: np.ndarray) -> np.ndarray:
        """[rows, 3, 32, 32] class patterns for classes ``c`` [rows]."""
        out = np.repeat(base[c][:, :, None, None], 32, axis=2).repeat(32, axis=3)
        for k in range(components):
            f = freqs[c, k]  # [rows, 2]
            position = grid[None] + shift[:, :, None, None]  # [rows, 2, 32, 32]
            angle = (
                2 * np.pi * (f[:, :, None, None] * position).sum(axis=1) + phase[:, k, None, None]
            )
            out += 0.5 * np.sin(angle)[:, None] * colours[c, k][:, :, None, None]
        return out

    pixels = np.empty((n, 3072), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    for part, start in enumerate(range(0, n, _CHUNK), start=1):
        rng = _stream(seed, 10, part)
        rows = min(_CHUNK, n - start)
        label = rng.integers(0, classes, rows)
        other = (label + rng.integers(1, classes, rows)) % classes
        blend = rng.uniform(0.0, _CIFAR_BLEND, rows)[:, None, None, None]
        shift = rng.uniform(0.0, 1.0, (rows, 2))
        phase = rng.uniform(0.0, 0.6 * np.pi, (rows, components))
        images = (1 - blend) * pattern(label, shift, phase) + blend * pattern(other, shift, phase)
        images += _CIFAR_CLUTTER * _smooth_noise(rng, rows)
        images += _CIFAR_NOISE * rng.standard_normal(images.shape)
        images *= rng.uniform(0.6, 1.2, (rows, 1, 1, 1))
        block = np.clip(np.rint(128 + 50 * images), 0, 255).astype(np.uint8)
        pixels[start : start + rows] = block.reshape(rows, 3072)
        labels[start : start + rows] = label
    return pixels, labels


def _smooth_noise(rng: np.random.Generator, n: int, coarse: int = 4) -> np.ndarray:
    """[n, 3, 32, 32] standard-normal values on a coarse grid, bilinearly upsampled."""
    grid = rng.standard_normal((n, 3, coarse, coarse))
    pos = np.linspace(0, coarse - 1, 32)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, coarse - 1)
    w = pos - lo
    grid = grid[:, :, lo, :] * (1 - w)[:, None] + grid[:, :, hi, :] * w[:, None]
    return grid[..., lo] * (1 - w) + grid[..., hi] * w


def write_purchase100(path: Path, features: np.ndarray, labels: np.ndarray) -> None:
    """``dataset_purchase``: per row the label 1..100, then 600 0/1 values, comma-separated."""
    rows = np.empty((len(features), 2 * features.shape[1] + 1), dtype=np.uint8)
    rows[:, 0:-1:2] = ord(",")
    rows[:, 1:-1:2] = features + ord("0")
    rows[:, -1] = ord("\n")
    with atomic_write(path, "wb") as handle:
        for label, row in zip(labels.tolist(), rows, strict=True):
            handle.write(b"%d" % (label + 1))
            handle.write(row.tobytes())


def write_cifar10(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """The five training batches and the test batch of the python CIFAR-10 release.

    The real split is 50000 : 10000; the last sixth of the images goes to ``test_batch`` and
    the rest to ``data_batch_1..5`` in order, so dataset index ``i`` is the ``i``-th image.
    """
    n_train = len(images) - len(images) // 6
    parts = [*np.array_split(np.arange(n_train), 5), np.arange(n_train, len(images))]
    for number, (name, rows) in enumerate(zip(CIFAR10_BATCHES, parts, strict=True), start=1):
        batch_label = f"training batch {number} of 5" if number <= 5 else "testing batch 1 of 1"
        batch = {
            b"batch_label": batch_label.encode(),
            b"labels": labels[rows].tolist(),
            b"data": np.ascontiguousarray(images[rows]),
            b"filenames": [f"demo_{i:06d}.png".encode() for i in rows.tolist()],
        }
        with atomic_write(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)


def _dataset_files(challenge: str, root: Path) -> list[Path]:
    if challenge == "purchase100":
        return [root / "purchase100" / PURCHASE100_FILE]
    return [root / "cifar10" / CIFAR10_FOLDER / name for name in CIFAR10_BATCHES]


def ensure_dataset(config: DemoConfig, root: Path) -> bool:
    """Synthesise the base dataset under ``root`` (the data dir) unless this config already did.

    Returns ``True`` if files were written.  Refuses to touch a folder that holds data this demo
    configuration did not make (the real dataset, or a demo with another seed or size).
    """
    folder = root / config.challenge
    marker = folder / DEMO_MARKER
    files = _dataset_files(config.challenge, root)
    wanted = config.data_marker()
    if marker.is_file():
        found = _read_json(marker)
        if found != wanted:
            raise FileExistsError(
                f"{folder} holds demo data made with {_describe(found, wanted)}; delete {folder} "
                f"(and the bundle made from it) or choose another --root/--data-dir"
            )
        if all(path.is_file() for path in files):
            return False
    elif any(path.exists() for path in files):
        raise FileExistsError(
            f"{folder} holds a {config.challenge} dataset that --demo did not make (the real "
            f"one?); refusing to overwrite it: use another --root or --data-dir for the demo"
        )
    # Claim the folder first, so an interrupted synthesis is recognised and redone by a rerun.
    _write_json(marker, wanted)
    synthesize = synthesize_purchase100 if config.challenge == "purchase100" else synthesize_cifar10
    values, labels = synthesize(config.dataset_len, config.seed)
    if config.challenge == "purchase100":
        path = files[0]
        Path(str(path) + ".npy").unlink(missing_ok=True)  # the loader's cache of the old text
        write_purchase100(path, values, labels)
    else:
        write_cifar10(folder / CIFAR10_FOLDER, values, labels)
    return True


# --------------------------------------------------------------------------------------------
# Bundle


@dataclass(frozen=True)
class ModelJob:
    """One model folder to build: where, which seeds, how to train."""

    scenario: str
    dp_epsilon: float | None
    phase: str
    model_id: int
    seed_challenge: int
    seed_training: int
    seed_membership: int
    train_seed: int
    noise_multiplier: float | None  # DP: calibrated once per scenario by the main process
    folder: Path
    reference: Path | None  # dev/final: where the hidden seeds and solution go

    def splits(self, task: Task) -> Splits:
        """The model's MICO splits, reconstructed from its three seeds."""
        return split_indices(
            task.dataset_len,
            task.len_training,
            task.len_challenge,
            self.seed_challenge,
            self.seed_training,
            self.seed_membership,
        )


def model_seeds(seed: int, scenario_index: int, model_id: int) -> tuple[int, int, int, int]:
    """``(seed_challenge, seed_training, seed_membership, train_seed)`` of one model.

    The three split seeds are uniform non-negative int64 values like MICO's (nearly all above
    2**32, whose low 32 bits alone seed the split generator); ``train_seed`` drives
    initialisation, batches and DP noise.
    """
    rng = np.random.default_rng([seed, 0x5EED, scenario_index, model_id])
    split = rng.integers(0, 2**63 - 1, size=3, dtype=np.int64, endpoint=True)
    return int(split[0]), int(split[1]), int(split[2]), int(rng.integers(0, 2**62))


def plan_models(config: DemoConfig, root: Path, reference_root: Path) -> list[ModelJob]:
    """Every model of the bundle, in bundle order (scenario, phase, id)."""
    jobs = []
    for index, suffix in enumerate(SCENARIO_SUFFIXES):
        scenario = f"{config.challenge}_{suffix}"
        for phase in PHASES:
            for model_id in config.model_ids(phase):
                seeds = model_seeds(config.seed, index, model_id)
                name = f"model_{model_id}"
                reference = None
                if phase != "train":
                    reference = reference_root / config.challenge / scenario / phase / name
                jobs.append(
                    ModelJob(
                        scenario=scenario,
                        dp_epsilon=SCENARIO_EPSILON[suffix],
                        phase=phase,
                        model_id=model_id,
                        seed_challenge=seeds[0],
                        seed_training=seeds[1],
                        seed_membership=seeds[2],
                        train_seed=seeds[3],
                        noise_multiplier=None,
                        folder=root / config.challenge / scenario / phase / name,
                        reference=reference,
                    )
                )
    return jobs


def _model_files(phase: str) -> tuple[str, ...]:
    files = ("seed_challenge", "model.pt", "epsilon", "accuracy")
    if phase == "train":
        files += ("seed_training", "seed_membership", "solution.csv")
    return files


def _is_complete(job: ModelJob) -> bool:
    return all((job.folder / name).is_file() for name in _model_files(job.phase))


def _write_reference(job: ModelJob, solution: np.ndarray) -> None:
    assert job.reference is not None
    for name in ("seed_challenge", "seed_training", "seed_membership"):
        write_text_atomic(job.reference / name, f"{getattr(job, name)}\n")
    write_solution(job.reference / "solution.csv", solution)


def build_model_folder(
    job: ModelJob,
    task: Task,
    recipe: Recipe,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
) -> None:
    """Train one model and write its folder (and reference files), atomically.

    Everything goes to ``<phase>/.model_N.tmp`` first, which is renamed to ``model_N`` once
    complete; a leftover temporary folder from an interrupted run is discarded.
    """
    splits = job.splits(task)
    assert splits.member is not None and splits.training is not None
    assert splits.evaluation is not None and splits.solution is not None
    # MICO trains on ConcatDataset([member, training]) with a shuffled loader.
    rows = torch.from_numpy(np.concatenate([splits.member, splits.training]))
    result = train_model(
        task,
        x[rows],
        y[rows],
        recipe,
        dp_epsilon=job.dp_epsilon,
        noise_multiplier=job.noise_multiplier,
        seed=job.train_seed,
        device=device,
    )
    model = build_model(task).to(device)
    model.load_state_dict(strip_opacus_prefix(result.state_dict))
    held_out = torch.from_numpy(splits.evaluation[:EVAL_LIMIT])
    test_accuracy = accuracy(model, x[held_out], y[held_out])

    tmp = job.folder.with_name(f".{job.folder.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write_text_atomic(tmp / "seed_challenge", f"{job.seed_challenge}\n")
    if job.phase == "train":
        write_text_atomic(tmp / "seed_training", f"{job.seed_training}\n")
        write_text_atomic(tmp / "seed_membership", f"{job.seed_membership}\n")
        write_solution(tmp / "solution.csv", splits.solution)
    with atomic_write(tmp / "model.pt", "wb") as handle:
        torch.save(result.state_dict, handle)
    write_text_atomic(tmp / "epsilon", f"{result.epsilon!r}\n")
    write_text_atomic(tmp / "accuracy", f"{test_accuracy!r}\n")
    if job.reference is not None:
        _write_reference(job, splits.solution)
    os.replace(tmp, job.folder)


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


#: Per-process state of a pool worker (its copy of the dataset); set by _init_worker only.
_WORKER: dict[str, object] = {}


def _init_worker(challenge: str, data_root: Path, threads: int) -> None:
    torch.set_num_threads(threads)
    _keep_freed_memory()
    dataset = load_dataset(challenge, data_root)
    _WORKER["x"], _WORKER["y"] = dataset.x, dataset.y


def _worker_build(job: ModelJob, task: Task, recipe: Recipe, device: str) -> ModelJob:
    x, y = _WORKER["x"], _WORKER["y"]
    build_model_folder(job, task, recipe, x, y, torch.device(device))  # type: ignore[arg-type]
    return job


def _run_jobs(
    jobs: list[ModelJob],
    build: Callable[[ModelJob], None] | None,
    pool: concurrent.futures.Executor | None,
    pool_args: tuple[object, ...],
    bar: tqdm,
) -> None:
    """Build every job, in this process (``build``) or in ``pool``, advancing ``bar``."""
    if pool is None:
        assert build is not None
        for job in jobs:
            bar.set_postfix_str(f"{job.scenario}/{job.phase}/model_{job.model_id}")
            build(job)
            bar.update()
        return
    futures = [pool.submit(_worker_build, job, *pool_args) for job in jobs]
    try:
        for future in concurrent.futures.as_completed(futures):
            job = future.result()
            bar.set_postfix_str(f"{job.scenario}/{job.phase}/model_{job.model_id}")
            bar.update()
    except BaseException:
        for future in futures:
            future.cancel()
        raise


def build_models(
    config: DemoConfig,
    root: Path,
    reference_root: Path,
    data_root: Path,
    *,
    device: torch.device,
    workers: int = 0,
) -> int:
    """Train every missing model of the bundle; returns how many were built.

    ``workers`` processes train in parallel (0: :func:`default_workers`).
    """
    task = config.task
    jobs = plan_models(config, root, reference_root)
    pending = []
    for job in jobs:
        tmp = job.folder.with_name(f".{job.folder.name}.tmp")
        if tmp.exists():
            log.info("discarding %s left by an interrupted run", tmp)
            shutil.rmtree(tmp)
        if job.folder.is_dir() and _is_complete(job):
            if job.reference is not None and not (job.reference / "solution.csv").is_file():
                splits = job.splits(task)
                assert splits.solution is not None
                _write_reference(job, splits.solution)
            continue
        if job.folder.exists():  # incomplete although renamed: files were removed by hand
            log.warning("rebuilding incomplete %s", job.folder)
            shutil.rmtree(job.folder)
        pending.append(job)
    if not pending:
        log.info("all %d models of %s are already built", len(jobs), root / config.challenge)
        return 0

    recipe = config.recipe
    noise = {
        eps: dp_noise_multiplier(recipe, config.len_training, eps)
        for eps in sorted({job.dp_epsilon for job in pending if job.dp_epsilon is not None})
    }
    pending = [
        dataclasses.replace(job, noise_multiplier=noise.get(job.dp_epsilon)) for job in pending
    ]
    workers = workers or default_workers(device, len(pending))
    workers = max(1, min(workers, len(pending)))
    log.info(
        "training %d of %d models (%s, %d epochs) on %s with %d worker%s",
        len(pending),
        len(jobs),
        config.challenge,
        config.epochs,
        device,
        workers,
        "s" if workers > 1 else "",
    )
    with tqdm(
        total=len(pending), desc=f"{config.challenge} demo models", unit="model", disable=None
    ) as bar:
        if workers == 1:
            dataset = load_dataset(config.challenge, data_root)
            x, y = dataset.x.to(device), dataset.y.to(device)

            def build(job: ModelJob) -> None:
                build_model_folder(job, task, recipe, x, y, device)

            _run_jobs(pending, build, None, (), bar)
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            context = multiprocessing.get_context("spawn")  # fork after OpenMP use can hang
            with concurrent.futures.ProcessPoolExecutor(
                workers,
                mp_context=context,
                initializer=_init_worker,
                initargs=(config.challenge, data_root, threads),
            ) as pool:
                _run_jobs(pending, None, pool, (task, recipe, str(device)), bar)
    return len(pending)


def check_bundle(config: DemoConfig, root: Path, reference_root: Path) -> list[tuple[Path, dict]]:
    """Check that the bundle and reference folders are free or hold this very demo.

    Returns the marker files still to write (``bundle.json``, the reference's ``demo.json``);
    raises ``FileExistsError`` for a folder that holds anything else.
    """
    to_write = []
    for folder, name, content in (
        (root / config.challenge, BUNDLE_CONFIG, config.bundle_json()),
        (reference_root / config.challenge, DEMO_MARKER, {"demo": config.settings()}),
    ):
        path = folder / name
        if path.is_file():
            found = _read_json(path)
            if found.get("demo") is None:
                raise FileExistsError(
                    f"{folder} holds a bundle that --demo did not make; refusing to write a demo "
                    f"into it: use another --root"
                )
            if found != content:
                raise FileExistsError(
                    f"{folder} holds a demo built with other settings "
                    f"({_describe(found, content)}); delete {folder} or choose another --root"
                )
        elif folder.is_dir() and any(folder.iterdir()):
            raise FileExistsError(
                f"{folder} is not empty and has no {name}: it is not a demo folder; refusing to "
                f"write into it: use another --root (or --reference-dir)"
            )
        else:
            to_write.append((path, content))
    return to_write


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not readable JSON ({exc}); delete it and rerun") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object; delete it and rerun")
    return value


def _write_json(path: Path, value: dict) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def _describe(found: dict, wanted: dict, prefix: str = "") -> str:
    """The first differences between two settings dicts, for error messages."""
    diffs = []
    for key in sorted(set(found) | set(wanted)):
        a, b = found.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            if a != b:
                diffs.append(_describe(a, b, f"{prefix}{key}."))
        elif a != b:
            diffs.append(f"{prefix}{key}={a!r}, this run {b!r}")
    return "; ".join(diffs[:3])


# --------------------------------------------------------------------------------------------
# Command line


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """Flags of the offline demo (``download_files.py --demo``)."""
    group.add_argument(
        "--demo",
        nargs="?",
        const="default",
        choices=("default", "tiny"),
        default=None,
        help="build a small offline challenge in MICO's format from synthetic data instead of "
        "downloading (default preset; 'tiny' for tests)",
    )
    group.add_argument("--seed", type=int, default=0, help="demo random seed (default: 0)")
    group.add_argument("--train-models", type=int, help="train models per scenario")
    group.add_argument("--eval-models", type=int, help="models per scenario in dev and in final")
    group.add_argument(
        "--dataset-len", type=int, help="synthetic dataset size (training sets scale with it)"
    )
    group.add_argument("--epochs", type=int, help="training epochs of every demo model")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    group.add_argument(
        "--workers",
        type=int,
        default=0,
        help="training processes on a CPU (default: one per core, at most 4, from 24 models on; "
        "else 1)",
    )
    group.add_argument(
        "--reference-dir",
        type=Path,
        help="where the dev/final ground truth goes (default: <root>/reference)",
    )


def default_workers(device: torch.device, pending: int) -> int:
    """Worker processes for CPU training: one per core (each single-threaded), at most 4.

    Small MLP/CNN batches use two threads poorly, and one thread per process keeps a shared
    machine from stalling OpenMP barriers; tiny runs stay in-process (spawning costs seconds).
    """
    if device.type != "cpu" or pending < 24:
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def run(args: argparse.Namespace) -> int:
    """Build (or finish) the demo dataset, bundle and reference answers for ``args.challenge``."""
    start = time.perf_counter()
    config = make_config(
        args.challenge,
        args.demo,
        seed=args.seed,
        train_models=args.train_models,
        eval_models=args.eval_models,
        dataset_len=args.dataset_len,
        epochs=args.epochs,
    )
    device = resolve_device(args.device)
    root = Path(args.root)
    data_root = data_dir(args)
    reference_root = args.reference_dir if args.reference_dir is not None else root / "reference"
    if args.workers < 0:
        raise ValueError(f"--workers must be 0 (automatic) or positive, got {args.workers}")

    markers = check_bundle(config, root, reference_root)  # refuse before writing anything
    if ensure_dataset(config, data_root):
        log.info(
            "synthesised %d %s records under %s", config.dataset_len, config.challenge, data_root
        )
    for path, content in markers:
        _write_json(path, content)
    built = build_models(
        config, root, reference_root, data_root, device=device, workers=args.workers
    )
    problems = check_layout(root, config.task)
    if problems:  # every model was just checked complete: this is a bug, not a user error
        raise RuntimeError(f"demo bundle incomplete: {problems[0]} ({len(problems)} problems)")
    log.info(
        "demo %s ready in %.1f s (%d models trained): bundle %s, ground truth %s\n%s",
        config.challenge,
        time.perf_counter() - start,
        built,
        root / config.challenge,
        reference_root / config.challenge,
        summary_table(config, root),
    )
    return 0


def summary_table(config: DemoConfig, root: Path) -> str:
    """Per scenario: models, mean accuracy and epsilon, read back from the model folders."""
    lines = [f"{'scenario':<18} {'models':>6} {'accuracy':>9} {'epsilon':>8}"]
    for suffix in SCENARIO_SUFFIXES:
        scenario = f"{config.challenge}_{suffix}"
        folders = [
            f for phase in PHASES for f in model_dirs(root / config.challenge / scenario, phase)
        ]
        acc = np.mean([float((f / "accuracy").read_text()) for f in folders])
        eps = np.mean([float((f / "epsilon").read_text()) for f in folders])
        lines.append(f"{scenario:<18} {len(folders):>6} {acc:>9.3f} {eps:>8.2f}")
    return "\n".join(lines)
