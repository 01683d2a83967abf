"""Tables and ROC figures of attack results; the numbers come from :mod:`mico.scoring`.

Plotting is kept apart from computing (as MICO's ``score.py`` / ``score_html.py`` split it):
nothing here changes a score, and matplotlib is imported only when a figure is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from mico.fileio import atomic_write
from mico.scoring import roc_curve

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


def metrics_table(rows: Mapping[str, Mapping[str, float]], average_label: str | None) -> str:
    """Format ``{row name: score dict}`` as a fixed-width table, with a mean row if asked."""
    frame = pd.DataFrame.from_dict(dict(rows), orient="index")
    frame = frame[[key for key in METRIC_LABELS if key in frame.columns]]
    if average_label is not None and len(frame) > 1:
        frame.loc[average_label] = frame.mean(axis=0)
    frame = frame.rename(columns=METRIC_LABELS)
    return frame.to_string(float_format=lambda v: f"{v:.4f}")


#: Metrics of the comparison table: the ranking metric, a low-FPR one, and AUC.
COMPARE_METRICS: tuple[str, ...] = ("TPR_FPR_1000", "TPR_FPR_100", "AUC")


def short_scenario(name: str) -> str:
    """``purchase100_inf`` -> ``inf``: column headers stay narrow."""
    return name.rsplit("_", 1)[-1]


def comparison_frame(
    metrics: Mapping[str, Mapping[str, Mapping[str, float]]],
    keys: tuple[str, ...] = COMPARE_METRICS,
    average_label: str = "avg",
) -> pd.DataFrame:
    """Rows x (metric, scenario) from ``{row: {scenario: score dict}}``, plus each metric's
    mean over the scenarios (the track average) where there are several."""
    rows = list(metrics)
    scenarios = list(dict.fromkeys(s for row in metrics.values() for s in row))
    columns: dict[tuple[str, str], list[float]] = {}
    for key in keys:
        for scenario in scenarios:
            columns[(METRIC_LABELS[key], short_scenario(scenario))] = [
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
    ax.plot([floor, 1], [floor, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    ax.axvline(0.1, color="grey", linewidth=0.6, alpha=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=7)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    suffix = path.suffix.lstrip(".") or "png"
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format=suffix, dpi=150)
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    """Log-log ROC curves (``{label: (solutions, predictions)}``), where low FPR is visible."""
    fig, ax = _pyplot().subplots(figsize=(5.5, 5))
    _draw_roc(ax, curves, title)
    _save(fig, path)


def plot_roc_panels(
    panels: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], path: Path, title: str
) -> None:
    """One log-log ROC subplot per panel (``{panel title: {label: (solutions, predictions)}}``);
    a label keeps its colour in every panel."""
    labels = dict.fromkeys(label for curves in panels.values() for label in curves)
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    fig, axes = _pyplot().subplots(1, len(panels), figsize=(5 * len(panels), 5), squeeze=False)
    for ax, (name, curves) in zip(axes[0], panels.items(), strict=True):
        _draw_roc(ax, curves, name, colors)
    fig.suptitle(title)
    _save(fig, path)
