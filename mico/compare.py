"""Every attack on one scenario's stored outputs, with honest train-phase estimates.

The attacks' configurations (:class:`Config`) and how they are run on a ``scores.npz``
(:class:`Predictor`), the choice of a variant or parameter by cross-validation
(:mod:`mico.selection`), and the comparison table's rows (:func:`compare_scenario`):

=============================  ==============================================================
row                            train-phase estimate
=============================  ==============================================================
``loss``                       one fixed configuration: scored directly
``lira <on/offline> <t> [gv]`` the 12 LiRA flag combinations, each fixed: scored directly
``lira (CV)``                  the LiRA flags chosen by k-fold CV
``hardness (CV)``              variant (score x calibration) chosen by k-fold CV
``rmia (CV)``                  offline ``a`` and ``gamma`` chosen by k-fold CV
``best of all (CV)``           any of the above configurations, chosen by k-fold CV
=============================  ==============================================================

Every train-phase prediction leaves the target's own row out of its shadow statistics. The
last row answers "which attack should I submit?" honestly: picking the best row of a table
of 50+ configurations on the same targets is itself a choice, and its estimate comes from
the same cross-validation. ``dev``/``final`` predictions use the choice made on all train
models, and can be scored where ground truth exists (the offline demo's ``reference/``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mico.attacks import (
    HARDNESS_SCORES,
    HARDNESS_VARIANTS,
    RmiaInputs,
    hardness_calibrated,
    loss_attack,
    minmax,
    rmia_from_inputs,
    rmia_inputs,
)
from mico.lira import TRANSFORMS, lira
from mico.scoring import MAIN_METRIC, metrics
from mico.selection import DEFAULT_FOLDS, cross_validate
from mico.store import ScenarioScores

ATTACKS: tuple[str, ...] = ("lira", "hardness", "rmia", "loss")

#: RMIA's offline ``a`` grid (ML Privacy Meter tunes it on the same 0.1 grid) and ``gamma``.
RMIA_A: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))
RMIA_GAMMA: tuple[float, ...] = (1.0, 2.0, 4.0)

#: Population size recommended for RMIA (``save_preds.py --population N``). The score is a
#: fraction of the N records, so N sets its resolution (1/N = 2e-4, far below the FPRs that
#: are scored) and the noise of each fraction; it costs N extra records per model (on CIFAR-10
#: 300 models x 5000 = 1.5 M CNN evaluations per scenario: minutes on a GPU).
RECOMMENDED_POPULATION = 5000

#: The configuration the 2nd place submitted: offline LiRA, probability, global variance.
SUBMITTED_LIRA = "lira offline prob gv"

CV_SUFFIX = " (CV)"
BEST_ROW = "best of all (CV)"


@dataclass(frozen=True)
class Config:
    """One fully specified attack: ``attack`` name, keyword ``params``, display ``label``."""

    attack: str
    label: str
    params: tuple[tuple[str, object], ...] = ()

    @property
    def kwargs(self) -> dict[str, object]:
        return dict(self.params)


def lira_label(transform: str, global_variance: bool, online: bool) -> str:
    """``lira <online|offline> <transform> [gv]``, e.g. ``lira offline prob gv``."""
    parts = ["lira", "online" if online else "offline", transform]
    return " ".join([*parts, "gv"] if global_variance else parts)


def lira_config(transform: str, global_variance: bool, online: bool) -> Config:
    """The LiRA configuration of one combination of the original flags."""
    return Config(
        "lira",
        lira_label(transform, global_variance, online),
        (("transform", transform), ("global_variance", global_variance), ("online", online)),
    )


def lira_configs() -> list[Config]:
    """The 12 flag combinations of the original ``run_lira_mia.py``, offline ones first."""
    return [
        lira_config(transform, global_variance, online)
        for online in (False, True)
        for transform in TRANSFORMS
        for global_variance in (False, True)
    ]


def hardness_configs() -> list[Config]:
    """Score x calibration variants of the 1st-place attack."""
    return [
        Config("hardness", f"hardness {s} {v}", (("score", s), ("variant", v)))
        for s in HARDNESS_SCORES
        for v in HARDNESS_VARIANTS
    ]


def rmia_configs() -> list[Config]:
    """Offline ``a`` x ``gamma`` grid of RMIA; the paper's gamma = 1 first."""
    return [
        Config("rmia", f"rmia a={a:.1f} gamma={g:g}", (("a", a), ("gamma", g)))
        for g in RMIA_GAMMA
        for a in RMIA_A
    ]


def loss_config() -> Config:
    return Config("loss", "loss")


def configs(attack: str) -> list[Config]:
    """Candidate configurations of one attack (one for ``loss``)."""
    if attack == "lira":
        return lira_configs()
    if attack == "hardness":
        return hardness_configs()
    if attack == "rmia":
        return rmia_configs()
    if attack == "loss":
        return [loss_config()]
    raise ValueError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")


def has_population(scores: ScenarioScores) -> bool:
    """Whether every phase's population outputs are stored (RMIA needs them)."""
    return (
        len(scores.population) > 0
        and scores.shadow_population is not None
        and all(data.population is not None for data in scores.phases.values())
    )


def population_error(where: str, challenge: str) -> str:
    """The one-line message for RMIA without population outputs."""
    return (
        f"{where}: no population outputs, which --attack rmia needs; run "
        f"`python save_preds.py --challenge {challenge} --population {RECOMMENDED_POPULATION}` "
        "(only the population records are evaluated; the rest is cached)"
    )


#: Below this many population records RMIA's score (a fraction of them) is too coarse.
MIN_USEFUL_POPULATION = 100


def small_population_warning(scores: ScenarioScores) -> str | None:
    """A warning when RMIA's score, a fraction of Q records, can take only Q + 1 values."""
    q = len(scores.population)
    if 0 < q < MIN_USEFUL_POPULATION:
        return (
            f"only {q} population records: RMIA's score takes {q + 1} values, so its "
            "low-FPR metrics mostly measure ties (the bundle has no more non-challenge records)"
        )
    return None


class Predictor:
    """Runs configurations on one scenario's stored outputs, sharing work between them.

    Hardness statistics are computed once per score type and phase, RMIA's inputs once per
    phase; every configuration's predictions are kept, so asking again is free.
    """

    def __init__(self, scores: ScenarioScores) -> None:
        self.scores = scores
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        self._rmia: dict[str, RmiaInputs] = {}

    def predict(self, config: Config, phase: str) -> np.ndarray:
        """Confidences ``[T, K]`` in [0, 1] of ``config`` on every target of ``phase``."""
        key = (config.label, phase)
        if key not in self._cache:
            self._cache[key] = self._run(config, phase)
        return self._cache[key]

    def _run(self, config: Config, phase: str) -> np.ndarray:
        scores, data = self.scores, self.scores.phases[phase]
        kwargs = config.kwargs
        if config.attack == "loss":
            return loss_attack(data.margin)
        if config.attack == "lira":
            return lira(
                scores.shadow_margin,
                scores.shadow_in,
                data.margin,
                data.points,
                data.shadow_or_none,
                **kwargs,
            )
        if config.attack == "hardness":
            return minmax(
                hardness_calibrated(
                    scores.shadow_margin,
                    scores.shadow_in,
                    data.margin,
                    data.points,
                    data.shadow_or_none,
                    **kwargs,
                )
            )
        if config.attack == "rmia":
            return rmia_from_inputs(self._rmia_inputs(phase), **kwargs)
        raise ValueError(f"unknown attack {config.attack!r}")

    def _rmia_inputs(self, phase: str) -> RmiaInputs:
        if phase not in self._rmia:
            scores, data = self.scores, self.scores.phases[phase]
            if not has_population(scores):
                raise ValueError("no population outputs: RMIA cannot run")
            self._rmia[phase] = rmia_inputs(
                scores.shadow_margin,
                scores.shadow_in,
                data.margin,
                data.points,
                scores.shadow_population,
                data.population,
                data.shadow_or_none,
            )
        return self._rmia[phase]


@dataclass
class RowResult:
    """One row of the comparison on one scenario.

    ``chosen``: the configuration used for ``dev``/``final`` (chosen on all train models);
    ``fold_choices``: the label chosen in each CV fold (empty for fixed rows);
    ``train``: the train-phase predictions the estimate is computed from ``[T, K]``;
    ``metrics``: ``{phase: official score dict}``.
    """

    chosen: Config
    fold_choices: list[str]
    train: np.ndarray
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


def evaluate_row(
    predictor: Predictor, candidates: list[Config], folds: int = DEFAULT_FOLDS
) -> RowResult:
    """Train-phase predictions of a row: its single configuration, or CV over candidates."""
    train = predictor.scores.phases["train"]
    if train.solution is None:
        raise ValueError("the train phase has no solutions: nothing to choose or score with")
    predictions = [predictor.predict(c, "train") for c in candidates]
    if len(candidates) == 1:
        return RowResult(candidates[0], [], predictions[0])
    selection = cross_validate(predictions, train.solution, folds)
    return RowResult(
        chosen=candidates[selection.chosen],
        fold_choices=[candidates[c].label for c in selection.fold_choice],
        train=selection.held_out,
    )


def comparison_rows(with_rmia: bool) -> dict[str, list[Config]]:
    """Row label -> candidate configurations, in table order."""
    rows: dict[str, list[Config]] = {"loss": [loss_config()]}
    rows.update({c.label: [c] for c in lira_configs()})
    rows["lira" + CV_SUFFIX] = lira_configs()
    rows["hardness" + CV_SUFFIX] = hardness_configs()
    if with_rmia:
        rows["rmia" + CV_SUFFIX] = rmia_configs()
    rows[BEST_ROW] = list({c.label: c for cs in rows.values() for c in cs}.values())
    return rows


@dataclass
class ScenarioComparison:
    """Every row on one scenario, and the train solution ``[T, K]`` its estimates score."""

    rows: dict[str, RowResult]
    solution: np.ndarray


def compare_scenario(
    scores: ScenarioScores,
    truths: Mapping[str, np.ndarray] | None = None,
    folds: int = DEFAULT_FOLDS,
) -> ScenarioComparison:
    """Every row of the comparison on one scenario, scored on train and on ``truths``.

    ``truths``: ``{phase: solution [T, K]}`` for ``dev``/``final`` ground truth, if known.
    RMIA is left out when the scenario has no population outputs.
    """
    predictor = Predictor(scores)
    solution = scores.phases["train"].solution
    rows = {}
    for label, candidates in comparison_rows(has_population(scores)).items():
        row = evaluate_row(predictor, candidates, folds)
        row.metrics["train"] = metrics(solution, row.train)
        for phase, truth in (truths or {}).items():
            row.metrics[phase] = metrics(truth, predictor.predict(row.chosen, phase))
        rows[label] = row
    return ScenarioComparison(rows, solution)


def phase_metrics(
    results: Mapping[str, ScenarioComparison], phase: str
) -> dict[str, dict[str, dict[str, float]]]:
    """``{row: {scenario: score dict}}`` of the rows scored on ``phase`` in every scenario."""
    labels = dict.fromkeys(label for result in results.values() for label in result.rows)
    return {
        label: {name: result.rows[label].metrics[phase] for name, result in results.items()}
        for label in labels
        if all(
            label in result.rows and phase in result.rows[label].metrics
            for result in results.values()
        )
    }


def choices(results: Mapping[str, ScenarioComparison]) -> dict[str, dict[str, str]]:
    """``{row: {scenario: "<chosen label> [n/k]"}}`` for rows that choose; n of the k CV folds
    chose the same as the choice made on all train models."""
    table: dict[str, dict[str, str]] = {}
    for name, result in results.items():
        for label, row in result.rows.items():
            if row.fold_choices:
                agree = row.fold_choices.count(row.chosen.label)
                table.setdefault(label, {})[name] = (
                    f"{row.chosen.label} [{agree}/{len(row.fold_choices)}]"
                )
    return table


def roc_panels(
    results: Mapping[str, ScenarioComparison],
) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Train-phase ROC inputs per scenario: ``loss``, the submitted LiRA, the LiRA row with
    the best train TPR at 10% FPR (if another), and every row chosen by CV but the last."""
    panels = {}
    for name, result in results.items():
        rows = result.rows
        lira_rows = [c.label for c in lira_configs() if c.label in rows]
        best_lira = max(lira_rows, key=lambda label: rows[label].metrics["train"][MAIN_METRIC])
        wanted = list(dict.fromkeys(["loss", SUBMITTED_LIRA, best_lira]))
        wanted += [
            label
            for label in rows
            if label.endswith(CV_SUFFIX) and label not in (BEST_ROW, "lira" + CV_SUFFIX)
        ]
        truth = result.solution.ravel()
        panels[name] = {
            label: (truth, rows[label].train.ravel()) for label in dict.fromkeys(wanted)
        }
    return panels


@dataclass
class AttackRun:
    """One attack on one scenario: ``predictions`` ``{phase: [T, K]}`` to write, the
    configuration they use, and the train-phase estimate (``train``, CV where chosen)."""

    predictions: dict[str, np.ndarray]
    row: RowResult


def run_attack(scores: ScenarioScores, attack: str, folds: int = DEFAULT_FOLDS) -> AttackRun:
    """Predictions of every phase for ``hardness``, ``rmia`` or ``loss``.

    The variant or parameter is chosen on all train models; train-phase predictions use it
    too (each target leaving itself out), while the reported estimate comes from CV.
    """
    if attack == "lira":
        raise ValueError("run LiRA with mico.lira.lira and its flags")
    candidates = configs(attack)
    predictor = Predictor(scores)
    row = evaluate_row(predictor, candidates, folds)
    predictions = {phase: predictor.predict(row.chosen, phase) for phase in scores.phases}
    return AttackRun(predictions, row)
