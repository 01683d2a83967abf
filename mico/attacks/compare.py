"""Every attack on one scenario's stored outputs, with honest train-phase estimates.

How configurations run on a ``scores.npz`` (:class:`Predictor`), the choice of a variant or
parameter by cross-validation (:mod:`mico.selection`), and the comparison table's rows
(:func:`comparison_rows`, from the attacks of :data:`mico.attacks.registry.ATTACKS`
in order):

=============================  ==============================================================
row                            train-phase estimate
=============================  ==============================================================
one per configuration          attacks that show each (``loss``, every LiRA flag
                               combination): each fixed, scored directly
``<attack> (CV)``              attacks with several configurations: the configuration
                               chosen by k-fold CV
``best of all (CV)``           any of the above configurations, chosen by k-fold CV
=============================  ==============================================================

Every train-phase prediction leaves the target's own row out of its shadow statistics. The
last row answers "which attack should I submit?" honestly: picking the best row of a table
of 50+ configurations on the same targets is itself a choice, and its estimate comes from
the same cross-validation. ``dev``/``final`` predictions use the choice made on all train
models, and can be scored where ground truth exists (the offline demo's ``reference/``).
Attacks whose needs the stored outputs do not meet (:meth:`mico.attacks.base.Attack.missing`)
are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mico.attacks.base import Attack, Config
from mico.attacks.registry import get_attack
from mico.scoring import MAIN_METRIC, metrics
from mico.selection import DEFAULT_FOLDS, cross_validate
from mico.store import ScenarioScores

#: The configuration the 2nd place submitted: offline LiRA, probability, global variance.
SUBMITTED_LIRA = "lira offline prob gv"

CV_SUFFIX = " (CV)"
BEST_ROW = "best of all (CV)"


class Predictor:
    """Runs configurations on one scenario's stored outputs, sharing work between them.

    Each attack's :meth:`~mico.attacks.base.Attack.prepare` runs once per phase; every
    configuration's predictions are kept, so asking again is free.
    """

    def __init__(self, scores: ScenarioScores) -> None:
        self.scores = scores
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        self._prepared: dict[tuple[str, str], object] = {}

    def predict(self, config: Config, phase: str) -> np.ndarray:
        """Confidences ``[T, K]`` in [0, 1] of ``config`` on every target of ``phase``."""
        key = (config.label, phase)
        if key not in self._cache:
            attack = get_attack(config.attack)
            prepared_key = (attack.name, phase)
            if prepared_key not in self._prepared:
                self._prepared[prepared_key] = attack.prepare(self.scores, phase)
            prepared = self._prepared[prepared_key]
            self._cache[key] = attack.predict(self.scores, phase, config.params, prepared)
        return self._cache[key]


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


def comparison_rows(attacks: Sequence[Attack]) -> dict[str, list[Config]]:
    """Row label -> candidate configurations, in table order (see the module docstring)."""
    rows: dict[str, list[Config]] = {}
    for attack in attacks:
        candidates = attack.configs()
        if attack.show_each:
            rows.update({c.label: [c] for c in candidates})
        if len(candidates) > 1:
            rows[attack.name + CV_SUFFIX] = candidates
    rows[BEST_ROW] = list({c.label: c for cs in rows.values() for c in cs}.values())
    return rows


@dataclass
class ScenarioComparison:
    """Every row on one scenario, and the train solution ``[T, K]`` its estimates score."""

    rows: dict[str, RowResult]
    solution: np.ndarray


def side_by_side(
    results: Mapping[str, Mapping[str, ScenarioComparison]],
) -> dict[str, ScenarioComparison]:
    """Comparisons of the same scenarios under several shadow choices, ``{choice: {scenario:
    comparison}}``, as one comparison whose rows are ``"<row> [<choice>]"``, each row's
    choices next to each other (``--compare --shadows train all``)."""
    first = next(iter(results.values()))
    merged = {}
    for scenario, comparison in first.items():
        rows = {
            f"{label} [{choice}]": by_scenario[scenario].rows[label]
            for label in comparison.rows
            for choice, by_scenario in results.items()
        }
        merged[scenario] = ScenarioComparison(rows, comparison.solution)
    return merged


def compare_scenario(
    scores: ScenarioScores,
    attacks: Sequence[Attack],
    truths: Mapping[str, np.ndarray] | None = None,
    folds: int = DEFAULT_FOLDS,
) -> ScenarioComparison:
    """Every row of the comparison of ``attacks`` on one scenario, scored on train and on
    ``truths`` (``{phase: solution [T, K]}`` for ``dev``/``final`` ground truth, if known)."""
    predictor = Predictor(scores)
    solution = scores.phases["train"].solution
    rows = {}
    for label, candidates in comparison_rows(attacks).items():
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
        lira_rows = [c.label for c in get_attack("lira").configs() if c.label in rows]
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
