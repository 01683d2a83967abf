"""What a track is: MICO's sizes for it, plus everything the pipeline does differently per track.

A :class:`Task` is the registry entry of one track (see :mod:`mico.tracks.registry`).  Its
constants may be overridden per bundle by ``bundle.json`` (demo bundles are smaller than
MICO's); its behaviour (architecture, loader, recipe, sources, demo) is the track's and never
changes.  Code that needs a track-specific step asks the task for it instead of testing
``task.name``, so a new track is one new module in :mod:`mico.tracks` and one line in the
registry.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mico.bundle.fileio import atomic_write
from mico.bundle.layout import MODEL_FILE
from mico.errors import InputError
from mico.tracks.recipes import Privacy, Recipe, ScenarioPrivacy
from mico.tracks.sources import Source

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mico.tracks.data import TensorPairDataset

#: Scenario suffixes in MICO's order: no DP, then DP with epsilon 10 and 4 (delta 1e-5).
SCENARIO_SUFFIXES: tuple[str, ...] = ("inf", "hi", "lo")


def mico_privacy(max_grad_norm: float) -> ScenarioPrivacy:
    """MICO's three scenarios of a track (MICO.md section 2): ``inf`` without DP, ``hi`` and
    ``lo`` at epsilon 10 and 4, both at delta 1e-5, clipped at the track's ``max_grad_norm``
    (its training scripts' ``--max_grad_norm``)."""
    guarantees = (None, Privacy(10.0, 1e-5, max_grad_norm), Privacy(4.0, 1e-5, max_grad_norm))
    return tuple(zip(SCENARIO_SUFFIXES, guarantees, strict=True))


#: Number of models per phase in the real MICO bundles (model_0..99, 100..149, 150..199).
MICO_MODELS_PER_PHASE: dict[str, int] = {"train": 100, "dev": 50, "final": 50}


@dataclass(frozen=True)
class Lazy:
    """A function named by module and attribute, imported on its first call.

    A track entry names its loader, architecture and model readers this way, so that the
    registry (and every ``--help``) answers without importing torch, pandas or transformers;
    the entry stays picklable for worker processes, as a plain function would be.
    """

    module: str
    name: str

    @property
    def __name__(self) -> str:  # as the function's (``Task.architecture_name``: ``CNN``, ``MLP``)
        return self.name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(self.module), self.name)(*args, **kwargs)


def call_model(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``: the forward pass of a track whose records are single tensors."""
    return model(x)


def save_state_dict(folder: Path, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``<folder>/model.pt``: the state_dict as MICO's image and tabular tracks save it."""
    import torch  # here, not at the top: the registry loads no torch

    del model  # the architecture is the track's: nothing about it is stored
    with atomic_write(folder / MODEL_FILE, "wb") as handle:
        torch.save(state, handle)


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
    #: The demo models' architecture where it differs from the track's (a tiny RoBERTa).
    architecture: Callable[[], nn.Module] | None = None


@dataclass(frozen=True)
class Demo:
    """How the offline demo makes this track's base dataset.

    ``synthesize(n, seed)`` returns ``(values, labels)`` in the on-disk value type (uint8);
    ``write(data_dir, values, labels)`` writes them in the real dataset's file format under
    ``<data_dir>/<track>/``; ``files(data_dir)`` lists the files the loader will read.
    """

    presets: Mapping[str, Preset]
    synthesize: Callable[[int, int], tuple[np.ndarray, np.ndarray]]
    write: Callable[[Path, np.ndarray, np.ndarray], None]
    files: Callable[[Path], list[Path]]


@dataclass(frozen=True, kw_only=True)
class Task:
    """One MICO track: its sizes, and (not compared, not printed) its behaviour.

    ``dataset_len`` is the length of MICO's full dataset (CIFAR-10: train then test images;
    Purchase-100: every row of ``dataset_purchase``), ``len_training`` the size of each model's
    training set (members included) and ``len_challenge`` the number ``m`` of members among the
    ``2m`` challenge points of a model.
    """

    name: str
    dataset_len: int
    len_training: int
    len_challenge: int
    num_classes: int
    models_per_phase: tuple[tuple[str, int], ...] = tuple(MICO_MODELS_PER_PHASE.items())
    #: The scenarios by suffix, in bundle order, each with the DP guarantee its models were
    #: trained to (None: no DP): the one owner of epsilon, delta and clipping.
    privacy: ScenarioPrivacy
    #: A fresh model of the track's architecture (MICO's initialisation).
    architecture: Callable[[], nn.Module] = field(compare=False, repr=False)
    #: Reads the base dataset from ``<data_dir>/<name>/`` in MICO's index order.
    loader: Callable[[Path], TensorPairDataset] = field(compare=False, repr=False)
    #: MICO's training recipe for the track (MICO.md section 6).
    recipe: Recipe = field(compare=False, repr=False)
    #: Opacus' per-sample gradient mode for the architecture (see :mod:`mico.train.engine`).
    grad_sample_mode: str = field(compare=False, repr=False)
    #: DP-SGD physical batch limit (records), or None for whole logical batches.
    physical_batch: int | None = field(default=None, compare=False, repr=False)
    #: Where the bundle and the base dataset are downloaded from.
    source: Source = field(compare=False, repr=False)
    #: How the offline demo synthesises the base dataset, and its presets.
    demo: Demo = field(compare=False, repr=False)
    #: The weight files of a model folder (MICO's image and tabular tracks: one state_dict).
    model_files: tuple[str, ...] = field(default=(MODEL_FILE,), compare=False, repr=False)
    #: Logits ``[B, C]`` of a model on a batch of records as stored in the dataset's ``x``:
    #: a plain call for tensors; a track whose records pack several inputs (token ids and an
    #: attention mask) unpacks them here, so batching, training and inference stay generic.
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] = field(
        default=call_model, compare=False, repr=False
    )
    #: Reads a model folder's weights file (``model_files[-1]``) as a model in eval mode on a
    #: device; ``None``: one state_dict (``model.pt``) loaded into ``architecture()`` by
    #: :func:`mico.tracks.models.load_model`.
    read_model: Callable[[Path, torch.device | str], nn.Module] | None = field(
        default=None, compare=False, repr=False
    )
    #: Writes a trained model's ``model_files`` into a folder, given the model (for its
    #: config) and its state_dict as training returned it.
    write_model: Callable[[Path, nn.Module, dict[str, torch.Tensor]], None] = field(
        default=save_state_dict, compare=False, repr=False
    )
    #: The seed files of a dev/final model: MICO reveals ``seed_challenge`` alone, the DP
    #: distinguisher also ``seed_training`` (the non-challenge part of the training set).
    eval_seeds: tuple[str, ...] = ("seed_challenge",)
    #: The challenge whose folder holds this track's scenarios when it is a scenario of another
    #: challenge (``cifar10_ddp`` lives under ``ddp/``); empty: the track's own name.
    group: str = ""
    #: The scenarios of a challenge made of several tracks (DDP), one track each; empty for a
    #: track whose scenarios all share its dataset and architecture.
    parts: tuple[Task, ...] = field(default=(), compare=False, repr=False)
    #: The parts (by track name) that the offline demo of such a challenge builds.
    demo_parts: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def scenario_suffixes(self) -> tuple[str, ...]:
        """The scenarios' suffixes in bundle order (``inf``, ``hi``, ``lo``)."""
        return tuple(suffix for suffix, _ in self.privacy)

    @property
    def challenge(self) -> str:
        """The ``--challenge`` name and folder: ``cifar10``, or ``ddp`` for ``cifar10_ddp``."""
        return self.group or self.name

    @property
    def scenarios(self) -> tuple[str, ...]:
        """Scenario folder names, e.g. ``("cifar10_inf", "cifar10_hi", "cifar10_lo")``."""
        if self.parts:
            return tuple(scenario for part in self.parts for scenario in part.scenarios)
        return tuple(f"{self.name}_{suffix}" for suffix in self.scenario_suffixes)

    def at(self, scenario: str) -> Task:
        """The track that ``scenario`` is made of: this one, or the part of a DDP-like
        challenge whose dataset, architecture and recipe the scenario uses."""
        for part in self.parts:
            if scenario in part.scenarios:
                return part
        if self.parts:
            raise InputError(
                f"{self.name} has no scenario {scenario!r}: choose from {', '.join(self.scenarios)}"
            )
        return self

    def scenario_name(self, name: str) -> str | None:
        """The scenario a ``--scenarios`` value names (a full name, a suffix such as ``lo``, or
        a part's track such as ``cifar10`` for ``cifar10_ddp``), or None."""
        for part in self.parts or (self,):
            for suffix, scenario in zip(part.scenario_suffixes, part.scenarios, strict=True):
                if name in (scenario, suffix) or (self.parts and name == part.name):
                    return scenario
        return None

    def demo_tracks(self, scenarios: tuple[str, ...] = ()) -> list[str]:
        """The tracks an offline demo of this challenge builds: its own, or its
        ``demo_parts`` (DDP), narrowed by ``--scenarios``."""
        if not self.parts:
            if scenarios:
                raise InputError(
                    "--scenarios with --demo picks datasets of a challenge made of several "
                    f"(ddp); a {self.name} demo builds all its scenarios"
                )
            return [self.name]
        unknown = [name for name in scenarios if self.scenario_name(name) is None]
        if unknown:
            valid = ", ".join(self.scenarios)
            raise InputError(f"--scenarios: unknown {', '.join(unknown)}; choose from {valid}")
        wanted = {self.scenario_name(name) for name in scenarios}
        built = [part for part in self.parts if part.name in self.demo_parts]
        tracks = [p.name for p in built if not wanted or wanted & set(p.scenarios)]
        if not tracks:
            demo = ", ".join(p.scenarios[0] for p in built)
            raise InputError(f"--scenarios: the {self.name} demo builds {demo} only")
        return tracks

    def suffix(self, scenario: str) -> str:
        """``scenario``'s suffix (``inf``, ``hi``, ``lo``, ``ddp``): what sets its recipe."""
        part = self.at(scenario)
        return part.scenario_suffixes[part.scenarios.index(scenario)]

    def scenario_privacy(self, scenario: str) -> Privacy | None:
        """The DP guarantee ``scenario``'s models were trained to (None: without DP)."""
        part = self.at(scenario)
        return dict(part.privacy)[self.suffix(scenario)]

    def dp_epsilon(self, scenario: str) -> float | None:
        """The target epsilon of ``scenario``'s models (None: trained without DP)."""
        privacy = self.scenario_privacy(scenario)
        return None if privacy is None else privacy.epsilon

    @property
    def num_challenges(self) -> int:
        """``2m``: challenge points per model (half members, half non-members)."""
        return 2 * self.len_challenge

    @property
    def architecture_name(self) -> str:
        """The architecture's class name (``CNN``, ``MLP``)."""
        return self.architecture.__name__

    def expected_models(self, phase: str) -> int:
        """How many models a complete bundle holds in ``phase``."""
        return dict(self.models_per_phase)[phase]

    def validate(self) -> None:
        """Raise ``ValueError`` if the sizes cannot describe a MICO split tree."""
        m, n, big_n = self.len_challenge, self.len_training, self.dataset_len
        if m < 1 or n <= m or big_n < n + m:
            raise InputError(
                f"inconsistent sizes for {self.name}: need 1 <= len_challenge < len_training and "
                f"dataset_len >= len_training + len_challenge, got dataset_len={big_n}, "
                f"len_training={n}, len_challenge={m}"
            )

    def replace(self, **changes: object) -> Task:
        """A copy with some sizes changed (``bundle.json``, demo presets), validated."""
        task = dataclasses.replace(self, **changes)  # type: ignore[arg-type]
        task.validate()
        return task

    def load_dataset(self, dataset_dir: str | Path) -> TensorPairDataset:
        """The track's base dataset, checked against this bundle's ``dataset_len``.

        A demo bundle paired with the real dataset (or the other way round) would silently map
        split indices to the wrong records; the length check catches that.  Labels outside
        ``0..num_classes-1`` would fail deep inside a forward pass, with a traceback: every
        track's loader checks its own format, and this checks what all of them return.
        """
        dataset = self.loader(Path(dataset_dir))
        if len(dataset) != self.dataset_len:
            raise InputError(
                f"the {self.name} data in {dataset_dir} has {len(dataset)} records but the "
                f"bundle expects dataset_len={self.dataset_len}: point --data-dir at the "
                "bundle's own data"
            )
        labels = dataset.y
        if labels.is_floating_point() or (
            len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes)
        ):
            last = self.num_classes - 1
            raise InputError(
                f"the {self.name} data in {dataset_dir} has labels outside 0..{last} (from "
                f"{labels.min().item()} to {labels.max().item()}); re-download it"
            )
        return dataset


#: Rows or images synthesised per random stream, to bound memory for large ``--dataset-len``.
SYNTH_CHUNK = 8192


def synth_stream(seed: int, track: int, part: int) -> np.random.Generator:
    """Independent random streams for a demo dataset: ``part`` 0 draws the class structure,
    ``part`` ``k >= 1`` the records of chunk ``k - 1`` (the model seeds use other streams)."""
    return np.random.default_rng([seed, 0xDA7A, track, part])
