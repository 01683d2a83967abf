"""Every path and file name the project reads or writes, in one place.

::

    <root>/<challenge>/bundle.json                       sizes of a non-MICO (demo) bundle
    <root>/<challenge>/predictions.json                  which configuration wrote predictions
    <root>/<challenge>/<scenario>/<phase>/model_N/       a bundle model (MICO's layout)
        seed_challenge                                   every model
        seed_training                                    train models; DDP: every model
        seed_membership, solution.csv                    train models only
        model.pt                                         the target's state_dict
        epsilon, accuracy                                demo models: what training achieved
        prediction.csv                                   written by run_lira_mia.py
    <root>/reference/<challenge>/<scenario>/<phase>/model_N/   hidden ground truth (demo)
    <root>/shadows/<challenge>/<scenario>/model_N/       extra shadow models (train_shadows)
        model.pt, members.npy, recipe.json, epsilon, accuracy
    <root>/shadows/<challenge>/<scenario>/design.npz     their keep matrix (train_shadows)
    <root>/reference_models/<challenge>/<scenario>/<phase>/model_N/model_R/
        model.pt, solution.csv, epsilon, accuracy        per-target reference models
                                                         (run_lira_mia.py --attack reference)
    <preds>/<challenge>/<scenario>/scores.npz            save_preds.py's output (mico.outputs.store)
    <preds>/<challenge>/<scenario>/models/<kind>/model_N.npz     its per-model caches (kind:
                                                         the phase, or extra)
    <preds>/<challenge>/<scenario>/references/<phase>/model_N.npz  reference models' margins
                                                         on target N's challenge points
    <preds>/<challenge>/digests.json                     weight files' content digests by
                                                         path and stamp (mico.bundle.digests)

Model ids run on across phases as in MICO: train ``0..T-1``, dev from ``T``, final after dev.
Nothing here touches the disk except :func:`model_dirs`, which lists what exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from mico.errors import InputError

#: Phases in bundle order; ``train`` models come with seeds for every split and a solution.
PHASES: tuple[str, ...] = ("train", "dev", "final")

#: Optional file that overrides a track's sizes for one bundle.
BUNDLE_CONFIG = "bundle.json"

#: Beside ``bundle.json``: the parts of the bundle downloaded on purpose (``--scenarios``,
#: ``--phases``, ``--models``); absent for a whole bundle.
SELECTION_FILE = "selection.json"

SEED_FILES: tuple[str, ...] = ("seed_challenge", "seed_training", "seed_membership")
MODEL_FILE = "model.pt"
SOLUTION_FILE = "solution.csv"
PREDICTION_FILE = "prediction.csv"
#: What wrote the prediction.csv files (mico.bundle.manifest), beside bundle.json.
MANIFEST_FILE = "predictions.json"
EPSILON_FILE = "epsilon"
ACCURACY_FILE = "accuracy"
#: An extra shadow's membership: the sorted dataset indices it trained on.
MEMBERS_FILE = "members.npy"
#: How an extra shadow was trained (recipe, DP target, seeds).
RECIPE_FILE = "recipe.json"


#: The demo's dev/final ground truth (``run_lira_mia.py --truth``).  The folder keeps the name
#: it had before ``--truth`` was (``--reference``), so that existing demo roots still resolve.
TRUTH_DIR = "reference"
PREDS_DIR = "preds"
DATA_DIR = "data"
SCORES_FILE = "scores.npz"
#: Content digests of the weight files save_preds and the attacks read (mico.bundle.digests).
DIGESTS_FILE = "digests.json"
SHADOWS_DIR = "shadows"
#: The per-target models (``--attack reference``, mico.train.per_target); the on-disk name is the
#: attack's, kept so that the models existing roots trained are found and reused.
PER_TARGET_MODELS_DIR = "reference_models"
#: The keep matrix of a scenario's extra shadow models (mico.train.design).
SHADOW_DESIGN_FILE = "design.npz"

_MODEL_DIR = re.compile(r"^model_(0|[1-9]\d*)$")


def bundle_model_files(
    phase: str,
    model_files: tuple[str, ...] = (MODEL_FILE,),
    eval_seeds: tuple[str, ...] = SEED_FILES[:1],
) -> tuple[str, ...]:
    """Files of a complete bundle model: train models reveal all their seeds and solution,
    dev/final models ``eval_seeds`` (``task.eval_seeds``); ``model_files`` are the track's
    weight files (``task.model_files``)."""
    public = (*SEED_FILES, SOLUTION_FILE) if phase == "train" else eval_seeds
    return (*public, *model_files)


def model_name(model_id: int) -> str:
    """``model_N``, the folder name of model ``N``."""
    return f"model_{model_id}"


def model_id(model_dir: str | Path) -> int:
    """The ``N`` of a ``model_N`` folder (no leading zeros: ``model_04`` is not a model)."""
    match = _MODEL_DIR.match(Path(model_dir).name)
    if not match:
        raise InputError(f"{model_dir}: not a model_N folder")
    return int(match.group(1))


def is_model_dir_name(name: str) -> bool:
    """Whether ``name`` is a ``model_N`` folder name."""
    return _MODEL_DIR.match(name) is not None


def model_ids(models_per_phase: Iterable[tuple[str, int]], phase: str) -> range:
    """The ids of ``phase``'s models: MICO numbers train, dev and final consecutively."""
    first = 0
    for name, count in models_per_phase:
        if name == phase:
            return range(first, first + count)
        first += count
    raise InputError(f"unknown phase {phase!r}")


def challenge_dir(root: str | Path, challenge: str) -> Path:
    """``<root>/<challenge>``, the folder that holds the scenarios."""
    return Path(root) / challenge


def bundle_config_path(root: str | Path, challenge: str) -> Path:
    """``<root>/<challenge>/bundle.json``."""
    return challenge_dir(root, challenge) / BUNDLE_CONFIG


def manifest_path(root: str | Path, challenge: str) -> Path:
    """``<root>/<challenge>/predictions.json``: which configuration wrote the predictions."""
    return challenge_dir(root, challenge) / MANIFEST_FILE


def model_dir(root: str | Path, challenge: str, scenario: str, phase: str, model: int) -> Path:
    """``<root>/<challenge>/<scenario>/<phase>/model_N``."""
    return challenge_dir(root, challenge) / scenario / phase / model_name(model)


def model_dirs(scenario: str | Path, phase: str) -> list[Path]:
    """Existing ``model_N`` folders of one phase, in numeric order (``model_2`` first)."""
    folder = Path(scenario) / phase
    if not folder.is_dir():
        return []
    found = [entry for entry in folder.iterdir() if is_model_dir_name(entry.name)]
    return sorted((entry for entry in found if entry.is_dir()), key=model_id)


def truth_root(root: str | Path, truth: str | Path | None = None) -> Path:
    """Where the demo's hidden ground truth goes: ``truth`` or ``<root>/reference``."""
    return Path(truth) if truth is not None else Path(root) / TRUTH_DIR


def data_root(root: str | Path, data_dir: str | Path | None = None) -> Path:
    """The base-dataset folder: ``data_dir`` or ``<root>/data``."""
    return Path(data_dir) if data_dir is not None else Path(root) / DATA_DIR


def preds_root(root: str | Path, challenge: str, preds_dir: str | Path | None = None) -> Path:
    """``<preds-dir>/<challenge>``, by default ``<root>/preds/<challenge>``."""
    base = Path(preds_dir) if preds_dir is not None else Path(root) / PREDS_DIR
    return base / challenge


def scores_path(preds: str | Path, scenario: str) -> Path:
    """``<preds>/<scenario>/scores.npz`` (``preds`` from :func:`preds_root`)."""
    return Path(preds) / scenario / SCORES_FILE


def digests_path(preds: str | Path) -> Path:
    """``<preds>/digests.json`` (``preds`` from :func:`preds_root`): the weight-file digests."""
    return Path(preds) / DIGESTS_FILE


def model_cache_path(preds_scenario: str | Path, phase: str, model: int, suffix: str = "") -> Path:
    """A per-model cache ``<preds>/<scenario>/models/<phase>/model_N<suffix>.npz``."""
    return Path(preds_scenario) / "models" / phase / f"{model_name(model)}{suffix}.npz"


def shadows_dir(root: str | Path, challenge: str, scenario: str) -> Path:
    """``<root>/shadows/<challenge>/<scenario>``, the extra shadow models of a scenario."""
    return Path(root) / SHADOWS_DIR / challenge / scenario


def shadow_design_path(root: str | Path, challenge: str, scenario: str) -> Path:
    """``<root>/shadows/<challenge>/<scenario>/design.npz``, the extra shadows' keep matrix."""
    return shadows_dir(root, challenge, scenario) / SHADOW_DESIGN_FILE


def per_target_models_dir(
    root: str | Path, challenge: str, scenario: str, phase: str, model: int
) -> Path:
    """``<root>/reference_models/<challenge>/<scenario>/<phase>/model_N``: the per-target
    models of target ``model_N`` (:mod:`mico.train.per_target`)."""
    return Path(root) / PER_TARGET_MODELS_DIR / challenge / scenario / phase / model_name(model)


def per_target_cache_path(preds_scenario: str | Path, phase: str, model: int) -> Path:
    """``<preds>/<scenario>/references/<phase>/model_N.npz``: its per-target models' margins."""
    return Path(preds_scenario) / "references" / phase / f"{model_name(model)}.npz"
