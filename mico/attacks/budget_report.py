"""What ``run_lira_mia.py --compare --budget`` prints and draws (the numbers come from
:mod:`mico.attacks.budget_curve`; matplotlib is imported only for ``--plot``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from mico.attacks.audit import Interval
from mico.attacks.budget_curve import ALL, CURVE_KEYS, BudgetCurve, average_curve
from mico.attacks.compare import AVERAGE, Uncertainty
from mico.attacks.report import (
    METRIC_LABELS,
    format_frame,
    interval_cell,
    pyplot,
    save_figure,
)
from mico.tracks.registry import Task


def with_average(curves: Mapping[str, BudgetCurve]) -> dict[str, BudgetCurve]:
    """The scenarios' curves, and their track average where there are several."""
    shown = dict(curves)
    if len(curves) > 1:
        shown[AVERAGE] = average_curve(curves)
    return shown


def _column_title(curve: BudgetCurve, column: str) -> str:
    return f"all {curve.shadows}" if column == ALL else column


def curve_frame(curve: BudgetCurve, key: str, level: float) -> pd.DataFrame:
    """Rows x budgets of ``key``: the mean over draws, its interval and, with several draws,
    ``±`` the draws' standard deviation (the ``all`` column has one draw)."""
    table = {}
    for column in curve.columns:
        cells = {}
        for label, by_column in curve.cells.items():
            cell = by_column[column][key]
            text = interval_cell(cell.interval(level))
            if curve.repeats > 1 and column != ALL:
                text += f" ±{cell.spread:.4f}"
            cells[label] = text
        table[_column_title(curve, column)] = cells
    frame = pd.DataFrame(table)
    frame.index.name = "shadows"
    return frame


def print_budget(
    task: Task,
    curves: Mapping[str, BudgetCurve],
    uncertainty: Uncertainty,
    markdown: bool = False,
) -> None:
    """One table per scenario (and the track average) and metric."""
    first = next(iter(curves.values()))
    level = uncertainty.rule.level
    print(
        f"{task.challenge}: every (CV) row with the shadow set cut to each budget, "
        f"{first.repeats} stratified random draw(s) per budget; train phase, each target left "
        "out of its own shadows"
    )
    print(
        f"(mean over draws [{level:.0%} cluster-bootstrap interval over target models, "
        f"{uncertainty.rule.n_boot} replicates, seed {uncertainty.rule.seed}]"
        + (" ±standard deviation over the draws)" if first.repeats > 1 else ")")
    )
    for name, curve in with_average(curves).items():
        title = "track average" if name == AVERAGE else name
        for key in CURVE_KEYS:
            print(f"\n{title}, {METRIC_LABELS[key]}")
            print(format_frame(curve_frame(curve, key, level), markdown))


def plot_budget(curves: Mapping[str, BudgetCurve], path: Path, title: str, level: float) -> None:
    """One column of panels per scenario (and the average), TPR at 10% FPR above TPR at 1%:
    each (CV) row's mean over draws against the number of shadows (log scale), with its
    interval as a band; a row keeps its colour in every panel."""
    shown = with_average(curves)
    labels = list(dict.fromkeys(label for c in shown.values() for label in c.cells))
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    keys = CURVE_KEYS[::-1]
    plt = pyplot()
    fig, axes = plt.subplots(
        len(keys), len(shown), figsize=(4.2 * len(shown), 3.6 * len(keys)), squeeze=False
    )
    for j, (name, curve) in enumerate(shown.items()):
        x = [curve.shadows if c == ALL else int(c) for c in curve.columns]
        for i, key in enumerate(keys):
            ax = axes[i][j]
            for label in labels:
                found: list[Interval] = [
                    curve.cells[label][c][key].interval(level) for c in curve.columns
                ]
                points = np.array([v.point for v in found])
                ax.plot(x, points, marker="o", markersize=3, label=label, color=colors[label])
                low, high = np.array([v.low for v in found]), np.array([v.high for v in found])
                if np.all(np.isfinite(low)):
                    ax.fill_between(x, low, high, color=colors[label], alpha=0.12, linewidth=0)
            ax.set_xscale("log", base=2)
            ax.set_xticks(x, [str(v) for v in x])
            ax.set_xlabel("shadow models")
            ax.set_ylabel(METRIC_LABELS[key])
            ax.set_title("track average" if name == AVERAGE else name)
    axes[0][-1].legend(loc="lower right", fontsize=7)
    fig.suptitle(title)
    save_figure(fig, path)
