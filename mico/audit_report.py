"""The numbers of the audit report (``run_lira_mia.py --compare --report DIR``).

:func:`build_report` gathers, per scenario, everything the page shows (see
:mod:`mico.report_html`): ROC bands of the chosen attack and of the submitted configuration,
the tables with intervals, the paired differences, the epsilon bounds beside the claimed
epsilon, the most exposed challenge points, the choices of the (CV) rows, and the provenance
(bundle fingerprints, code version, command line, date, machine).  It computes, and draws
nothing: plotting lives in :mod:`mico.report_html`, as MICO keeps ``score.py`` apart from
``score_html.py``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mico.attacks.compare import (
    AVERAGE,
    BEST_ROW,
    SUBMITTED_LIRA,
    RowResult,
    ScenarioComparison,
    choices,
    interval_table,
    paired_differences,
    phase_bootstrap,
    phase_metrics,
)
from mico.attacks.run import RunOptions
from mico.tasks import Task
from mico.truth import claimed_epsilon

REPORT_FILES = ("index.html", "report.json")

#: FPRs at which the ROC bands are drawn (log-spaced, MICO's lowest metric to 1).
BAND_FPRS = np.logspace(-3, 0, 61)

#: How many of the most exposed challenge points the report lists.
EXPOSED = 20


def check_report_dir(folder: Path) -> None:
    """Refuse, before any work, a report folder that would mix with other files: it must be
    new, empty, or hold only a previous report; its parent must exist and be writable."""
    if folder.exists():
        if not folder.is_dir():
            raise FileExistsError(f"--report {folder} is a file; give a folder for the report")
        others = sorted(p.name for p in folder.iterdir() if p.name not in REPORT_FILES)
        if others:
            raise FileExistsError(
                f"--report {folder} holds other files ({', '.join(others[:3])}); "
                "give a new or empty folder"
            )
        target = folder
    else:
        target = folder.parent
        if not target.is_dir():
            raise FileNotFoundError(f"--report {folder}: {target} does not exist; create it first")
    if not os.access(target, os.W_OK | os.X_OK):
        raise PermissionError(f"--report {folder}: {target} is not writable; pick another folder")


def argv_line(script: str, argv: Sequence[str] | None) -> str:
    """The command line that ran ``script`` (its arguments ``argv``, default the process's),
    quoted where needed."""
    return shlex.join([script, *(sys.argv[1:] if argv is None else argv)])


def _code_version() -> str:
    """``git describe`` of the checkout this code runs from, or ``unknown``."""
    here = Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run(
            ["git", "-C", str(here), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def provenance(results: Mapping[str, ScenarioComparison], command: str) -> dict:
    """What the report was made from, on what, when and how."""
    fingerprints = {}
    for scenario, result in results.items():
        record = None if result.scores is None else result.scores.provenance
        text = json.dumps(record, sort_keys=True).encode()
        fingerprints[scenario] = hashlib.sha256(text).hexdigest() if record else "unrecorded"
    return {
        "bundle_fingerprints": fingerprints,
        "code_version": _code_version(),
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "host": platform.node(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
    }


def exposed_points(result: ScenarioComparison, row: RowResult, count: int = EXPOSED) -> list[dict]:
    """The ``count`` members with the highest train confidence under ``row`` (its
    cross-validated predictions): dataset index, label, target model, confidence, and how many
    shadows (the target itself left out) trained on the point and did not."""
    scores = result.scores
    assert scores is not None
    train = scores.phases["train"]
    members = np.argwhere(result.solution == 1)
    confidence = row.train[members[:, 0], members[:, 1]]
    top = members[np.argsort(-confidence, kind="stable")[:count]]
    points = []
    for target, k in top:
        column = int(train.points[target, k])
        trained = scores.shadow_in[:, column].copy()
        own = int(train.shadow[target])
        usable = np.ones(len(trained), dtype=bool)
        if own >= 0:
            usable[own] = False
        points.append(
            {
                "dataset_index": int(scores.points[column]),
                "label": int(scores.labels[column]),
                "target_model": int(train.ids[target]),
                "confidence": float(row.train[target, k]),
                "shadows_in": int(trained[usable].sum()),
                "shadows_out": int((~trained[usable]).sum()),
            }
        )
    return points


def roc_band(
    predictions: np.ndarray, solution: np.ndarray, counts: np.ndarray, level: float
) -> dict[str, list[float]]:
    """TPR at ``FPR < x`` for every x of :data:`BAND_FPRS`: the value and its pointwise
    percentile band over the bootstrap draws ``counts``."""
    boot = phase_bootstrap(predictions, solution)
    point = boot.tpr(boot.ones(), BAND_FPRS)[0]
    replicates = boot.tpr(counts, BAND_FPRS)
    tail = (1 - level) / 2
    low, high = np.nanquantile(replicates, [tail, 1 - tail], axis=0)
    return {
        "fpr": BAND_FPRS.tolist(),
        "tpr": point.tolist(),
        "low": low.tolist(),
        "high": high.tolist(),
    }


def _interval_json(interval) -> dict[str, float]:
    return {"point": interval.point, "low": interval.low, "high": interval.high}


def build_report(
    task: Task,
    results: Mapping[str, ScenarioComparison],
    options: RunOptions,
    command: str,
) -> dict:
    """Every number of the report (see the module docstring), as JSON-ready data."""
    uncertainty = options.uncertainty
    level = uncertainty.rule.level
    phases = [p for p in ("train", "dev", "final") if phase_metrics(results, p)]
    intervals = {p: interval_table(results, p, level) for p in phases}
    paired = {p: paired_differences(results, p, level) for p in phases}
    chosen = choices(results)
    scenarios = {}
    for stream, (scenario, result) in enumerate(results.items()):
        rows = result.rows
        counts = uncertainty.counts(result.solution.shape[0], stream, "train")
        curves = {
            label: roc_band(rows[label].train, result.solution, counts, level)
            for label in (BEST_ROW, SUBMITTED_LIRA)
            if label in rows
        }
        claimed = claimed_epsilon(options.root, task, scenario)
        epsilon = {
            label: {
                phase: {"bound": bound, **counts_._asdict()}
                for phase, (bound, counts_) in row.epsilon.items()
            }
            for label, row in rows.items()
            if row.epsilon
        }
        scenarios[scenario] = {
            "chosen": rows[BEST_ROW].chosen.label if BEST_ROW in rows else None,
            "roc": curves,
            "metrics": {label: row.metrics for label, row in rows.items()},
            "intervals": {
                phase: {
                    label: {k: _interval_json(v) for k, v in cells.items()}
                    for label, cells in intervals[phase].get(scenario, {}).items()
                }
                for phase in phases
            },
            "paired": {
                phase: {
                    best: {
                        other: {k: _interval_json(v) for k, v in cells.items()}
                        for other, cells in others.items()
                    }
                    for best, others in paired[phase].get(scenario, {}).items()
                }
                for phase in phases
            },
            "claimed_epsilon": claimed,
            "epsilon": epsilon,
            "exposed": exposed_points(result, rows[BEST_ROW]) if BEST_ROW in rows else [],
            "choices": {
                label: {
                    "chosen": rows[label].chosen.label,
                    "folds": rows[label].fold_choices,
                    "agree": rows[label].fold_choices.count(rows[label].chosen.label),
                }
                for label in chosen
            },
        }
    averages = {
        phase: {
            label: {k: _interval_json(v) for k, v in cells.items()}
            for label, cells in intervals[phase].get(AVERAGE, {}).items()
        }
        for phase in phases
    }
    return {
        "challenge": task.challenge,
        "level": level,
        "bootstrap": {"replicates": uncertainty.rule.n_boot, "seed": uncertainty.rule.seed},
        "folds": options.folds,
        "audit": {"delta": uncertainty.audit_delta, "level": uncertainty.audit_level},
        "phases": phases,
        "scenarios": scenarios,
        "track_average": averages,
        "provenance": provenance(results, command),
    }
