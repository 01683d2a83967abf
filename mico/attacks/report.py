"""Tables and ROC figures of attack results; the numbers come from :mod:`mico.scoring`.

Plotting is kept apart from computing (as MICO's ``score.py`` / ``score_html.py`` split it):
nothing here changes a score, and matplotlib is imported only when a figure is asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mico.attacks.audit import AuditCounts, Interval, percentile_interval
from mico.attacks.compare import (
    AVERAGE,
    BEST_ROW,
    CV_SUFFIX,
    INTERVAL_KEYS,
    RowResult,
    ScenarioComparison,
    Uncertainty,
    choices,
    interval_table,
    paired_differences,
    phase_metrics,
    runner_up,
)
from mico.attacks.run import ChallengeRun, RunOptions
from mico.attacks.truth import claimed_epsilon
from mico.bundle.fileio import atomic_write
from mico.scoring import MAIN_METRIC, roc_curve
from mico.tracks.registry import Task

log = logging.getLogger(__name__)

#: Column headers for the official keys, in the order the table shows them.
METRIC_LABELS: dict[str, str] = {
    "TPR_FPR_10": "TPR@0.1%",
    "TPR_FPR_100": "TPR@1%",
    "TPR_FPR_500": "TPR@5%",
    "TPR_FPR_1000": "TPR@10%",
    "TPR_FPR_1500": "TPR@15%",
    "TPR_FPR_2000": "TPR@20%",
    "AUC": "AUC",
    "MIA": "MIA",
    "accuracy": "accuracy",
}


def interval_cell(interval: Interval) -> str:
    """``0.5660 [0.5412, 0.5903]``: a value and its interval."""
    if not np.isfinite(interval.low):
        return f"{interval.point:.4f} [n/a]"
    return f"{interval.point:.4f} [{interval.low:.4f}, {interval.high:.4f}]"


def difference_cell(interval: Interval) -> str:
    """``+0.0120 [-0.0040, +0.0290] tied``: a paired difference, ``tied`` when its interval
    contains 0 (the lead is not shown to be real)."""
    if not np.isfinite(interval.low):
        return f"{interval.point:+.4f} [n/a]"
    text = f"{interval.point:+.4f} [{interval.low:+.4f}, {interval.high:+.4f}]"
    return text + (" tied" if interval.contains(0.0) else "")


def metrics_table(
    rows: Mapping[str, Mapping[str, float]],
    average_label: str | None,
    intervals: Mapping[str, Mapping[str, Interval]] | None = None,
) -> str:
    """Format ``{row name: score dict}`` as a fixed-width table, with a mean row if asked.

    With ``intervals`` (``{row name: {key: Interval}}``, the mean row under ``average_label``)
    the metrics they cover show as ``value [low, high]``.
    """
    frame = pd.DataFrame.from_dict(dict(rows), orient="index")
    frame = frame[[key for key in METRIC_LABELS if key in frame.columns]]
    if average_label is not None and len(frame) > 1:
        frame.loc[average_label] = frame.mean(axis=0)
    if intervals:
        frame = frame.astype(object)
        for row, by_key in intervals.items():
            for key, interval in by_key.items():
                if row in frame.index and key in frame.columns:
                    frame.loc[row, key] = interval_cell(interval)
        frame = frame.map(lambda v: v if isinstance(v, str) else f"{v:.4f}")
    frame = frame.rename(columns=METRIC_LABELS)
    return frame.to_string(float_format=lambda v: f"{v:.4f}")


def interval_frame(
    rows: Mapping[str, Mapping[str, Interval]],
    index_name: str = "attack",
    cell: Callable[[Interval], str] = interval_cell,
) -> pd.DataFrame:
    """Rows x metrics from ``{row: {key: Interval}}``, each written by ``cell``
    (``value [low, high]``, or :func:`difference_cell` for paired differences)."""
    frame = pd.DataFrame.from_dict(
        {row: {METRIC_LABELS[k]: cell(v) for k, v in cells.items()} for row, cells in rows.items()},
        orient="index",
    )
    frame.index.name = index_name
    return frame


#: Metrics of the comparison table: the ranking metric, a low-FPR one, and AUC.
COMPARE_METRICS: tuple[str, ...] = ("TPR_FPR_1000", "TPR_FPR_100", "AUC")


def short_names(scenarios: Sequence[str]) -> dict[str, str]:
    """Narrow column headers that still tell the scenarios apart: the suffix
    (``purchase100_inf`` -> ``inf``) where the suffixes differ, else the dataset
    (``cifar10_ddp`` -> ``cifar10``: every DDP scenario ends in ``_ddp``), else the full name."""
    for part in (lambda s: s.rsplit("_", 1)[-1], lambda s: s.split("_", 1)[0]):
        names = {scenario: part(scenario) for scenario in scenarios}
        if len(set(names.values())) == len(names):
            return names
    return {scenario: scenario for scenario in scenarios}


def comparison_frame(
    metrics: Mapping[str, Mapping[str, Mapping[str, float]]],
    keys: tuple[str, ...] = COMPARE_METRICS,
    average_label: str = "avg",
) -> pd.DataFrame:
    """Rows x (metric, scenario) from ``{row: {scenario: score dict}}``, plus each metric's
    mean over the scenarios (the track average) where there are several."""
    rows = list(metrics)
    scenarios = list(dict.fromkeys(s for row in metrics.values() for s in row))
    short = short_names(scenarios)
    columns: dict[tuple[str, str], list[float]] = {}
    for key in keys:
        for scenario in scenarios:
            columns[(METRIC_LABELS[key], short[scenario])] = [
                metrics[row][scenario][key] for row in rows
            ]
        if len(scenarios) > 1:
            columns[(METRIC_LABELS[key], average_label)] = [
                float(np.mean([metrics[row][s][key] for s in scenarios])) for row in rows
            ]
    return pd.DataFrame(columns, index=pd.Index(rows, name="attack"))


def summary_frame(
    per_phase: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
    keys: tuple[str, ...] = COMPARE_METRICS,
) -> pd.DataFrame:
    """Rows x (metric, phase) of the mean over scenarios, from
    ``{phase: {row: {scenario: score dict}}}``; rows missing from a phase are left out."""
    phases = list(per_phase)
    rows = [r for r in next(iter(per_phase.values())) if all(r in per_phase[p] for p in phases)]
    columns = {
        (METRIC_LABELS[key], phase): [
            float(np.mean([s[key] for s in per_phase[phase][row].values()])) for row in rows
        ]
        for key in keys
        for phase in phases
    }
    return pd.DataFrame(columns, index=pd.Index(rows, name="attack"))


def format_frame(frame: pd.DataFrame, markdown: bool = False) -> str:
    """Fixed-width text (two header lines for (metric, column) pairs), or a markdown table."""
    if not markdown:
        return frame.to_string(float_format=lambda v: f"{v:.4f}")
    headers = [frame.index.name or ""] + [
        " ".join(str(part) for part in col) if isinstance(col, tuple) else str(col)
        for col in frame.columns
    ]
    numeric = [pd.api.types.is_numeric_dtype(frame[col]) for col in frame.columns]
    align = ["---"] + ["---:" if is_number else "---" for is_number in numeric]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    for label, values in frame.iterrows():
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in values]
        lines.append("| " + " | ".join([str(label), *cells]) + " |")
    return "\n".join(lines)


def _draw_roc(
    ax,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    title: str,
    colors: Mapping[str, str] | None = None,
) -> None:
    floor = 1e-3
    for label, (solutions, predictions) in curves.items():
        fpr, tpr = roc_curve(solutions, predictions)
        color = None if colors is None else colors[label]
        ax.plot(
            np.maximum(fpr, floor), np.maximum(tpr, floor), label=label, linewidth=1.4, color=color
        )
    log_roc_axes(ax, floor, title, mark_fpr=0.1)


def log_roc_axes(
    ax,
    floor: float,
    title: str,
    ylabel: str = "true positive rate",
    title_size: float | None = None,
    mark_fpr: float | None = None,
) -> None:
    """The log-log ROC frame every figure shares: the chance line (and a mark at
    ``mark_fpr``), both axes from ``floor`` to 1, labels and legend (curves drawn first)."""
    ax.plot([floor, 1], [floor, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    if mark_fpr is not None:
        ax.axvline(mark_fpr, color="grey", linewidth=0.6, alpha=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=title_size)
    ax.legend(loc="lower right", fontsize=7)


def save_figure(fig, path: Path) -> None:
    """Write ``fig`` atomically in the format ``path``'s suffix names, and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    suffix = path.suffix.lstrip(".") or "png"
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format=suffix, dpi=150)
    plt.close(fig)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, imported when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    """Log-log ROC curves (``{label: (solutions, predictions)}``), where low FPR is visible."""
    fig, ax = pyplot().subplots(figsize=(5.5, 5))
    _draw_roc(ax, curves, title)
    save_figure(fig, path)


def plot_roc_panels(
    panels: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], path: Path, title: str
) -> None:
    """One log-log ROC subplot per panel (``{panel title: {label: (solutions, predictions)}}``);
    a label keeps its colour in every panel."""
    labels = dict.fromkeys(label for curves in panels.values() for label in curves)
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    fig, axes = pyplot().subplots(1, len(panels), figsize=(5 * len(panels), 5), squeeze=False)
    for ax, (name, curves) in zip(axes[0], panels.items(), strict=True):
        _draw_roc(ax, curves, name, colors)
    fig.suptitle(title)
    save_figure(fig, path)


# --- What run_lira_mia.py prints ----------------------------------------------------------


def _level_text(uncertainty: Uncertainty) -> str:
    rule = uncertainty.rule
    return (
        f"{uncertainty.rule.level:.0%} intervals: cluster bootstrap over target models, "
        f"{rule.n_boot} replicates, seed {rule.seed}"
    )


def _phase_title(phase: str, reference: Path | None) -> str:
    if phase == "train":
        return "train phase"
    return f"{phase} phase against the reference in {reference}"


def print_comparison(
    task: Task,
    results: Mapping[str, ScenarioComparison],
    options: RunOptions,
    markdown: bool,
) -> None:
    """The ``--compare`` tables: per scenario and phase with intervals (or the plain wide
    tables with ``--no-intervals``), the paired differences to ``best of all (CV)``, what each
    (CV) row chose, and the epsilon bounds when audited."""
    name, uncertainty = task.challenge, options.uncertainty
    print(
        f"\n{name}: each target is left out of its own shadows; rows marked (CV) choose a "
        f"variant by {options.folds}-fold cross-validation over train models"
    )
    phases = [p for p in ("train", "dev", "final") if phase_metrics(results, p)]
    if uncertainty.intervals:
        level = uncertainty.rule.level
        print(f"({_level_text(uncertainty)})")
        for phase in phases:
            for column, rows in interval_table(results, phase, level).items():
                where = "track average" if column == AVERAGE else column
                print(f"\n{where}, {_phase_title(phase, options.truth)}")
                print(format_frame(interval_frame(rows), markdown))
        print_paired(results, phases, options, markdown)
    else:
        per_phase = {p: phase_metrics(results, p) for p in phases}
        for phase, table in per_phase.items():
            print(f"\n{name}, {_phase_title(phase, options.truth)}")
            print(format_frame(comparison_frame(table), markdown))
        if len(per_phase) > 1:
            print(f"\n{name}: track averages, train-phase estimate beside dev/final")
            print(format_frame(summary_frame(per_phase), markdown))
    chosen = choices(results)
    if chosen:
        print(
            "\nChosen on all train models (what dev/final use); [n/k]: how many of the k CV "
            "folds chose the same"
        )
        frame = pd.DataFrame.from_dict(chosen, orient="index")
        frame.index.name = "row"
        print(format_frame(frame, markdown))
    if uncertainty.audit_delta is not None:
        audited = {
            scenario: {
                label: row
                for label, row in result.rows.items()
                if label.endswith(CV_SUFFIX) or CV_SUFFIX + " [" in label
            }
            for scenario, result in results.items()
        }
        print_epsilon(task, audited, options, markdown)


def print_paired(
    results: Mapping[str, ScenarioComparison],
    phases: list[str],
    options: RunOptions,
    markdown: bool,
) -> None:
    """Per scenario and phase: ``best of all (CV)`` minus every other (CV) row, paired."""
    level = options.uncertainty.rule.level
    for phase in phases:
        for column, by_best in paired_differences(results, phase, level).items():
            where = "track average" if column == AVERAGE else column
            for best, others in by_best.items():
                print(
                    f"\n{where}, {phase}: {best} minus each (CV) row, paired bootstrap "
                    "(the same resampled models for both); 'tied' = the interval contains 0"
                )
                print(format_frame(interval_frame(others, "row", difference_cell), markdown))


def print_epsilon(
    task: Task,
    audited: Mapping[str, Mapping[str, RowResult]],
    options: RunOptions,
    markdown: bool,
) -> None:
    """The epsilon table (``{scenario: {row: result}}``), then one loud line per scenario
    whose bound exceeds the epsilon its models claim."""
    uncertainty = options.uncertainty
    delta, level = uncertainty.audit_delta, uncertainty.audit_level
    print(
        f"\nEmpirical epsilon lower bounds at delta {delta:g}, {level:.0%} confidence (one-run "
        "audit, Steinke, Nasr and Jagielski 2023; guesses: each target's top and bottom k "
        "confidences, k chosen from a grid with Bonferroni correction)"
    )
    table: dict[str, dict[str, str]] = {}
    contradicted: dict[str, tuple[float, str, float]] = {}
    for scenario, rows in audited.items():
        claimed = claimed_epsilon(options.root, task, scenario)
        for label, row in rows.items():
            cells = {"scenario": scenario, "claimed": epsilon_text(claimed)}
            for phase, (bound, counts) in row.epsilon.items():
                cells[phase] = bound_text(bound, counts)
                if claimed is not None and bound > claimed:
                    worst = contradicted.get(scenario)
                    if worst is None or bound > worst[0]:
                        contradicted[scenario] = (bound, f"{label}, {phase}", claimed)
            table[f"{scenario} | {label}"] = cells
    frame = pd.DataFrame.from_dict(table, orient="index")
    frame.index = [key.split(" | ", 1)[1] for key in frame.index]
    frame.index.name = "row"
    print(format_frame(frame, markdown))
    for scenario, (bound, where, claimed) in contradicted.items():
        line = (
            f"DP GUARANTEE CONTRADICTED: {scenario}: the empirical lower bound {bound:.3f} "
            f"({where}) exceeds the claimed epsilon {claimed:.2f} at delta {delta:g}"
        )
        print(f"\n!!! {line} !!!")
        log.warning(line)


def epsilon_text(claimed: float | None) -> str:
    """A claimed epsilon: ``inf`` without DP."""
    return "inf" if claimed is None else f"{claimed:.2f}"


def bound_text(bound: float, counts: AuditCounts) -> str:
    """``1.191 (k=20: 136/160)``: the bound, and the guess budget behind it and its score."""
    if bound <= 0:
        return "0"
    return f"{bound:.3f} (k={counts.k}: {counts.correct}/{counts.guesses})"


def print_run(run: ChallengeRun, options: RunOptions, markdown: bool) -> None:
    """What an attack run prints: the train table (and dev/final against a reference) with
    intervals, ``--attack best``'s choice against its runner-up, and the epsilon bounds."""
    name, uncertainty = run.task.challenge, options.uncertainty
    level = uncertainty.rule.level
    print(f"\n{name}: {run.description} on the train phase")
    train = {scenario: {"train": row} for scenario, row in run.measured.items()}
    intervals = _run_intervals(train, f"{name} average", level) if uncertainty.intervals else None
    print(metrics_table(run.train, f"{name} average", intervals))
    if uncertainty.intervals:
        print(f"({_level_text(uncertainty)})")
    if run.held_out:
        held = {
            f"{scenario} {phase}": {phase: row}
            for scenario, row in run.measured.items()
            for phase in row.metrics
            if phase != "train"
        }
        print(f"\n{name}: dev/final against the reference in {options.truth}")
        held_intervals = _run_intervals(held, None, level) if uncertainty.intervals else None
        print(metrics_table(run.held_out, None, held_intervals))
    for scenario, comparison in run.comparisons.items():
        print_best_choice(scenario, comparison, options)
    if uncertainty.audit_delta is not None:
        rows = {scenario: {options.attack: row} for scenario, row in run.measured.items()}
        print_epsilon(run.task, rows, options, markdown)


def _run_intervals(
    rows: Mapping[str, Mapping[str, RowResult]], average_label: str | None, level: float
) -> dict[str, dict[str, Interval]]:
    """``{table row: {key: Interval}}`` from ``{table row: {phase: measured row}}``, plus the
    track average of the train rows (their independent replicates averaged)."""
    table = {
        label: {key: row.interval(phase, key, level) for key in INTERVAL_KEYS}
        for label, by_phase in rows.items()
        for phase, row in by_phase.items()
        if phase in row.replicates
    }
    if average_label is not None and len(rows) > 1:
        measured = [row for by_phase in rows.values() for row in by_phase.values()]
        table[average_label] = {
            key: percentile_interval(
                float(np.mean([row.metrics["train"][key] for row in measured])),
                np.mean([row.replicates["train"][key] for row in measured], axis=0),
                level,
            )
            for key in INTERVAL_KEYS
        }
    return table


def print_best_choice(scenario: str, comparison: ScenarioComparison, options: RunOptions) -> None:
    """``--attack best``: what it chose, its cross-validated interval, and whether its lead
    over the runner-up (the best (CV) row of another attack) is real."""
    level = options.uncertainty.rule.level
    best = comparison.rows[BEST_ROW]
    agree = best.fold_choices.count(best.chosen.label)
    line = (
        f"{scenario}: chose {best.chosen.label} [{agree}/{len(best.fold_choices)} folds]; "
        f"train TPR@10% (CV) "
    )
    if not best.replicates:
        print(line + f"{best.metrics['train'][MAIN_METRIC]:.4f}")
        return
    print(line + interval_cell(best.interval("train", MAIN_METRIC, level)))
    rival = runner_up(comparison)
    if rival is None:
        return
    other = comparison.rows[rival]
    difference = percentile_interval(
        best.metrics["train"][MAIN_METRIC] - other.metrics["train"][MAIN_METRIC],
        best.replicates["train"][MAIN_METRIC] - other.replicates["train"][MAIN_METRIC],
        level,
    )
    verdict = "tied with" if difference.contains(0.0) else "ahead of"
    print(
        f"  {verdict} the runner-up {rival} ({other.chosen.label}): difference "
        f"{difference_cell(difference)}"
    )
