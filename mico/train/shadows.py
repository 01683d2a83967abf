"""Extra shadow models: ``train_shadows.py`` trains balanced shadows with MICO's recipes.

With MICO's 100 train models per scenario a challenge point has only about 17-24 OUT shadows
(CIFAR-10, Purchase-100), the ceiling the 2nd place named.  This module trains ``N`` more per
scenario, each on ``len_training`` records chosen by :mod:`mico.train.design`, with the recipe
the targets were trained with, and writes::

    <root>/shadows/<challenge>/<scenario>/design.npz        the keep matrix (see shadow_design)
    <root>/shadows/<challenge>/<scenario>/model_N/
        model.pt       state_dict as MICO saves it (DP models keep Opacus' "_module.")
        members.npy    sorted int64 dataset indices the model trained on
        recipe.json    recipe, DP target and noise, seeds: how to retrain it; "made_for":
                       the bundle and base data it was trained for (mico.outputs.plan.made_for),
                       which save_preds.py checks before using it
        epsilon        achieved epsilon at the scenario's delta ("inf": no DP)
        accuracy       accuracy on records it did not train on

Folders are built by the model farm (:mod:`mico.train.farm`): atomically, resumably (a rerun starts
at the first missing model, and ``--models`` can grow without retraining), on a local process pool
or GPU, or on a Ray cluster (:mod:`mico.train.ray_backend`).  Readers use :func:`extra_shadows`.

Recipes: a real bundle's models were trained with MICO's recipe (the track's registry entry),
a demo bundle's with the one its ``bundle.json`` records; ``--recipe FILE`` overrides either.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mico.bundle.check import require_layout
from mico.bundle.config import read_bundle_config
from mico.bundle.fileio import check_output_folder
from mico.bundle.layout import (
    ACCURACY_FILE,
    EPSILON_FILE,
    MEMBERS_FILE,
    MODEL_FILE,
    RECIPE_FILE,
    challenge_dir,
    data_root,
    is_model_dir_name,
    model_id,
    model_name,
    shadow_design_path,
    shadows_dir,
)
from mico.errors import InputError
from mico.outputs.plan import made_for, read_members
from mico.tracks.devices import resolve_device
from mico.tracks.recipes import Privacy, Recipe
from mico.tracks.registry import Task, load_task
from mico.train.design import Design, extend_design, load_design, scenario_pool
from mico.train.engine import dp_noise_multiplier
from mico.train.farm import ModelJob, build_models, seed_stream
from mico.train.optimizers import check_recipe_names
from mico.train.ray_backend import build_models_ray, check_reachable

log = logging.getLogger(__name__)

#: Stream tag of the shadows' training seeds.
_TRAIN_TAG = 0x7EED


@dataclass(frozen=True)
class ShadowOptions:
    """What ``train_shadows.py`` asks for.

    ``scenarios``: names (``purchase100_inf``) or suffixes (``inf``), all by default;
    ``ray``: ``None`` for the local pool/GPU, else ``auto``, ``local`` or a cluster address;
    ``recipe``: a JSON file overriding the bundle's recipe.
    """

    challenge: str
    root: Path
    models: int
    scenarios: tuple[str, ...] = ()
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    ray: str | None = None
    recipe: Path | None = None
    data_dir: Path | None = None


class ExtraShadow(NamedTuple):
    """One complete extra shadow model, as ``save_preds`` reads it."""

    id: int
    folder: Path
    members: np.ndarray
    model_path: Path


def extra_shadows(root: str | Path, task: Task, scenario: str) -> list[ExtraShadow]:
    """The complete extra shadows of a scenario in id order; unfinished folders are skipped
    (a folder exists only once complete, but files may have been removed by hand)."""
    base = shadows_dir(root, task.challenge, scenario)
    folders = [f for f in base.iterdir() if is_model_dir_name(f.name)] if base.is_dir() else []
    found = []
    for folder in sorted(folders, key=model_id):
        needed = (MEMBERS_FILE, EPSILON_FILE, ACCURACY_FILE, *task.model_files)
        if all((folder / name).is_file() for name in needed):
            members = read_members(folder / MEMBERS_FILE, task.dataset_len)
            found.append(ExtraShadow(model_id(folder), folder, members, folder / MODEL_FILE))
    return found


@dataclass(frozen=True)
class RecipeChoice:
    """The recipe shadows are trained with, the DP guarantee per scenario suffix (None: no
    DP), and whence they come."""

    recipe: Recipe
    privacy: dict[str, Privacy | None]
    source: str


def resolve_recipe(
    root: Path, task: Task, recipe_file: Path | None, scenario: str | None = None
) -> RecipeChoice:
    """``--recipe FILE``, else the demo recipe in ``bundle.json``, else MICO's for the track.

    A challenge made of several tracks (DDP) has a recipe per scenario: name ``scenario``.
    """
    part = task.at(scenario) if scenario is not None else task
    if recipe_file is not None:
        return _parse_recipe(_read_json(recipe_file), part, str(recipe_file))
    config = read_bundle_config(root, task.challenge)
    settings = None if config is None else config.demo_settings(scenario if task.parts else None)
    if settings is not None:
        return _parse_recipe(settings, part, f"{config.path} (demo)")
    return RecipeChoice(part.recipe, dict(part.privacy), f"MICO's {part.name} recipe")


def demo_architecture(root: Path, task: Task) -> Task:
    """``task`` with the architecture of the demo preset that made the bundle, where the preset
    has its own (SST-2's tiny RoBERTa): shadows must be the targets' architecture, and a
    roberta-base shadow of a tiny demo would also take hours on a CPU."""
    config = read_bundle_config(root, task.challenge)
    settings = None if config is None else config.demo_settings()
    preset = task.demo.presets.get(settings.get("preset")) if isinstance(settings, dict) else None
    if preset is None or preset.architecture is None:
        return task
    return task.replace(architecture=preset.architecture)


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a JSON object")
    return value


#: Keys of a recipe file besides the recipe: those of ``bundle.json``'s "demo" entry.
_RECIPE_KEYS = {"recipe", "dp_epsilon", "delta", "max_grad_norm"}
_INFORMATIONAL = {"preset", "seed", "synthesis_version", "comment"}


def _parse_recipe(settings: dict, task: Task, where: str) -> RecipeChoice:
    """A recipe in ``bundle.json``'s "demo" form: ``{"recipe": {Recipe fields}, "dp_epsilon":
    {"hi": 10, "lo": 4}, "delta": 1e-5, "max_grad_norm": 2.6}``, where ``delta`` and
    ``max_grad_norm`` are one value for every DP scenario or map suffixes to values (the
    recipe's own ``max_grad_norm`` is the format's older place for it, :meth:`Recipe.to_json`);
    what is missing keeps the track entry's recipe and guarantees."""
    settings = settings.get("demo", settings)  # a whole bundle.json is accepted too
    unknown = set(settings) - _RECIPE_KEYS - _INFORMATIONAL
    if unknown:
        raise InputError(f"{where}: unknown keys {sorted(unknown)}; allowed {sorted(_RECIPE_KEYS)}")
    fields = settings.get("recipe", {})
    names = {f.name for f in dataclasses.fields(Recipe)} | {"max_grad_norm"}
    if not isinstance(fields, dict) or set(fields) - names:
        raise InputError(f"{where}: 'recipe' must be an object with fields from {sorted(names)}")
    fields = dict(fields)
    clip = fields.pop("max_grad_norm", None)
    if clip is not None and settings.get("max_grad_norm", clip) != clip:
        raise InputError(
            f"{where}: max_grad_norm {settings['max_grad_norm']!r} contradicts the recipe's "
            f"{clip!r}; give one value"
        )
    try:
        recipe = task.recipe.replace(**fields)
    except TypeError as exc:
        raise InputError(f"{where}: {exc}") from None
    _check_recipe(recipe, where)
    suffixes = task.scenario_suffixes
    epsilons = settings.get("dp_epsilon", {})
    if not isinstance(epsilons, dict) or set(epsilons) - set(suffixes):
        raise InputError(f"{where}: 'dp_epsilon' maps {sorted(suffixes)} to epsilons")
    deltas = _per_suffix(settings.get("delta"), "delta", suffixes, where, upper=1)
    clips = _per_suffix(settings.get("max_grad_norm", clip), "max_grad_norm", suffixes, where)
    _per_suffix(epsilons, "dp_epsilon", suffixes, where, nullable=True)  # checks the values
    # A scenario made DP by the file takes the track's other DP scenarios' delta and clipping.
    template = next((p for _, p in task.privacy if p is not None), None)
    privacy: dict[str, Privacy | None] = {}
    for suffix, base in task.privacy:
        epsilon = epsilons[suffix] if suffix in epsilons else getattr(base, "epsilon", None)
        start = base or template
        delta = deltas.get(suffix, getattr(start, "delta", None))
        bound = clips.get(suffix, getattr(start, "max_grad_norm", None))
        if epsilon is not None and (delta is None or bound is None):
            raise InputError(f"{where}: DP for {suffix!r} needs 'delta' and 'max_grad_norm'")
        privacy[suffix] = None if epsilon is None else Privacy(float(epsilon), delta, bound)
    return RecipeChoice(recipe, privacy, where)


def _per_suffix(
    value: object,
    key: str,
    suffixes: tuple[str, ...],
    where: str,
    *,
    upper: float = float("inf"),
    nullable: bool = False,
) -> dict[str, float]:
    """``value`` as a map from scenario suffixes to numbers in ``(0, upper)``: one number is
    every scenario's; None (or a null in the map, where ``nullable``) sets nothing."""
    if value is None:
        return {}
    values = value if isinstance(value, dict) else dict.fromkeys(suffixes, value)
    if set(values) - set(suffixes):
        raise InputError(f"{where}: {key!r} maps {sorted(suffixes)} to numbers")
    for suffix, number in values.items():
        if number is None and nullable:
            continue
        real = isinstance(number, (int, float)) and not isinstance(number, bool)
        if not real or not 0 < number < upper:
            bound = f" below {upper}" if upper < float("inf") else ""
            raise InputError(
                f"{where}: {key} of {suffix!r} must be a positive number{bound}, got {number!r}"
            )
    return {k: float(v) for k, v in values.items() if v is not None}


def _check_recipe(recipe: Recipe, where: str) -> None:
    check_recipe_names(recipe, where)
    for name in ("batch_size", "epochs", "lr_step", "dp_batch_size"):
        value = getattr(recipe, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise InputError(f"{where}: {name} must be a positive integer, got {value!r}")
    for name in ("lr", "lr_gamma", "dp_lr"):
        value = getattr(recipe, name)
        if value is not None and (not isinstance(value, (int, float)) or not value > 0):
            raise InputError(f"{where}: {name} must be a positive number, got {value!r}")


def select_scenarios(task: Task, wanted: tuple[str, ...]) -> list[str]:
    """Scenario names from names or suffixes (``inf``); all when none are given."""
    if not wanted:
        return list(task.scenarios)
    chosen = []
    for name in wanted:
        full = name if name in task.scenarios else f"{task.name}_{name}"
        if full not in task.scenarios:
            raise InputError(
                f"unknown scenario {name!r}: choose from {', '.join(task.scenarios)} "
                f"(or {', '.join(task.scenario_suffixes)})"
            )
        if full not in chosen:
            chosen.append(full)
    return chosen


def scenario_jobs(
    options: ShadowOptions, task: Task, scenario: str, choice: RecipeChoice, data: str
) -> tuple[Design, list[ModelJob]]:
    """The scenario's design (extended to ``options.models`` and stored) and its model jobs;
    ``data`` is the digest of the base dataset they train on."""
    suffix = task.suffix(scenario)
    index = seed_stream(suffix)  # keyed by name: reordering scenarios changes no seed
    pool = scenario_pool(challenge_dir(options.root, task.challenge) / scenario, task)
    path = shadow_design_path(options.root, task.challenge, scenario)
    stored = load_design(path) if path.is_file() else None
    design = extend_design(stored, pool, task, options.models, options.seed, index, data)
    if design is not stored:
        design.save(path)
    privacy = choice.privacy[suffix]
    noise = clip = None
    if privacy is not None:
        noise = dp_noise_multiplier(choice.recipe, task.len_training, privacy)
        clip = privacy.max_grad_norm
    jobs = []
    for shadow in range(options.models):
        members = design.members(shadow)
        rng = np.random.default_rng([options.seed, _TRAIN_TAG, index, shadow])
        train_seed = int(rng.integers(0, 2**62))
        recipe_json = {
            "recipe": choice.recipe.to_json(clip),
            "recipe_source": choice.source,
            "dp_epsilon": None if privacy is None else privacy.epsilon,
            "delta": None if privacy is None else privacy.delta,
            "max_grad_norm": clip,
            "noise_multiplier": noise,
            "train_seed": train_seed,
            "design_seed": options.seed,
            "keep_fraction": design.fraction,
            "made_for": made_for(task.challenge, scenario, pool, data),
        }
        buffer = io.BytesIO()
        np.save(buffer, members.astype(np.int64))
        files = (
            (MEMBERS_FILE, buffer.getvalue()),
            (RECIPE_FILE, (json.dumps(recipe_json, indent=2) + "\n").encode()),
        )
        jobs.append(
            ModelJob(
                folder=shadows_dir(options.root, task.challenge, scenario) / model_name(shadow),
                label=f"{scenario}/{model_name(shadow)}",
                train_rows=members,
                eval_rows=design.held_out(shadow, members),
                privacy=privacy,
                train_seed=train_seed,
                files=files,
            )
        )
    return design, jobs


def _calibrate(choice: RecipeChoice, task: Task, scenarios: list[str]) -> None:
    """Every DP target's noise, before anything is written: an unreachable epsilon is an error
    (one line, no folder) rather than a crash after hours of training."""
    for scenario in scenarios:
        privacy = choice.privacy[task.suffix(scenario)]
        if privacy is None:
            continue
        try:
            dp_noise_multiplier(choice.recipe, task.len_training, privacy)
        except ValueError as exc:
            raise InputError(
                f"{scenario}: epsilon {privacy.epsilon} cannot be reached with {task.len_training} "
                f"records and {choice.recipe.epochs} epochs (PRV accountant: {exc}); raise the "
                "epsilon or change --recipe"
            ) from None


def run(options: ShadowOptions) -> int:
    """Train (or finish) ``options.models`` extra shadows per scenario; returns 0."""
    start = time.perf_counter()
    if options.models < 1:
        raise InputError(f"--models must be at least 1, got {options.models}")
    if options.workers < 0:
        raise InputError(f"--workers must be 0 (automatic) or positive, got {options.workers}")
    if options.seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {options.seed}")
    root = Path(options.root)
    task = load_task(root, options.challenge)
    if task.parts:
        raise InputError(
            f"train_shadows.py trains shadows for single-dataset challenges; {task.challenge}'s "
            "attack on its revealed training sets is run_lira_mia.py --attack reference"
        )
    require_layout(root, task)
    task = demo_architecture(root, task)
    scenarios = select_scenarios(task, options.scenarios)
    check_output_folder(shadows_dir(root, task.challenge, scenarios[0]).parent)
    device = resolve_device(options.device)
    choice = resolve_recipe(root, task, options.recipe)
    _calibrate(choice, task, scenarios)
    if options.ray is not None:
        check_reachable(options.ray)
    data = data_root(root, options.data_dir)
    log.info("recipe: %s (%d epochs)", choice.source, choice.recipe.epochs)
    digest = task.load_dataset(data).digest  # what every shadow and design records

    jobs: list[ModelJob] = []
    for scenario in scenarios:
        design, scenario_list = scenario_jobs(options, task, scenario, choice, digest)
        why = "1/2" if _is_half(design) else "1/2 is not feasible: the nearest feasible p"
        print(
            f"{scenario}: {len(design.pool)} pool points, each IN for p = {design.fraction:.4f} "
            f"of the shadows ({why})"
        )
        jobs.extend(scenario_list)
    desc = f"{task.challenge} shadows"
    if options.ray is not None:
        built = build_models_ray(
            jobs,
            task,
            choice.recipe,
            data,
            device=device,
            address=options.ray,
            workers=options.workers,
            desc=desc,
        )
    else:
        built = build_models(
            jobs, task, choice.recipe, data, device=device, workers=options.workers, desc=desc
        )
    log.info("%d shadow models trained in %.1f s", built, time.perf_counter() - start)
    print(summary_table(root, task, scenarios, options.models))
    return 0


def _is_half(design: Design) -> bool:
    return abs(design.fraction - 0.5) <= 1 / len(design.pool)


def summary_table(root: Path, task: Task, scenarios: list[str], models: int) -> str:
    """Per scenario: shadows present (of the ones asked for), mean accuracy, mean epsilon."""
    lines = [f"{'scenario':<18} {'models':>6} {'accuracy':>9} {'epsilon':>8}"]
    for scenario in scenarios:
        shadows = [s for s in extra_shadows(root, task, scenario) if s.id < models]
        acc = [float((s.folder / ACCURACY_FILE).read_text()) for s in shadows]
        eps = [float((s.folder / EPSILON_FILE).read_text()) for s in shadows]
        mean_acc = f"{np.mean(acc):>9.3f}" if acc else f"{'-':>9}"
        mean_eps = f"{np.mean(eps):>8.2f}" if eps else f"{'-':>8}"
        lines.append(f"{scenario:<18} {len(shadows):>6} {mean_acc} {mean_eps}")
    return "\n".join(lines)
