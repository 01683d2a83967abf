"""The official MICO metrics (the competition's scoring program), without scikit-learn.

Definitions (MICO.md section 7), over all predictions of a scenario and phase concatenated:
``TPR_FPR_x`` is the largest TPR among ROC points whose FPR is *strictly* below ``x/10000``;
``AUC`` the trapezoidal area; ``MIA`` = max(TPR - FPR); ``accuracy`` = max(1 - (FPR + 1 - TPR)/2).

The scoring program called scikit-learn's ``roc_curve`` with its default
``drop_intermediate=True``, which removes every ROC point whose neighbours make equal steps on
both axes.  On a diagonal run (several thresholds each adding one member and one non-member) that
removes points *below* the FPR limit, so ``TPR_FPR_x`` can come out lower than on the full curve.
:func:`roc_curve` applies the same rule, so the numbers are identical to the official ones (the
tests check this against scikit-learn, heavy ties included).

The public names and signatures are those of MICO's ``mico_competition.scoring`` (its
``scoring/score.py`` and ``scoring/score_html.py``): :func:`tpr_at_fpr`, :func:`score` (whose
dict also carries the ``fpr``/``tpr`` arrays), :func:`generate_roc`, :func:`generate_table` and
:func:`generate_html`.  The pipeline itself uses :func:`metrics`, the same numbers without the
curve, so its tables and comparisons deal in floats only.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mico.errors import InputError

if TYPE_CHECKING:  # pandas and matplotlib load for tables and figures, not for the metrics
    import pandas as pd
    from matplotlib.figure import Figure

#: FPR limits of the official table, keyed as the scoring program names them.
FPR_LIMITS: dict[str, float] = {
    "TPR_FPR_10": 0.001,
    "TPR_FPR_100": 0.01,
    "TPR_FPR_500": 0.05,
    "TPR_FPR_1000": 0.1,
    "TPR_FPR_1500": 0.15,
    "TPR_FPR_2000": 0.2,
}

#: The ranking metric of the competition.
MAIN_METRIC = "TPR_FPR_1000"


def _validate(solutions: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(solutions).ravel()
    s = np.asarray(predictions, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise InputError(f"{y.size} solutions but {s.size} predictions")
    if not np.all(np.isin(y, (0, 1))):
        raise InputError("solutions must be 0 or 1")
    if not np.all(np.isfinite(s)):
        raise InputError("predictions must be finite")
    if y.min(initial=1) == 1 or y.max(initial=0) == 0:
        raise InputError("scoring needs both members and non-members")
    return y.astype(bool), s


def roc_curve(solutions: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FPR and TPR as scikit-learn's ``roc_curve`` (default settings) returns them.

    One point per distinct score, minus the interior points of equal-step runs (scikit-learn's
    ``drop_intermediate``), then (0, 0) prepended.
    """
    y, s = _validate(solutions, predictions)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # one ROC point per distinct score
    tps = np.cumsum(y)[last_of_run]
    fps = (last_of_run + 1) - tps
    if tps.size > 2:
        bends = np.diff(tps, 2).astype(bool) | np.diff(fps, 2).astype(bool)
        keep = np.r_[True, bends, True]
        tps, fps = tps[keep], fps[keep]
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return fpr, tpr


def _tpr_below(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> float:
    return float(tpr[fpr < max_fpr].max())


def tpr_at_fpr(true_membership: np.ndarray, predictions: np.ndarray, max_fpr: float = 0.1) -> float:
    """Largest TPR among ROC points with FPR strictly below ``max_fpr``."""
    fpr, tpr = roc_curve(true_membership, predictions)
    return _tpr_below(fpr, tpr, max_fpr)


def _metrics_from_curve(fpr: np.ndarray, tpr: np.ndarray) -> dict[str, float]:
    result = {key: _tpr_below(fpr, tpr, limit) for key, limit in FPR_LIMITS.items()}
    result["AUC"] = float(np.trapezoid(tpr, fpr))
    result["MIA"] = float(np.max(tpr - fpr))
    result["accuracy"] = float(np.max(1 - (fpr + (1 - tpr)) / 2))
    return result


def metrics(solutions: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """The scoring program's numbers for one scenario: TPR at six FPRs, AUC, MIA and accuracy.

    What the pipeline's tables and comparisons use: floats only, so two results compare with
    ``==`` and a table needs no columns dropped.
    """
    return _metrics_from_curve(*roc_curve(solutions, predictions))


def score(solutions: np.ndarray, predictions: np.ndarray) -> dict[str, Any]:
    """MICO's ``score``: :func:`metrics` plus the ROC curve, in the scoring program's key order.

    Keys: ``TPR_FPR_10`` ... ``TPR_FPR_2000``, ``fpr``, ``tpr`` (the arrays scikit-learn's
    ``roc_curve`` returns, which :func:`generate_roc` and :func:`generate_html` draw), ``AUC``,
    ``MIA``, ``accuracy``.
    """
    fpr, tpr = roc_curve(solutions, predictions)
    values = _metrics_from_curve(fpr, tpr)
    result: dict[str, Any] = {key: values[key] for key in FPR_LIMITS}
    result["fpr"], result["tpr"] = fpr, tpr
    result.update({key: values[key] for key in ("AUC", "MIA", "accuracy")})
    return result


# --- MICO's detailed-scores page (``score_html.py``) ----------------------------------------

#: MICO's column headers for the detailed-scores table.
TABLE_COLUMNS: dict[str, str] = {
    "accuracy": "Accuracy",
    "AUC": "AUC-ROC",
    "MIA": "MIA",
    **{key: f"TPR @ {limit:g} FPR" for key, limit in FPR_LIMITS.items()},
}

#: The ROC arrays of a :func:`score` dict, which the table leaves out.
CURVE_KEYS = ("fpr", "tpr")


def generate_roc(fpr: np.ndarray, tpr: np.ndarray) -> Figure:
    """MICO's ROC figure: linear axes on the left, log-log on the right (down to 1e-5).

    Made with pyplot, as MICO's is, so that a notebook shows it; close it when done.
    """
    import matplotlib.pyplot as plt

    fig, (linear, log) = plt.subplots(ncols=2, figsize=(8, 3.5))
    linear.set_xlim(0, 1)
    linear.set_ylim(0, 1)
    linear.set_ylabel("True Positive Rate")
    log.semilogx()
    log.semilogy()
    log.set_xlim(1e-5, 1)
    log.set_ylim(1e-5, 1)
    for ax in (linear, log):
        ax.set_xlabel("False Positive Rate")
        ax.plot([0, 1], [0, 1], ls=":", color="grey")
        ax.plot(fpr, tpr)
    return fig


def generate_table(scores: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """``{scenario: score dict}`` as one row per scenario, with MICO's column headers.

    The ``fpr``/``tpr`` arrays are dropped when present (so :func:`metrics` dicts work too);
    unknown keys keep their names.
    """
    import pandas as pd

    rows = {
        scenario: {k: v for k, v in values.items() if k not in CURVE_KEYS}
        for scenario, values in scores.items()
    }
    table = pd.DataFrame.from_dict(rows, orient="index")
    return table.rename(columns=TABLE_COLUMNS)


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches=0, dpi=300)
    return buffer.getvalue()


_PAGE_CSS = """
body { background-color: #ffffff; }
h1, h2 { text-align: center; }
div { white-space: normal; text-align: center; }
table { border-collapse: collapse; margin: auto; }
table > :is(thead, tbody) > tr > :is(th, td) { padding: 5px; }
table > thead > tr > :is(th, td) { border-top: 2px solid; border-bottom: 1px solid; }
table > tbody > tr:last-child > :is(th, td) { border-bottom: 2px solid; }
"""


def generate_html(scores: Mapping[str, Mapping[str, Any]]) -> str:
    """MICO's detailed-scores page: the table, then each scenario's ROC figure as inline SVG.

    ``scores`` maps each scenario to a :func:`score` dict (the curve is needed for the figures).
    The figures are closed once drawn, so building many pages leaks no memory.
    """
    import matplotlib.pyplot as plt

    figures = []
    for scenario, values in scores.items():
        fig = generate_roc(values["fpr"], values["tpr"])
        fig.tight_layout(pad=1.0)
        figures.append(f"<h2>{scenario}</h2><div>{_svg(fig)}</div>")
        plt.close(fig)
    table = generate_table(scores).to_html(border=0, float_format="{:0.4f}".format, escape=False)
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n<title>MICO - Detailed scores</title>\n"
        f"<style>{_PAGE_CSS}</style>\n</head>\n<body>\n<div>\n{table}\n</div>\n"
        + "\n".join(figures)
        + "\n</body></html>\n"
    )
