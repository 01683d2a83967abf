"""The budget curve: how each ``(CV)`` row of ``--compare`` grows with the number of shadows.

``run_lira_mia.py --compare --budget 4 8 16 32 [--budget-repeats R]`` scores every row of
:func:`mico.attacks.compare.comparison_rows` that chooses by cross-validation (``<attack>
(CV)`` and ``best of all (CV)``) with the shadow set cut to B models, for each budget B and
for the whole pool (the ``all`` column, which equals the plain ``--compare`` estimate):

* the B shadows are drawn by :func:`mico.attacks.budget.budget_draws` (random, seeded,
  stratified so points keep IN and OUT shadows), ``R`` times per budget, from the pool
  ``--shadows`` selects: extra shadows of ``train_shadows.py`` count toward the budget like
  train models;
* the targets stay the same at every budget (every train model, each left out of its own
  statistics where its row was drawn), so the columns compare like with like;
* each cell is the mean over the R draws of the k-fold CV estimate on the train phase, with a
  95% cluster-bootstrap interval over target models (:mod:`mico.attacks.audit`): every draw,
  budget and row is resampled with the same target counts, and the replicates are averaged over
  the draws like the points. The interval is about which targets the bundle happened to hold;
  the draws' own spread (standard deviation over the R draws) is reported beside it.

Each draw of each budget runs the whole comparison's train phase once, so the cost is about
``len(budgets) * R + 1`` times the train part of ``--compare``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from mico.attacks.audit import Interval, percentile_interval
from mico.attacks.base import Attack, Config
from mico.attacks.budget import budget_draws, keep_rows
from mico.attacks.compare import (
    CV_SUFFIX,
    Predictor,
    Uncertainty,
    comparison_rows,
    evaluate_row,
    metric_replicates,
    phase_bootstrap,
)
from mico.attacks.run import RunOptions, available_attacks, check_options, load_scores
from mico.bundle.check import scenario_dirs
from mico.bundle.digests import DigestStore
from mico.bundle.layout import digests_path, preds_root, scores_path
from mico.errors import InputError
from mico.outputs.store import ScenarioScores
from mico.scoring import metrics
from mico.tracks.registry import Task

log = logging.getLogger(__name__)

#: Draws per budget unless ``--budget-repeats`` says.
DEFAULT_REPEATS = 3

#: The metrics of the curve (official keys): TPR at 1% and at 10% FPR.
CURVE_KEYS: tuple[str, ...] = ("TPR_FPR_100", "TPR_FPR_1000")

#: The column of the whole shadow pool.
ALL = "all"


@dataclass
class CurveCell:
    """One row at one budget: ``points [R]`` the metric of each draw, ``replicates [B]`` the
    bootstrap replicates averaged over the draws."""

    points: np.ndarray
    replicates: np.ndarray

    def interval(self, level: float) -> Interval:
        """The mean over draws and its cluster-bootstrap interval."""
        return percentile_interval(float(np.mean(self.points)), self.replicates, level)

    @property
    def spread(self) -> float:
        """Standard deviation of the metric over the draws (0 for one draw)."""
        return float(np.std(self.points, ddof=1)) if len(self.points) > 1 else 0.0


@dataclass
class BudgetCurve:
    """Every ``(CV)`` row's cells ``{row: {column: {key: CurveCell}}}``; ``columns`` are the
    budgets as text and :data:`ALL`; ``shadows`` the pool's size; ``repeats`` the draws."""

    columns: list[str]
    shadows: int
    repeats: int
    cells: dict[str, dict[str, dict[str, CurveCell]]] = field(default_factory=dict)


def check_budgets(budgets: Sequence[int], repeats: int, shadows: int | None = None) -> list[int]:
    """The budgets sorted without repeats, or a one-line error: each at least 2 (a train target
    drawn among 1 shadow would have none) and below the ``shadows`` in the pool."""
    if repeats < 1:
        raise InputError(f"--budget-repeats must be at least 1, got {repeats}")
    if not budgets:
        raise InputError("--budget needs at least one number of shadow models, e.g. 4 8 16")
    if min(budgets) < 2:
        raise InputError(f"every --budget must be at least 2 shadow models, got {min(budgets)}")
    if shadows is not None and max(budgets) >= shadows:
        raise InputError(
            f"--budget {max(budgets)} is not below the {shadows} shadow models the attack has "
            "(the full pool is always the last column): give smaller budgets, or more shadows "
            "(train_shadows.py, --shadows all)"
        )
    return sorted(set(budgets))


def cv_rows(attacks: Sequence[Attack]) -> dict[str, list[Config]]:
    """The rows of the comparison that choose by CV, with their candidates, in table order."""
    return {
        label: candidates
        for label, candidates in comparison_rows(attacks).items()
        if label.endswith(CV_SUFFIX)
    }


def scenario_curve(
    scores: ScenarioScores,
    attacks: Sequence[Attack],
    budgets: Sequence[int],
    repeats: int = DEFAULT_REPEATS,
    folds: int = 5,
    uncertainty: Uncertainty | None = None,
    stream: int = 0,
    progress: Callable[[], None] | None = None,
    rows: Mapping[str, list[Config]] | None = None,
) -> BudgetCurve:
    """The budget curve of one scenario (module docstring); ``stream`` numbers its bootstrap
    and draw streams, ``progress`` is called once per draw done. ``rows`` (label ->
    candidates chosen among by CV) replaces the (CV) rows of ``attacks``, e.g. to compare
    families of one attack's configurations."""
    uncertainty = uncertainty or Uncertainty()
    solution = scores.phases["train"].solution
    if solution is None:
        raise InputError("the train phase has no solutions: nothing to score the curve with")
    shadows = len(scores.shadow_ids)
    budgets = check_budgets(budgets, repeats, shadows)
    counts = uncertainty.counts(solution.shape[0], stream, "train")
    rows = cv_rows(attacks) if rows is None else rows
    curve = BudgetCurve([*map(str, budgets), ALL], shadows, repeats)
    seed = uncertainty.rule.seed
    plan = [
        (str(b), budget_draws(scores.shadow_in, b, repeats, (seed, stream, b))) for b in budgets
    ]
    plan.append((ALL, np.arange(shadows)[None]))
    for column, draws in plan:
        found: dict[str, dict[str, list]] = {}
        for rows_kept in draws:
            predictor = Predictor(scores if column == ALL else keep_rows(scores, rows_kept))
            for label, candidates in rows.items():
                train = evaluate_row(predictor, candidates, folds, uncertainty.rule).train
                score = metrics(solution, train)
                replicates = metric_replicates(phase_bootstrap(train, solution), counts)
                for key in CURVE_KEYS:
                    found.setdefault(label, {}).setdefault(key, []).append(
                        (score[key], replicates[key])
                    )
            if progress is not None:
                progress()
        for label, by_key in found.items():
            for key, values in by_key.items():
                points = np.array([p for p, _ in values])
                mean_replicates = np.mean([r for _, r in values], axis=0)
                curve.cells.setdefault(label, {}).setdefault(column, {})[key] = CurveCell(
                    points, mean_replicates
                )
    return curve


def average_curve(curves: Mapping[str, BudgetCurve]) -> BudgetCurve:
    """The track average of the scenarios' curves: per cell, each draw's points and the
    (independent) replicates averaged over the scenarios."""
    first = next(iter(curves.values()))
    average = BudgetCurve(
        list(first.columns), min(c.shadows for c in curves.values()), first.repeats
    )
    for label, by_column in first.cells.items():
        for column, by_key in by_column.items():
            for key in by_key:
                cells = [c.cells[label][column][key] for c in curves.values()]
                points = np.mean([c.points for c in cells], axis=0)
                replicates = np.mean([c.replicates for c in cells], axis=0)
                average.cells.setdefault(label, {}).setdefault(column, {})[key] = CurveCell(
                    points, replicates
                )
    return average


def budget_challenge(
    options: RunOptions, budgets: Sequence[int], repeats: int = DEFAULT_REPEATS
) -> tuple[Task, dict[str, BudgetCurve]]:
    """The budget curve of every scenario of the bundle (``options`` as for ``--compare``)."""
    check_budgets(budgets, repeats)
    if options.references is not None:
        raise InputError(
            "--budget subsamples shadow models; reference models are not shadows: drop --references"
        )
    task = check_options(options)
    preds = preds_root(options.root, task.challenge, options.preds_dir)
    digests = DigestStore(digests_path(preds))
    loaded = {}
    for scenario in scenario_dirs(options.root, task):
        path = scores_path(preds, scenario.name)
        loaded[scenario.name] = (path, load_scores(path, options, task, scenario.name, digests))
        digests.save()
        check_budgets(budgets, repeats, len(loaded[scenario.name][1].shadow_ids))
    curves = {}
    for stream, (name, (path, scores)) in enumerate(loaded.items()):
        if "train" not in scores.phases or scores.phases["train"].solution is None:
            raise InputError(f"{path}: no train phase with solutions: nothing to score on")
        attacks = available_attacks(scores, task, path)
        total = len(set(budgets)) * repeats + 1
        with tqdm(total=total, desc=f"{name} budgets", unit="draw", disable=None) as bar:
            curves[name] = scenario_curve(
                scores,
                attacks,
                budgets,
                repeats,
                options.folds,
                options.uncertainty,
                stream,
                bar.update,
            )
        log.info("%s: %d rows at %d budgets", name, len(curves[name].cells), len(budgets) + 1)
    return task, curves
