"""The library behind ``run_lira_mia.py``: run one attack (or compare them all) on a bundle.

:func:`run_challenge` reads ``save_preds.py``'s ``scores.npz`` of every scenario, writes
``prediction.csv`` for every model of every phase, and scores the train phase (which has ground
truth) and, given a ``truth`` folder, dev/final. Where an attack chooses among several
configurations, the choice is made on the train models and the train-phase numbers are a
k-fold cross-validation estimate (:mod:`mico.attacks.selection`). :func:`compare_challenge`
scores every row of :mod:`mico.attacks.compare` and writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mico.attacks.base import Attack, Config, Params
from mico.attacks.compare import (
    BEST_ATTACK,
    BEST_ROW,
    DEFAULT_UNCERTAINTY,
    Predictor,
    RowResult,
    ScenarioComparison,
    Uncertainty,
    compare_scenario,
    comparison_rows,
    evaluate_row,
    measure_row,
)
from mico.attacks.reference import DEFAULT_REFERENCES, check_count
from mico.attacks.registry import ATTACKS, DEFAULT_ATTACK, get_attack
from mico.attacks.selection import DEFAULT_FOLDS
from mico.attacks.truth import truth_solutions
from mico.bundle.check import require_layout, scenario_dirs
from mico.bundle.digests import DigestStore
from mico.bundle.fileio import check_output_file, write_text_atomic
from mico.bundle.layout import (
    PREDICTION_FILE,
    digests_path,
    manifest_path,
    model_dir,
    preds_root,
    scores_path,
)
from mico.bundle.manifest import write_manifest
from mico.bundle.records import prediction_line
from mico.errors import InputError
from mico.outputs.provenance import load_checked
from mico.outputs.store import ScenarioScores
from mico.tracks.registry import Task, load_task

log = logging.getLogger(__name__)

#: The stage that trains per-target models (:func:`mico.train.per_target.run_stage`)
#: for a run that needs them: ``(options, task, scenario, scores, preds, count)``, attaching
#: their margins to ``scores``; returns the models trained.  The attacks import no training
#: code: whoever runs them (``run_lira_mia.py``) passes the stage in.
PerTargetStage = Callable[["RunOptions", Task, str, ScenarioScores, Path, int], int]


@dataclass(frozen=True)
class RunOptions:
    """What to attack and how.

    ``params``: a fixed configuration of ``attack`` (e.g. the LiRA flags); None chooses among
    the attack's configurations by ``folds``-fold CV on the train phase (or takes its only
    one). ``attack`` may name a variant (:data:`mico.attacks.registry.VARIANTS`): ``original``
    is LiRA exactly as the published scripts compute it. ``truth``: ground truth of dev/final to
    score them too (``--truth``, the demo's ``reference/``). ``write``: write ``prediction.csv``
    files (``--no-write`` scores only).
    """

    root: Path
    challenge: str
    preds_dir: Path | None = None
    attack: str = DEFAULT_ATTACK
    params: Params | None = None
    folds: int = DEFAULT_FOLDS
    truth: Path | None = None
    write: bool = True
    #: Which shadow rows the attack uses: ``train`` (the bundle's train models), ``extra``
    #: (``train_shadows.py``'s) or ``all``; None: ``all`` where extra shadows exist.  An attack
    #: that fixes its shadows (:attr:`~mico.attacks.base.Attack.shadows`) overrides it.
    shadows: str | None = None
    #: Per-target models a target (``--references``, :mod:`mico.train.per_target`); None: the
    #: default for an attack that needs them, none otherwise.  The rest: where and how they
    #: train.
    references: int | None = None
    data_dir: Path | None = None
    device: str = "auto"
    workers: int = 0
    ray: str | None = None
    #: Trains the per-target models (:data:`PerTargetStage`); needed only where some are.
    per_target_stage: PerTargetStage | None = None
    #: Intervals, the bootstrap behind every choice, and epsilon audits.
    uncertainty: Uncertainty = DEFAULT_UNCERTAINTY


#: ``--shadows`` choices and the shadow kinds each keeps.
SHADOW_CHOICES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "extra": ("extra",),
    "all": ("train", "extra"),
}


def load_scores(
    path: Path, options: RunOptions, task: Task, scenario: str, digests: DigestStore | None = None
) -> ScenarioScores:
    """A scenario's ``scores.npz``, checked against the bundle it claims to come from
    (:mod:`mico.outputs.provenance`; ``digests`` remembers the weight files' digests), keeping the
    shadow rows the attack fixes or ``options.shadows`` asks for (:func:`shadow_choice`).
    """
    return keep_shadows(
        load_checked(path, options.root, task, scenario, digests), shadow_choice(options)
    )


def keep_shadows(scores: ScenarioScores, choice: str | None) -> ScenarioScores:
    """``scores`` with the shadow rows of a ``--shadows`` choice (None: all of them)."""
    return scores if choice is None else scores.select_shadows(SHADOW_CHOICES[choice])


@dataclass
class ChallengeRun:
    """The outcome of :func:`run_challenge`: train metrics ``{scenario: score dict}``,
    dev/final metrics ``{"<scenario> <phase>": score dict}`` (with ``truth``), the train
    ROC inputs ``{scenario: (truth, predictions)}``, a one-line description, and per scenario
    everything measured (:class:`~mico.attacks.compare.RowResult`: metrics, replicates and
    epsilon bounds per phase); with ``--attack best``, the comparison it chose from."""

    task: Task
    description: str
    train: dict[str, dict[str, float]] = field(default_factory=dict)
    held_out: dict[str, dict[str, float]] = field(default_factory=dict)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    measured: dict[str, RowResult] = field(default_factory=dict)
    comparisons: dict[str, ScenarioComparison] = field(default_factory=dict)


def shadow_choice(options: RunOptions) -> str | None:
    """The ``--shadows`` choice in effect: the one the attack fixes (``--original``: train),
    else ``options.shadows``."""
    return _fixed_shadows(options) or options.shadows


def _fixed_shadows(options: RunOptions) -> str | None:
    return next((a.shadows for a in _attacks_of(options) if a.shadows is not None), None)


def check_options(options: RunOptions) -> Task:
    """Validate the options and the bundle's layout (:func:`mico.bundle.check.require_layout`);
    return its task."""
    if options.attack != BEST_ATTACK:
        attack = get_attack(options.attack)
        if options.params is not None:
            attack.config(options.params)
    rule = options.uncertainty.rule
    if rule.n_boot < 100:
        raise InputError(f"--bootstrap must be at least 100 replicates, got {rule.n_boot}")
    uncertainty = options.uncertainty
    if uncertainty.audit_delta is not None and not 0 <= uncertainty.audit_delta < 1:
        raise InputError(f"--delta must be in [0, 1), got {uncertainty.audit_delta}")
    if not 0 < uncertainty.audit_level < 1:
        raise InputError(f"--audit-level must be in (0, 1), got {uncertainty.audit_level}")
    if options.folds < 2:
        raise InputError("--folds must be at least 2")
    if options.shadows is not None and options.shadows not in SHADOW_CHOICES:
        raise InputError(f"--shadows must be one of {', '.join(SHADOW_CHOICES)}")
    if options.references is not None:
        check_count(options.references)
    if options.workers < 0:
        raise InputError(f"--workers must be 0 (automatic) or positive, got {options.workers}")
    task = load_task(options.root, options.challenge)
    require_layout(options.root, task)
    for attack in _attacks_of(options):
        attack.check_bundle(options.root, task)
    if options.truth is not None and not (options.truth / task.challenge).is_dir():
        raise FileNotFoundError(f"{options.truth / task.challenge} not found (--truth)")
    return task


def describe(options: RunOptions) -> str:
    """A one-line name of what :func:`run_challenge` runs, for titles."""
    if options.attack == BEST_ATTACK:
        return f"{BEST_ROW} (every attack; {options.folds}-fold CV estimate of its choice)"
    attack = get_attack(options.attack)
    if options.params is not None:
        return attack.config(options.params).label
    candidates = attack.configs()
    if len(candidates) == 1:
        return candidates[0].label
    return f"{attack.name} ({options.folds}-fold CV estimate of the variant chosen on train)"


def run_challenge(options: RunOptions) -> ChallengeRun:
    """Run one attack on every scenario; write and score its predictions (module docstring).

    The predictions are replaced as one set: every input (each ``scores.npz``, the ``truth``
    solutions, the model folders to write into) is read and checked and every prediction is
    computed before the first file is written, and :mod:`mico.bundle.manifest` records which
    configuration wrote them, so a run stopped half-way is detected by ``save_zip.py``.
    """
    task = check_options(options)
    if options.write:  # the first file written (mico.bundle.manifest), checked before any work
        check_output_file(manifest_path(options.root, task.challenge))
    result = ChallengeRun(task, describe(options))
    preds = preds_root(options.root, task.challenge, options.preds_dir)
    scenarios = {s.name: scores_path(preds, s.name) for s in scenario_dirs(options.root, task)}
    digests = DigestStore(digests_path(preds))
    loaded = {
        name: load_scores(path, options, task, name, digests) for name, path in scenarios.items()
    }
    digests.save()
    count = per_target_count(options)
    for name, scores in loaded.items():
        _attach_per_target_models(options, task, name, scores, preds, count)
    if options.write:
        _check_model_folders(options.root, task, loaded)
    truths = {name: _truths(options, task, name, scores) for name, scores in loaded.items()}
    outputs = {}
    for stream, (name, scores) in enumerate(loaded.items()):
        if options.attack == BEST_ATTACK:
            comparison = _compare_one(options, task, scores, scenarios[name], truths[name], stream)
            result.comparisons[name] = comparison
            best = comparison.rows[BEST_ROW]
            assert comparison.predictor is not None
            chosen = {p: comparison.predictor.predict(best.chosen, p) for p in scores.phases}
            outputs[name] = (best.train, chosen)
            result.measured[name] = best
        else:
            outputs[name] = attack_scenario(scores, scenarios[name], task, options)
    if options.write:
        _write_predictions(options, task, loaded, {n: out[1] for n, out in outputs.items()})
    for stream, (name, scores) in enumerate(loaded.items()):
        estimate, predictions = outputs[name]
        train = scores.phases.get("train")
        if train is None or train.solution is None or estimate is None:
            continue
        if name not in result.measured:
            row = RowResult(_config_of(options), [], estimate)
            phases = {"train": estimate, **{p: predictions[p] for p in truths[name]}}
            solutions = {"train": train.solution, **truths[name]}
            measure_row(row, phases, solutions, options.uncertainty, stream)
            result.measured[name] = row
        row = result.measured[name]
        result.train[name] = row.metrics["train"]
        result.curves[name] = (train.solution.ravel(), estimate.ravel())
        for phase in truths[name]:
            result.held_out[f"{name} {phase}"] = row.metrics[phase]
        log.info("%s: predictions for %s", name, ", ".join(scores.phases))
    if not result.train:
        raise InputError("no train phase with solutions: nothing to score")
    return result


def _attacks_of(options: RunOptions) -> list[Attack]:
    """The attack whose needs decide what a run builds (``best``: none, as ``--compare``)."""
    if options.attack == BEST_ATTACK:
        return []
    return [get_attack(options.attack)]


def _config_of(options: RunOptions) -> Config:
    """The configuration a run reports."""
    fixed = _fixed_config(options)
    if fixed is not None:
        return fixed
    attack = get_attack(options.attack)
    return Config(attack.name, describe(options))


def per_target_count(options: RunOptions) -> int | None:
    """How many per-target models a target the run builds (None: none, and no stage needed):
    ``--references``, else the default where the attack needs them (``--compare`` builds none
    unless asked: they cost training)."""
    if options.references is not None:
        return options.references
    needed = any(a.needs_references for a in _attacks_of(options))
    return DEFAULT_REFERENCES if needed else None


def _attach_per_target_models(
    options: RunOptions,
    task: Task,
    scenario: str,
    scores: ScenarioScores,
    preds: Path,
    count: int | None,
) -> None:
    """Build or reuse the scenario's per-target models and attach their margins."""
    if count is None:
        return
    if options.per_target_stage is None:
        raise InputError(
            f"{scenario}: this run uses {count} per-target models a target, and no stage to train "
            "them was given: pass RunOptions(per_target_stage=mico.train.per_target.run_stage)"
        )
    built = options.per_target_stage(options, task, scenario, scores, preds, count)
    log.info("%s: %d reference models trained, %d a target in use", scenario, built, count)


def _truths(
    options: RunOptions, task: Task, scenario: str, scores: ScenarioScores
) -> dict[str, np.ndarray]:
    """``{phase: solution [T, K]}`` of dev/final from ``options.truth`` (empty without)."""
    if options.truth is None:
        return {}
    return {
        phase: truth_solutions(options.truth, task, scenario, phase, data.ids, options.root)
        for phase, data in scores.phases.items()
        if phase != "train"
    }


def _check_model_folders(root: Path, task: Task, loaded: dict[str, ScenarioScores]) -> None:
    """Refuse, listing them, model folders of ``scores.npz`` that the bundle lacks: writing
    would create a folder holding only ``prediction.csv``."""
    missing = [
        folder
        for name, scores in loaded.items()
        for phase, data in scores.phases.items()
        for folder in (model_dir(root, task.challenge, name, phase, int(i)) for i in data.ids)
        if not folder.is_dir()
    ]
    if missing:
        shown = ", ".join(str(folder) for folder in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(
            f"{len(missing)} model folders that scores.npz covers are not in the bundle: "
            f"{shown}{more}; restore them, or rerun save_preds.py for this bundle"
        )


def _write_predictions(
    options: RunOptions,
    task: Task,
    loaded: dict[str, ScenarioScores],
    predictions: dict[str, dict[str, np.ndarray]],
) -> None:
    """The manifest first (:mod:`mico.bundle.manifest`), then every ``prediction.csv``."""
    texts = {}
    for name, scores in loaded.items():
        for phase, data in scores.phases.items():
            for model, values in zip(data.ids, predictions[name][phase], strict=True):
                folder = model_dir(options.root, task.challenge, name, phase, int(model))
                path = folder / PREDICTION_FILE
                texts[path] = prediction_line(values, path)
    write_manifest(options.root, task.challenge, configuration(options), texts)
    for path, text in texts.items():
        write_text_atomic(path, text)


def configuration(options: RunOptions) -> str:
    """The name the manifest records for what these options write (with the shadows chosen,
    so sets written with and without extra shadows are told apart)."""
    if options.attack == BEST_ATTACK:
        name = f"{BEST_ROW}, chosen by {options.folds}-fold CV"
    elif options.params is None and len(get_attack(options.attack).configs()) > 1:
        name = f"{options.attack}, chosen by {options.folds}-fold CV"
    else:
        name = describe(options)
    if options.shadows is not None and _fixed_shadows(options) is None:
        name += f", --shadows {options.shadows}"
    if count := per_target_count(options):
        name += f", {count} reference models a target"
    return name


def attack_scenario(
    scores: ScenarioScores, path: Path, task: Task, options: RunOptions
) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """The train-phase predictions to score (a CV estimate where a choice is made) and the
    predictions to write, ``{phase: [T, K]}``."""
    attack = get_attack(options.attack)
    if reason := attack.missing(scores, task.challenge):
        raise InputError(f"{path}: {reason}")
    scores = attack.read_bundle(scores, options.root, task, path.parent.name)
    if warning := attack.warning(scores):
        log.warning("%s: %s", path.parent.name, warning)
    predictor = Predictor(scores)
    fixed = _fixed_config(options)
    if fixed is not None:
        predictions = {phase: predictor.predict(fixed, phase) for phase in scores.phases}
        return predictions.get("train"), predictions
    if "train" not in scores.phases or scores.phases["train"].solution is None:
        raise InputError(f"{path}: no train phase with solutions to run {attack.name} with")
    row = evaluate_row(predictor, attack.configs(), options.folds, options.uncertainty.rule)
    _log_choice(path, row)
    return row.train, {phase: predictor.predict(row.chosen, phase) for phase in scores.phases}


def _fixed_config(options: RunOptions) -> Config | None:
    """The configuration to run as is, or None when the attack chooses by CV."""
    if options.attack == BEST_ATTACK:
        return None
    attack = get_attack(options.attack)
    if options.params is not None:
        return attack.config(options.params)
    candidates = attack.configs()
    return candidates[0] if len(candidates) == 1 else None


def _log_choice(path: Path, row: RowResult) -> None:
    log.info(
        "%s: %s chosen on all train models (%d of %d CV folds chose it too)",
        path.parent.name,
        row.chosen.label,
        row.fold_choices.count(row.chosen.label),
        len(row.fold_choices),
    )


def compare_challenge(options: RunOptions) -> tuple[Task, dict[str, ScenarioComparison]]:
    """Every row of the comparison on every scenario (``options.attack``/``params`` unused)."""
    task, by_choice = compare_shadow_choices(options, [options.shadows])
    return task, by_choice[options.shadows]


def compare_shadow_choices(
    options: RunOptions, choices: Sequence[str | None]
) -> tuple[Task, dict[str | None, dict[str, ScenarioComparison]]]:
    """:func:`compare_challenge` once per ``--shadows`` choice (``--compare --shadows train
    all``), ``{choice: {scenario: comparison}}``.  Each scenario's ``scores.npz`` is read and
    checked once, its per-target models attached and its truth read once; every choice cuts its
    shadow rows from that one copy (``options.shadows`` unused)."""
    task = check_options(options)
    unknown = [c for c in choices if c is not None and c not in SHADOW_CHOICES]
    if unknown:
        raise InputError(f"--shadows must be one of {', '.join(SHADOW_CHOICES)}")
    preds = preds_root(options.root, task.challenge, options.preds_dir)
    results: dict[str | None, dict[str, ScenarioComparison]] = {c: {} for c in choices}
    digests = DigestStore(digests_path(preds))
    for stream, scenario in enumerate(scenario_dirs(options.root, task)):
        path = scores_path(preds, scenario.name)
        stored = load_checked(path, options.root, task, scenario.name, digests)
        digests.save()
        _attach_per_target_models(options, task, scenario.name, stored, preds, options.references)
        truths = _truths(options, task, scenario.name, stored)
        for choice, found in results.items():
            scores = keep_shadows(stored, choice)
            found[scenario.name] = _compare_one(options, task, scores, path, truths, stream)
            log.info("%s: %d rows compared", scenario.name, len(found[scenario.name].rows))
    return task, results


def _compare_one(
    options: RunOptions,
    task: Task,
    scores: ScenarioScores,
    path: Path,
    truths: dict[str, np.ndarray],
    stream: int,
) -> ScenarioComparison:
    """Every row of the comparison on one scenario: the attacks its outputs can serve."""
    if "train" not in scores.phases or scores.phases["train"].solution is None:
        raise InputError(f"{path}: no train phase with solutions: nothing to compare on")
    attacks = available_attacks(scores, task, path)
    rows = len(comparison_rows(attacks))
    with tqdm(total=rows, desc=path.parent.name, unit="row", disable=None, delay=2) as bar:
        return compare_scenario(
            scores, attacks, truths, options.folds, options.uncertainty, stream, bar.update
        )


def available_attacks(scores: ScenarioScores, task: Task, path: Path) -> list[Attack]:
    """The registered attacks the stored outputs at ``path`` can serve, each left out or
    weak on them logged with why."""
    attacks = []
    for attack in ATTACKS.values():
        if reason := attack.missing(scores, task.challenge):
            log.warning("%s left out: %s: %s", attack.name, path, reason)
            continue
        if warning := attack.warning(scores):
            log.warning("%s: %s", path.parent.name, warning)
        attacks.append(attack)
    return attacks
