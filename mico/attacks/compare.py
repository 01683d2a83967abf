"""Every attack on one scenario's stored outputs, with honest train-phase estimates.

How configurations run on a ``scores.npz`` (:class:`Predictor`), the choice of a variant or
parameter by cross-validation (:mod:`mico.attacks.selection`), and the comparison table's rows
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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mico.attacks.audit import (
    AuditCounts,
    ClusterBootstrap,
    Interval,
    audit,
    bootstrap_counts,
    percentile_interval,
)
from mico.attacks.base import Attack, Config
from mico.attacks.inputs import PhaseInputs, scenario_inputs
from mico.attacks.registry import get_attack
from mico.attacks.selection import (
    DEFAULT_FOLDS,
    DEFAULT_RULE,
    Rule,
    candidate_bootstraps,
    cross_validate,
)
from mico.errors import InputError
from mico.outputs.store import ScenarioScores
from mico.scoring import FPR_LIMITS, MAIN_METRIC, metrics

#: The configuration the 2nd place submitted: offline LiRA, probability, global variance (the
#: ROC panels show it beside the baseline and LiRA's best configuration).
SUBMITTED_LIRA = "lira offline prob gv"
SUBMITTED_LIRA_ATTACK = "lira"

CV_SUFFIX = " (CV)"
BEST_ROW = "best of all (CV)"
#: ``run_lira_mia.py --attack best``: write what ``BEST_ROW`` chose.
BEST_ATTACK = "best"

#: The metrics every table gives an interval (official keys), in table order.
INTERVAL_KEYS: tuple[str, ...] = ("TPR_FPR_10", "TPR_FPR_100", "TPR_FPR_1000", "AUC")

#: Phases in the order their bootstrap streams are numbered.
PHASE_STREAM = {"train": 0, "dev": 1, "final": 2}


def metric_replicates(boot: ClusterBootstrap, counts: np.ndarray) -> dict[str, np.ndarray]:
    """``{key: float [B]}``: each of :data:`INTERVAL_KEYS` in every replicate of ``counts``."""
    tprs = boot.tpr(counts, [FPR_LIMITS[key] for key in INTERVAL_KEYS[:-1]])
    values = {key: tprs[:, j] for j, key in enumerate(INTERVAL_KEYS[:-1])}
    values["AUC"] = boot.auc(counts)
    return values


def phase_bootstrap(predictions: np.ndarray, solution: np.ndarray) -> ClusterBootstrap:
    """The cluster bootstrap of one phase's ``[T, K]`` predictions, targets as clusters."""
    return candidate_bootstraps(np.asarray(predictions)[None], solution)[0]


@dataclass(frozen=True)
class Uncertainty:
    """What ``--compare`` and an attack run measure beyond point values.

    ``rule``: the bootstrap (replicates, seed, level) behind the intervals and behind every
    choice (:mod:`mico.attacks.selection`); ``intervals``: whether rows keep replicates;
    ``audit_delta``/``audit_level``: empirical epsilon lower bounds (None: none).
    """

    rule: Rule = DEFAULT_RULE
    intervals: bool = True
    audit_delta: float | None = None
    audit_level: float = 0.95

    def counts(self, n_targets: int, stream: int, phase: str) -> np.ndarray:
        """The draw counts of one scenario (its position ``stream``) and phase: shared by every
        row, so rows compare paired; independent across scenarios and phases."""
        seed = (self.rule.seed, stream, PHASE_STREAM.get(phase, len(PHASE_STREAM)))
        return bootstrap_counts(n_targets, self.rule.n_boot, seed)


#: Intervals on, the default bootstrap, no audit.
DEFAULT_UNCERTAINTY = Uncertainty()


class Predictor:
    """Runs configurations on one scenario's stored outputs, sharing work between them.

    The scenario's inputs are validated once (:func:`~mico.attacks.inputs.scenario_inputs`)
    and shared by every attack; each attack's :meth:`~mico.attacks.base.Attack.prepare` runs
    once per phase; every configuration's predictions are kept, so asking again is free.
    """

    def __init__(self, scores: ScenarioScores) -> None:
        self.scores = scores
        self._inputs: dict[str, PhaseInputs] | None = None
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        self._prepared: dict[tuple[str, str], object] = {}
        self._boots: dict[str, ClusterBootstrap] = {}

    def predict(self, config: Config, phase: str) -> np.ndarray:
        """Confidences ``[T, K]`` in [0, 1] of ``config`` on every target of ``phase``."""
        key = (config.label, phase)
        if key not in self._cache:
            attack = get_attack(config.attack)
            if self._inputs is None:
                self._inputs = scenario_inputs(self.scores)
            inputs = self._inputs[phase]
            prepared_key = (attack.name, phase)
            if prepared_key not in self._prepared:
                self._prepared[prepared_key] = attack.prepare(inputs)
            prepared = self._prepared[prepared_key]
            self._cache[key] = attack.predict(inputs, config.params, prepared)
        return self._cache[key]

    def train_bootstrap(self, config: Config) -> ClusterBootstrap:
        """The cluster bootstrap of ``config``'s train predictions against the train solution
        (built once: every row that has ``config`` among its candidates shares it)."""
        if config.label not in self._boots:
            solution = self.scores.phases["train"].solution
            assert solution is not None
            self._boots[config.label] = phase_bootstrap(self.predict(config, "train"), solution)
        return self._boots[config.label]


@dataclass
class RowResult:
    """One row of the comparison on one scenario.

    ``chosen``: the configuration used for ``dev``/``final`` (chosen on all train models);
    ``fold_choices``: the label chosen in each CV fold (empty for fixed rows);
    ``train``: the train-phase predictions the estimate is computed from ``[T, K]``;
    ``metrics``: ``{phase: official score dict}``; ``replicates``: ``{phase: {key: [B]}}``,
    the bootstrap replicates of :data:`INTERVAL_KEYS` (empty without intervals);
    ``epsilon``: ``{phase: (lower bound, guess budget)}`` (empty without an audit).
    """

    chosen: Config
    fold_choices: list[str]
    train: np.ndarray
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    replicates: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    epsilon: dict[str, tuple[float, AuditCounts]] = field(default_factory=dict)

    def interval(self, phase: str, key: str, level: float) -> Interval:
        """The official ``key`` on ``phase`` and its percentile-bootstrap interval."""
        return percentile_interval(self.metrics[phase][key], self.replicates[phase][key], level)


def evaluate_row(
    predictor: Predictor,
    candidates: list[Config],
    folds: int = DEFAULT_FOLDS,
    rule: Rule = DEFAULT_RULE,
) -> RowResult:
    """Train-phase predictions of a row: its single configuration, or CV over candidates."""
    train = predictor.scores.phases["train"]
    if train.solution is None:
        raise InputError("the train phase has no solutions: nothing to choose or score with")
    predictions = [predictor.predict(c, "train") for c in candidates]
    if len(candidates) == 1:
        return RowResult(candidates[0], [], predictions[0])
    boots = [predictor.train_bootstrap(c) for c in candidates]
    selection = cross_validate(predictions, train.solution, folds, rule, boots)
    return RowResult(
        chosen=candidates[selection.chosen],
        fold_choices=[candidates[c].label for c in selection.fold_choice],
        train=selection.held_out,
    )


def measure_row(
    row: RowResult,
    predictions: Mapping[str, np.ndarray],
    truths: Mapping[str, np.ndarray],
    uncertainty: Uncertainty,
    stream: int,
) -> None:
    """Score ``row`` on every phase of ``truths`` (``{phase: solution [T, K]}``) from its
    ``predictions`` (``{phase: [T, K]}``): official metrics, and as ``uncertainty`` asks,
    bootstrap replicates and the epsilon lower bound."""
    for phase, truth in truths.items():
        values = predictions[phase]
        row.metrics[phase] = metrics(truth, values)
        n_targets, per_target = truth.shape
        if uncertainty.intervals and n_targets < 2:
            # One model: nothing to resample, so no interval (not a zero-width one).
            nan = np.full(uncertainty.rule.n_boot, np.nan)
            row.replicates[phase] = dict.fromkeys(INTERVAL_KEYS, nan)
        elif uncertainty.intervals:
            boot = phase_bootstrap(values, truth)
            counts = uncertainty.counts(n_targets, stream, phase)
            row.replicates[phase] = metric_replicates(boot, counts)
        if uncertainty.audit_delta is not None:
            models = np.repeat(np.arange(n_targets), per_target)
            row.epsilon[phase] = audit(
                values.ravel(),
                truth.ravel(),
                models,
                delta=uncertainty.audit_delta,
                level=uncertainty.audit_level,
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
    """Every row on one scenario, the train solution ``[T, K]`` its estimates score, and the
    stored outputs they were computed from (for reports that name points)."""

    rows: dict[str, RowResult]
    solution: np.ndarray
    scores: ScenarioScores | None = None
    #: What computed the rows' predictions (asking it again for a phase is free).
    predictor: Predictor | None = None


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
        merged[scenario] = ScenarioComparison(
            rows, comparison.solution, comparison.scores, comparison.predictor
        )
    return merged


def compare_scenario(
    scores: ScenarioScores,
    attacks: Sequence[Attack],
    truths: Mapping[str, np.ndarray] | None = None,
    folds: int = DEFAULT_FOLDS,
    uncertainty: Uncertainty = DEFAULT_UNCERTAINTY,
    stream: int = 0,
    progress: Callable[[], None] | None = None,
) -> ScenarioComparison:
    """Every row of the comparison of ``attacks`` on one scenario, scored on train and on
    ``truths`` (``{phase: solution [T, K]}`` for ``dev``/``final`` ground truth, if known).

    ``stream`` numbers the scenario's bootstrap draws (:meth:`Uncertainty.counts`);
    ``progress`` is called once per row done.
    """
    predictor = Predictor(scores)
    solution = scores.phases["train"].solution
    assert solution is not None
    rows = {}
    for label, candidates in comparison_rows(attacks).items():
        row = evaluate_row(predictor, candidates, folds, uncertainty.rule)
        predictions = {"train": row.train}
        predictions.update({p: predictor.predict(row.chosen, p) for p in truths or {}})
        measure_row(row, predictions, {"train": solution, **(truths or {})}, uncertainty, stream)
        rows[label] = row
        if progress is not None:
            progress()
    return ScenarioComparison(rows, solution, scores, predictor)


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
        lira = get_attack(SUBMITTED_LIRA_ATTACK)
        lira_rows = [c.label for c in lira.configs() if c.label in rows]
        best_lira = max(lira_rows, key=lambda label: rows[label].metrics["train"][MAIN_METRIC])
        wanted = list(dict.fromkeys(["loss", SUBMITTED_LIRA, best_lira]))
        wanted += [
            label
            for label in rows
            if label.endswith(CV_SUFFIX) and label not in (BEST_ROW, lira.name + CV_SUFFIX)
        ]
        truth = result.solution.ravel()
        panels[name] = {
            label: (truth, rows[label].train.ravel()) for label in dict.fromkeys(wanted)
        }
    return panels


def _scored(results: Mapping[str, ScenarioComparison], phase: str) -> list[str]:
    """Rows scored on ``phase``, with replicates, in every scenario."""
    labels = dict.fromkeys(label for result in results.values() for label in result.rows)
    return [
        label
        for label in labels
        if all(
            label in result.rows and phase in result.rows[label].replicates
            for result in results.values()
        )
    ]


def _columns(
    results: Mapping[str, ScenarioComparison], label: str, phase: str, key: str
) -> dict[str, tuple[float, np.ndarray]]:
    """``{scenario: (point, replicates)}`` of one row and metric, plus ``avg`` (the track
    average: scenarios' points averaged, and their independent replicates too) where there are
    several scenarios."""
    columns = {
        name: (result.rows[label].metrics[phase][key], result.rows[label].replicates[phase][key])
        for name, result in results.items()
    }
    if len(columns) > 1:
        points, replicates = zip(*columns.values(), strict=True)
        columns[AVERAGE] = (float(np.mean(points)), np.mean(np.stack(replicates), axis=0))
    return columns


#: The column of track averages.
AVERAGE = "avg"


def interval_table(
    results: Mapping[str, ScenarioComparison], phase: str, level: float
) -> dict[str, dict[str, dict[str, Interval]]]:
    """``{scenario or avg: {row: {key: Interval}}}`` of :data:`INTERVAL_KEYS` on ``phase``."""
    table: dict[str, dict[str, dict[str, Interval]]] = {}
    for label in _scored(results, phase):
        for key in INTERVAL_KEYS:
            for column, (point, replicates) in _columns(results, label, phase, key).items():
                interval = percentile_interval(point, replicates, level)
                table.setdefault(column, {}).setdefault(label, {})[key] = interval
    return table


#: Metrics of the paired comparison lines.
PAIRED_KEYS: tuple[str, ...] = ("TPR_FPR_1000", "TPR_FPR_100")


def best_rows(labels: Sequence[str]) -> dict[str, list[str]]:
    """``{best row: the (CV) rows it is compared with}``: with several shadow choices side by
    side (``"<row> [<choice>]"``), each ``best of all (CV) [x]`` with the rows of choice x."""
    pairs = {}
    for best in labels:
        if best.startswith(BEST_ROW):
            suffix = best[len(BEST_ROW) :]
            pairs[best] = [
                label
                for label in labels
                if label != best
                and label.endswith(CV_SUFFIX + suffix)
                and not label.startswith(BEST_ROW)
            ]
    return pairs


def paired_differences(
    results: Mapping[str, ScenarioComparison], phase: str, level: float
) -> dict[str, dict[str, dict[str, dict[str, Interval]]]]:
    """``{scenario or avg: {best row: {other (CV) row: {key: Interval of best - other}}}}``:
    the paired bootstrap (same resampled models for both rows) of :data:`PAIRED_KEYS`."""
    labels = _scored(results, phase)
    table: dict[str, dict[str, dict[str, dict[str, Interval]]]] = {}
    for best, others in best_rows(labels).items():
        for other in others:
            for key in PAIRED_KEYS:
                mine = _columns(results, best, phase, key)
                theirs = _columns(results, other, phase, key)
                for column, (point, replicates) in mine.items():
                    their_point, their_replicates = theirs[column]
                    interval = percentile_interval(
                        point - their_point, replicates - their_replicates, level
                    )
                    table.setdefault(column, {}).setdefault(best, {}).setdefault(other, {})[key] = (
                        interval
                    )
    return table


def runner_up(result: ScenarioComparison, best: str = BEST_ROW) -> str | None:
    """The (CV) row that best rivals ``best``: the highest train TPR at 10% FPR among the
    rows it is compared with whose choice is another attack (None if there is none)."""
    rows = result.rows
    others = best_rows(list(rows)).get(best, [])
    rivals = [o for o in others if rows[o].chosen.attack != rows[best].chosen.attack] or others
    if not rivals:
        return None
    return max(rivals, key=lambda label: rows[label].metrics["train"][MAIN_METRIC])
