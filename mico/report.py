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


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    """Log-log ROC curves (``{label: (solutions, predictions)}``), where low FPR is visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    floor = 1e-3
    for label, (solutions, predictions) in curves.items():
        fpr, tpr = roc_curve(solutions, predictions)
        ax.plot(np.maximum(fpr, floor), np.maximum(tpr, floor), label=label, linewidth=1.4)
    ax.plot([floor, 1], [floor, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    ax.axvline(0.1, color="grey", linewidth=0.6, alpha=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    suffix = path.suffix.lstrip(".") or "png"
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format=suffix, dpi=150)
    plt.close(fig)
