"""One registry of per-track constants, so no script retypes ``LEN_TRAINING``.

The 2nd-place scripts hard-coded CIFAR-10's ``LEN_TRAINING = 50000`` for Purchase-100 too (the
right value is 150000); every stage here takes a :class:`Task` instead.  A bundle may override the
dataset sizes with ``<challenge>/bundle.json`` (the offline demo bundles are smaller than MICO's).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

#: Phases in bundle order; ``train`` models come with seeds for every split and a solution.
PHASES: tuple[str, ...] = ("train", "dev", "final")

#: Scenario suffixes in MICO's order: no DP, then DP with epsilon 10 and 4 (delta 1e-5).
SCENARIO_SUFFIXES: tuple[str, ...] = ("inf", "hi", "lo")

#: Number of models per phase in the real MICO bundles (model_0..99, 100..149, 150..199).
MICO_MODELS_PER_PHASE: dict[str, int] = {"train": 100, "dev": 50, "final": 50}

#: Name of the optional file that overrides a track's sizes for one bundle.
BUNDLE_CONFIG = "bundle.json"


@dataclass(frozen=True)
class Task:
    """Everything that differs between the MICO tracks.

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
    model_name: str
    models_per_phase: tuple[tuple[str, int], ...] = tuple(MICO_MODELS_PER_PHASE.items())

    @property
    def scenarios(self) -> tuple[str, ...]:
        """Scenario folder names, e.g. ``("cifar10_inf", "cifar10_hi", "cifar10_lo")``."""
        return tuple(f"{self.name}_{suffix}" for suffix in SCENARIO_SUFFIXES)

    @property
    def num_challenges(self) -> int:
        """``2m``: challenge points per model (half members, half non-members)."""
        return 2 * self.len_challenge

    def expected_models(self, phase: str) -> int:
        """How many models a complete bundle holds in ``phase``."""
        return dict(self.models_per_phase)[phase]

    def validate(self) -> None:
        """Raise ``ValueError`` if the sizes cannot describe a MICO split tree."""
        m, n, big_n = self.len_challenge, self.len_training, self.dataset_len
        if m < 1 or n <= m or big_n < n + m:
            raise ValueError(
                f"inconsistent sizes for {self.name}: need 1 <= len_challenge < len_training and "
                f"dataset_len >= len_training + len_challenge, got dataset_len={big_n}, "
                f"len_training={n}, len_challenge={m}"
            )


TASKS: dict[str, Task] = {
    "cifar10": Task(
        name="cifar10",
        dataset_len=60_000,
        len_training=50_000,
        len_challenge=100,
        num_classes=10,
        model_name="CNN",
    ),
    "purchase100": Task(
        name="purchase100",
        dataset_len=197_324,
        len_training=150_000,
        len_challenge=100,
        num_classes=100,
        model_name="MLP",
    ),
}


def get_task(name: str) -> Task:
    """Look up a track by name, with an error that lists the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(
            f"unknown challenge {name!r}: choose one of {', '.join(sorted(TASKS))}"
        ) from None


def load_task(root: str | Path, name: str) -> Task:
    """The track's constants, overridden by ``<root>/<name>/bundle.json`` where it exists.

    The file may set ``dataset_len``, ``len_training``, ``len_challenge`` and
    ``models_per_phase`` (a ``{phase: count}`` object); unknown keys are an error so that a typo
    does not silently fall back to MICO's sizes.
    """
    task = get_task(name)
    path = Path(root) / name / BUNDLE_CONFIG
    if not path.is_file():
        return task
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not readable JSON ({exc}); fix or delete it") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object")
    allowed = {"dataset_len", "len_training", "len_challenge", "models_per_phase"}
    unknown = set(config) - allowed - {"comment", "demo"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    changes: dict[str, object] = {}
    for key in ("dataset_len", "len_training", "len_challenge"):
        if key in config:
            value = config[key]
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{path}: {key} must be a positive integer, got {value!r}")
            changes[key] = value
    if "models_per_phase" in config:
        counts = config["models_per_phase"]
        if not isinstance(counts, dict) or set(counts) != set(PHASES):
            raise ValueError(f"{path}: models_per_phase must map each of {PHASES} to a count")
        changes["models_per_phase"] = tuple((phase, int(counts[phase])) for phase in PHASES)
    task = dataclasses.replace(task, **changes)
    task.validate()
    return task
