"""``run_lira_mia.py --compare --report DIR``: the audit report, one self-contained page.

``DIR/index.html`` (figures embedded as PNG data, no file beside it) and ``DIR/report.json``
(every number on the page, and the ROC bands' arrays), both from
:func:`mico.attacks.audit_report.build_report`.  Per scenario: log-log ROC of the chosen attack and
of the 2nd place's submitted configuration with 95% bootstrap bands, the comparison table with
intervals and the paired differences, the epsilon bounds beside the claimed epsilon, the 20
most exposed challenge points and the choices of the (CV) rows; then the provenance.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mico.attacks.audit import AuditCounts, percentile_interval
from mico.attacks.audit_report import EXPOSED, build_report
from mico.attacks.compare import CV_SUFFIX, INTERVAL_KEYS, PAIRED_KEYS, ScenarioComparison
from mico.attacks.report import (
    METRIC_LABELS,
    bound_text,
    difference_cell,
    epsilon_text,
    interval_cell,
    log_roc_axes,
    pyplot,
)
from mico.attacks.run import RunOptions
from mico.bundle.fileio import write_text_atomic
from mico.tracks.registry import Task

# --- The page ------------------------------------------------------------------------------


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _roc_figure(title: str, curves: Mapping[str, Mapping[str, list[float]]]) -> str:
    floor = 1e-3
    fig, ax = pyplot().subplots(figsize=(5.2, 4.6))
    for i, (label, curve) in enumerate(curves.items()):
        fpr = np.asarray(curve["fpr"])
        color = f"C{i}"
        ax.plot(fpr, np.maximum(curve["tpr"], floor), color=color, label=label, linewidth=1.5)
        ax.fill_between(
            fpr,
            np.maximum(curve["low"], floor),
            np.maximum(curve["high"], floor),
            color=color,
            alpha=0.2,
            linewidth=0,
        )
    log_roc_axes(ax, floor, title, "true positive rate (at FPR < x)", title_size=10)
    return _png(fig)


def _table(headers: list[str], rows: list[list[str]], first_left: bool = True) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=l' if first_left and i == 0 else ''}>{html.escape(str(c))}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _interval_rows(cells: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[list[str]]:
    rows = []
    for label, by_key in cells.items():
        rows.append(
            [label]
            + [
                interval_cell(percentile_interval(v["point"], np.array([v["low"], v["high"]]), 1))
                if np.isfinite(v["low"])
                else f"{v['point']:.4f}"
                for v in (by_key[k] for k in INTERVAL_KEYS)
            ]
        )
    return rows


_CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.85em; }
th, td { padding: 3px 8px; border-bottom: 1px solid #e4e4e4; text-align: right; }
th { background: #f3f3f3; } td.l { text-align: left; }
.alarm { background: #b00020; color: white; padding: 0.6em; font-weight: bold; }
.note { color: #555; font-size: 0.9em; }
"""


def render_html(report: Mapping) -> str:
    """The page of :func:`build_report`'s data."""
    level = report["level"]
    headers = ["row", *(METRIC_LABELS[k] for k in INTERVAL_KEYS)]
    parts = [
        f"<h1>MICO audit report: {html.escape(report['challenge'])}</h1>",
        f"<p class=note>{level:.0%} intervals from a cluster bootstrap over target models "
        f"({report['bootstrap']['replicates']} replicates, seed {report['bootstrap']['seed']}); "
        f"train rows are {report['folds']}-fold cross-validated where they choose a variant. "
        "'tied': the paired interval of the difference contains 0.</p>",
    ]
    for scenario, data in report["scenarios"].items():
        parts.append(f"<h2>{html.escape(scenario)}</h2>")
        claimed = data["claimed_epsilon"]
        for row, by_phase in data["epsilon"].items():
            for phase, bound in by_phase.items():
                if claimed is not None and bound["bound"] > claimed:
                    parts.append(
                        f"<p class=alarm>DP guarantee contradicted: {html.escape(row)} on "
                        f"{phase} gives an empirical lower bound {bound['bound']:.3f} above the "
                        f"claimed epsilon {claimed:.2f}.</p>"
                    )
        if data["roc"]:
            image = _roc_figure(f"{scenario}, train phase", data["roc"])
            parts.append(
                f'<img alt="ROC of {html.escape(scenario)}" src="data:image/png;base64,{image}">'
            )
        parts.append(
            f"<p>Chosen by cross-validation: <b>{html.escape(str(data['chosen']))}</b></p>"
        )
        for phase in report["phases"]:
            cells = data["intervals"].get(phase, {})
            if cells:
                parts.append(f"<h3>{phase} phase</h3>")
                parts.append(_table(headers, _interval_rows(cells)))
            for best, others in data["paired"].get(phase, {}).items():
                parts.append(f"<h4>{html.escape(best)} minus each (CV) row, {phase}</h4>")
                rows = [
                    [other]
                    + [
                        difference_cell(
                            percentile_interval(
                                cells_[k]["point"],
                                np.array([cells_[k]["low"], cells_[k]["high"]]),
                                1,
                            )
                        )
                        for k in PAIRED_KEYS
                    ]
                    for other, cells_ in others.items()
                ]
                parts.append(_table(["row", *(METRIC_LABELS[k] for k in PAIRED_KEYS)], rows))
        parts.append("<h3>Empirical epsilon lower bounds</h3>")
        audit = report["audit"]
        if data["epsilon"]:
            parts.append(
                f"<p class=note>Claimed epsilon: {epsilon_text(claimed)}; "
                f"bounds at delta {audit['delta']:g}, {audit['level']:.0%} confidence "
                "(one-run audit of Steinke, Nasr and Jagielski, NeurIPS 2023).</p>"
            )
            eps_rows = [
                [row]
                + [
                    bound_text(
                        by_phase[p]["bound"],
                        AuditCounts(*(by_phase[p][f] for f in AuditCounts._fields)),
                    )
                    if p in by_phase
                    else ""
                    for p in report["phases"]
                ]
                for row, by_phase in data["epsilon"].items()
                if row.endswith(CV_SUFFIX)
            ]
            parts.append(_table(["row", *report["phases"]], eps_rows))
        parts.append(f"<h3>The {EXPOSED} most exposed challenge points</h3>")
        parts.append(
            "<p class=note>Members the chosen attack is surest of (cross-validated train "
            "confidences); shadows in/out: how many shadow models trained on the point and how "
            "many did not, the target itself left out.</p>"
        )
        parts.append(
            _table(
                ["dataset index", "label", "target model", "confidence", "shadows in", "out"],
                [
                    [
                        p["dataset_index"],
                        p["label"],
                        p["target_model"],
                        f"{p['confidence']:.4f}",
                        p["shadows_in"],
                        p["shadows_out"],
                    ]
                    for p in data["exposed"]
                ],
                first_left=False,
            )
        )
        parts.append("<h3>What each (CV) row chose</h3>")
        parts.append(
            _table(
                ["row", "chosen on all train models", "folds agreeing"],
                [
                    [label, c["chosen"], f"{c['agree']}/{len(c['folds'])}"]
                    for label, c in data["choices"].items()
                ],
            )
        )
    if report["track_average"].get("train"):
        parts.append("<h2>Track average</h2>")
        for phase, cells in report["track_average"].items():
            parts.append(f"<h3>{phase} phase</h3>")
            parts.append(_table(headers, _interval_rows(cells)))
    prov = report["provenance"]
    machine = prov["machine"]
    parts.append("<h2>Provenance</h2>")
    parts.append(
        _table(
            ["item", "value"],
            [
                ["command", prov["command"]],
                ["code version", prov["code_version"]],
                ["date (UTC)", prov["date"]],
                [
                    "machine",
                    f"{machine['host']}: {machine['platform']}, {machine['processor']}, "
                    f"{machine['cpus']} CPUs, Python {machine['python']}",
                ],
                *(
                    [f"bundle fingerprint {scenario}", digest]
                    for scenario, digest in prov["bundle_fingerprints"].items()
                ),
            ],
        )
    )
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>MICO audit report: {html.escape(report['challenge'])}</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def write_report(
    folder: Path,
    task: Task,
    results: Mapping[str, ScenarioComparison],
    options: RunOptions,
    command: str,
) -> None:
    """``folder/report.json`` then ``folder/index.html``, each written atomically."""
    report = build_report(task, results, options, command)
    page = render_html(report)
    folder.mkdir(exist_ok=True)
    write_text_atomic(folder / "report.json", json.dumps(report, indent=1, allow_nan=True) + "\n")
    write_text_atomic(folder / "index.html", page)
