"""The audit as users meet it: intervals in every table, ``--attack best``, ``--audit`` with
its loud line, and the ``--report`` page; on the tiny demo and on synthetic stored outputs."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

import run_lira_mia
from mico.attacks.audit import AuditCounts
from mico.attacks.base import Config
from mico.attacks.compare import BEST_ATTACK, BEST_ROW, RowResult, Uncertainty
from mico.attacks.report import print_epsilon
from mico.attacks.run import RunOptions, compare_challenge
from mico.bundle.layout import PREDICTION_FILE
from mico.bundle.records import read_prediction
from mico.tracks.registry import load_task
from tests.test_attacks import FAST, FAST_BOOT, write_synthetic_root

CHALLENGE = "purchase100"
INTERVAL = r"0\.\d{4} \[0\.\d{4}, 0\.\d{4}\]"


@pytest.fixture(scope="module")
def demo(tiny_purchase: Path, tmp_path_factory) -> Path:
    """A writable copy of the tiny purchase100 demo."""
    return Path(shutil.copytree(tiny_purchase, tmp_path_factory.mktemp("audit") / "root"))


def base(root: Path, *more: str) -> list[str]:
    return ["--challenge", CHALLENGE, "--root", str(root), "-q", *more]


def test_attack_tables_carry_intervals(demo: Path, capsys) -> None:
    reference = str(demo / "reference")
    argv = base(demo, "--global_variance", "--no-write", "--reference", reference)
    assert run_lira_mia.main(argv) == 0
    out = capsys.readouterr().out
    train = out.split("dev/final against")[0]
    for scenario in ("purchase100_inf", "purchase100_hi", "purchase100_lo", "purchase100 average"):
        line = next(row for row in train.splitlines() if row.startswith(scenario))
        assert len(re.findall(INTERVAL, line)) == 4  # TPR@0.1%, TPR@1%, TPR@10%, AUC
    # One dev model per scenario: nothing to resample, so no interval rather than a fake one.
    assert "[n/a]" in out.split("dev/final against")[1]
    assert run_lira_mia.main([*argv, "--no-intervals"]) == 0
    assert "[0." not in capsys.readouterr().out


def test_attack_best_writes_what_compare_chose(demo: Path, capsys) -> None:
    reference = demo / "reference"
    argv = base(demo, "--attack", BEST_ATTACK, "--reference", str(reference), *FAST_BOOT)
    assert run_lira_mia.main(argv) == 0
    out = capsys.readouterr().out
    for scenario in ("purchase100_inf", "purchase100_hi", "purchase100_lo"):
        chose = rf"{scenario}: chose .+ \[\d/4 folds\]; train TPR@10% \(CV\) {INTERVAL}"
        assert re.search(chose, out)
    assert re.search(r"(tied with|ahead of) the runner-up .+ \(CV\)", out)
    manifest = json.loads((demo / CHALLENGE / "predictions.json").read_text())
    assert BEST_ROW in json.dumps(manifest)

    # The comparison without the truth: the choice is made on train models alone, so the files
    # written with --reference must be its predictions.
    options = RunOptions(root=demo, challenge=CHALLENGE, write=False, uncertainty=FAST)
    _, results = compare_challenge(options)
    task = load_task(demo, CHALLENGE)
    for scenario, result in results.items():
        best = result.rows[BEST_ROW]
        scores = result.scores
        assert scores is not None and result.predictor is not None
        for phase, data in scores.phases.items():
            want = result.predictor.predict(best.chosen, phase)
            for model, values in zip(data.ids, want, strict=True):
                folder = demo / CHALLENGE / scenario / phase / f"model_{model}"
                written = read_prediction(folder, task.num_challenges)
                np.testing.assert_allclose(written, values, rtol=1e-15)


def test_audit_prints_bounds_beside_the_claimed_epsilon(demo: Path, capsys) -> None:
    argv = base(demo, "--global_variance", "--no-write", "--audit", "--delta", "1e-6")
    assert run_lira_mia.main(argv) == 0
    out = capsys.readouterr().out
    assert "Empirical epsilon lower bounds at delta 1e-06, 95% confidence" in out
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("lira ")}
    assert rows["purchase100_inf"].split()[2] == "inf"
    recorded = max(
        float(p.read_text()) for p in (demo / CHALLENGE / "purchase100_hi").glob("*/*/epsilon")
    )
    assert rows["purchase100_hi"].split()[2] == f"{recorded:.2f}"
    assert "DP GUARANTEE CONTRADICTED" not in out


def test_a_bound_above_the_claim_is_one_loud_line(tmp_path: Path, capsys, caplog) -> None:
    root = write_synthetic_root(tmp_path / "root")
    model = root / CHALLENGE / "purchase100_hi" / "train" / "model_0"
    model.mkdir(parents=True, exist_ok=True)
    (model / "epsilon").write_text("0.5\n")  # what the hi models claim to have reached
    task = load_task(root, CHALLENGE)
    row = RowResult(Config("lira", "lira offline prob gv"), [], np.zeros((1, 2)))
    row.epsilon = {"train": (1.25, AuditCounts(10, 2000, 200, 190))}
    quiet = RowResult(Config("loss", "loss"), [], np.zeros((1, 2)))
    quiet.epsilon = {"train": (0.0, AuditCounts(1, 2000, 2, 1))}
    options = RunOptions(root=root, challenge=CHALLENGE, uncertainty=Uncertainty(audit_delta=1e-5))
    with caplog.at_level(logging.WARNING):
        print_epsilon(task, {"purchase100_hi": {"lira": row, "loss": quiet}}, options, False)
    out = capsys.readouterr().out
    loud = [line for line in out.splitlines() if "CONTRADICTED" in line]
    assert len(loud) == 1
    assert "purchase100_hi" in loud[0] and "1.250" in loud[0] and "0.50" in loud[0]
    assert "1.250 (k=10: 190/200)" in out
    assert "CONTRADICTED" in caplog.text


def test_report_page_and_numbers(demo: Path, capsys) -> None:
    report = demo.parent / "report"
    argv = base(demo, "--compare", "--reference", str(demo / "reference"), *FAST_BOOT)
    argv += ["--report", str(report)]
    assert run_lira_mia.main(argv) == 0
    assert "Empirical epsilon lower bounds" in capsys.readouterr().out  # --report audits
    page = (report / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3  # one ROC per scenario
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing outside the file
    data = json.loads((report / "report.json").read_text())
    assert data["bootstrap"] == {"replicates": 100, "seed": 0}
    for scenario, entry in data["scenarios"].items():
        assert set(entry["roc"]) == {BEST_ROW, "lira offline prob gv"}
        band = entry["roc"][BEST_ROW]
        assert np.all(np.array(band["low"]) <= np.array(band["tpr"]) + 1e-12)
        assert np.all(np.array(band["tpr"]) <= np.array(band["high"]) + 1e-12)
        assert set(entry["intervals"]) == {"train", "dev", "final"}
        assert {"lira (CV)", BEST_ROW} <= set(entry["epsilon"])
        assert len(entry["exposed"]) == 20
        confidences = [p["confidence"] for p in entry["exposed"]]
        assert confidences == sorted(confidences, reverse=True)
        assert all(p["shadows_in"] + p["shadows_out"] == 3 for p in entry["exposed"])
        assert entry["choices"][BEST_ROW]["chosen"] == entry["chosen"]
        scores = np.load(demo / "preds" / CHALLENGE / scenario / "scores.npz")
        record = json.dumps(json.loads(str(scores["provenance"])), sort_keys=True).encode()
        fingerprint = data["provenance"]["bundle_fingerprints"][scenario]
        assert fingerprint == hashlib.sha256(record).hexdigest()
    assert data["provenance"]["command"] == shlex.join(["run_lira_mia.py", *argv])
    assert run_lira_mia.main(argv) == 0  # a previous report is replaced
    capsys.readouterr()


def test_report_folder_is_checked_before_any_work(demo: Path, tmp_path: Path, capsys) -> None:
    crowded = tmp_path / "crowded"
    crowded.mkdir()
    (crowded / "notes.txt").write_text("mine")
    argv = base(demo, "--compare", "--report", str(crowded))
    assert run_lira_mia.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "notes.txt" in err
    assert sorted(p.name for p in crowded.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--delta", "1e-6"], "add --audit"),
        (["--audit-level", "0.9"], "add --audit"),
        (["--report", "out"], "add --compare"),
        (["--attack", BEST_ATTACK, "--original"], "not to --attack best"),
        (["--bootstrap", "10"], "at least 100"),
        (["--audit", "--delta", "2"], "--delta must be in [0, 1)"),
    ],
)
def test_audit_flags_that_cannot_work_are_refused(demo: Path, extra, message, capsys) -> None:
    assert run_lira_mia.main(base(demo, "--no-write", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert not list((demo / CHALLENGE).glob(f"*/*/model_*/{PREDICTION_FILE}.tmp*"))
