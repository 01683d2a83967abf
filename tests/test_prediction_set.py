"""Predictions are replaced as one set (issue #11 items 2 and 5), on real demo files.

Every input is checked before the first ``prediction.csv`` is written, a run never creates a
model folder, and ``save_zip.py`` refuses a set that mixes two configurations, naming both.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

import mico.attacks.run
import run_lira_mia
import save_zip
from mico.fileio import write_text_atomic
from mico.layout import manifest_path

CHALLENGE = "purchase100"


def _args(root: Path, *extra: str) -> list[str]:
    return ["--challenge", CHALLENGE, "--root", str(root), "-q", *extra]


def _predictions(root: Path) -> dict[str, str]:
    files = sorted((root / CHALLENGE).glob("*/*/model_*/prediction.csv"))
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.fixture
def written(tiny_copy) -> Path:
    """A demo copy whose predictions come from one complete run (per-point LiRA)."""
    root = tiny_copy(CHALLENGE)
    assert run_lira_mia.main(_args(root)) == 0
    assert manifest_path(root, CHALLENGE).is_file()
    return root


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ")
    return err[-1]


def test_a_run_stopped_half_way_is_refused_naming_both(written, tmp_path, monkeypatch, capsys):
    before = _predictions(written)
    done = []

    def stop_after_five(path, text):
        if len(done) == 5:
            raise KeyboardInterrupt
        write_text_atomic(path, text)
        done.append(path)

    monkeypatch.setattr(mico.attacks.run, "write_text_atomic", stop_after_five)
    assert run_lira_mia.main(_args(written, "--global_variance")) == 130
    monkeypatch.undo()
    after = _predictions(written)
    assert 0 < sum(before[k] != after[k] for k in before) <= 5  # a real mixture on disk
    output = tmp_path / "sub.zip"
    capsys.readouterr()
    assert save_zip.main(_args(written, "--output", str(output))) == 2
    problems = capsys.readouterr().err
    mixed = [line for line in problems.splitlines() if "mix two configurations" in line]
    assert len(mixed) == 1, problems
    assert "'lira offline prob'" in mixed[0] and "'lira offline prob gv'" in mixed[0]
    assert not output.exists()
    # A complete rerun heals it.
    assert run_lira_mia.main(_args(written, "--global_variance")) == 0
    assert save_zip.main(_args(written, "--output", str(output))) == 0
    assert output.is_file()


def test_a_prediction_edited_by_hand_is_refused(written, tmp_path, capsys):
    edited = next(written.glob(f"{CHALLENGE}/*_inf/dev/model_*/prediction.csv"))
    values = edited.read_text().split(",")
    edited.write_text(",".join(["0.123456789", *values[1:]]))
    assert save_zip.main(_args(written, "--output", str(tmp_path / "s.zip"))) == 2
    problems = capsys.readouterr().err
    assert "were not written by 'lira offline prob'" in problems


def test_bad_reference_writes_nothing(written, tmp_path, capsys):
    before = _predictions(written)
    reference = Path(shutil.copytree(written / "reference", tmp_path / "reference"))
    broken = next(reference.glob(f"{CHALLENGE}/*_lo/final/model_*/solution.csv"))
    broken.write_text("0,1,2\n")
    args = _args(written, "--global_variance", "--reference", str(reference))
    assert run_lira_mia.main(args) == 2
    assert str(broken) in _one_line_error(capsys)
    assert _predictions(written) == before
    assert "'lira offline prob gv'" not in manifest_path(written, CHALLENGE).read_text()


def test_broken_later_scores_writes_nothing(written, capsys):
    before = _predictions(written)
    last = written / "preds" / CHALLENGE / f"{CHALLENGE}_lo" / "scores.npz"
    with np.load(last) as data:
        arrays = {key: data[key] for key in data.files}
    np.savez(last, **{**arrays, "version": np.array(99)})  # an outdated format
    assert run_lira_mia.main(_args(written, "--attack", "loss")) == 2
    assert "scores.npz" in _one_line_error(capsys)
    assert _predictions(written) == before


def test_a_missing_model_folder_is_listed_never_created(written, capsys):
    before = _predictions(written)
    gone = next(written.glob(f"{CHALLENGE}/*_hi/dev/model_*"))
    shutil.rmtree(gone)
    assert run_lira_mia.main(_args(written, "--attack", "loss")) == 2
    err = capsys.readouterr().err
    # The layout check, which every script runs first, lists it; the provenance check and the
    # writer's own check (below) stand behind it.
    assert "Traceback" not in err and f"  {gone.parent}: missing {gone.name} (expected" in err
    assert "differs from the layout" in err.strip().splitlines()[-1]
    assert not gone.exists()
    del before[str((gone / "prediction.csv").relative_to(written))]
    assert _predictions(written) == before


def test_the_writer_itself_never_creates_a_model_folder(written):
    """Behind the provenance check, the writer lists folders ``scores.npz`` covers that the
    bundle lacks rather than creating them (a preds folder shared by two bundles)."""
    from mico.layout import preds_root, scores_path
    from mico.store import ScenarioScores
    from mico.tasks import load_task

    task = load_task(written, CHALLENGE)
    scenario = task.scenarios[0]
    loaded = {scenario: ScenarioScores.load(scores_path(preds_root(written, CHALLENGE), scenario))}
    mico.attacks.run._check_model_folders(written, task, loaded)  # all there: nothing raised
    gone = next(written.glob(f"{CHALLENGE}/{scenario}/final/model_*"))
    shutil.rmtree(gone)
    with pytest.raises(FileNotFoundError, match="1 model folders") as caught:
        mico.attacks.run._check_model_folders(written, task, loaded)
    assert str(gone) in str(caught.value)
    assert not gone.exists()
