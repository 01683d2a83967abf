"""End to end on the ``tiny`` demo: save_preds -> run_lira_mia -> save_zip, and the defects of
the original 2nd-place code (MICO.md section 8), one test each."""

from __future__ import annotations

import builtins
import io
import itertools
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import download_files
import run_lira_mia
import save_preds
import save_zip
from mico.attacks.compare import Predictor
from mico.attacks.registry import get_attack
from mico.bundle.layout import model_dirs
from mico.bundle.records import model_splits, read_prediction, write_prediction
from mico.outputs.predict import PredictOptions, save_scenario
from mico.outputs.store import SCORES_FILE, ScenarioScores
from mico.tracks.registry import get_task, load_task

CHALLENGE = "purchase100"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    """A tiny purchase100 demo bundle with its predictions computed once for the module."""
    root = tmp_path_factory.mktemp("demo")
    assert (
        download_files.main(["--challenge", CHALLENGE, "--demo", "tiny", "--root", str(root)]) == 0
    )
    assert save_preds.main(["--challenge", CHALLENGE, "--root", str(root), "-q"]) == 0
    return root


def _scores(root: Path, scenario: str) -> ScenarioScores:
    return ScenarioScores.load(root / "preds" / CHALLENGE / scenario / SCORES_FILE)


def test_scores_cover_every_model_and_point(demo_root):
    task = load_task(demo_root, CHALLENGE)
    for scenario in task.scenarios:
        scores = _scores(demo_root, scenario)
        folder = demo_root / CHALLENGE / scenario
        for phase in ("train", "dev", "final"):
            models = model_dirs(folder, phase)
            data = scores.phases[phase]
            assert data.ids.tolist() == [int(m.name.split("_")[1]) for m in models]
            for model, cols in zip(models, data.points, strict=True):
                challenge = model_splits(model, task).challenge
                assert scores.points[cols].tolist() == challenge.tolist()
        assert np.all(np.diff(scores.points) > 0)
        assert np.isfinite(scores.shadow_margin).all()


def test_defect_in_out_is_decided_by_dataset_index(demo_root):
    """The original tested dataset indices against positions inside ``challenge``/``rest``."""
    task = load_task(demo_root, CHALLENGE)
    scenario = task.scenarios[0]
    scores = _scores(demo_root, scenario)
    shadows = model_dirs(demo_root / CHALLENGE / scenario, "train")
    for row, model in enumerate(shadows):
        splits = model_splits(model, task)
        trained = set(splits.member.tolist()) | set(splits.training.tolist())
        expected = [int(p) in trained for p in scores.points]
        assert scores.shadow_in[row].tolist() == expected
        # A shadow is IN on exactly its own members among its own challenge points.
        cols = scores.phases["train"].points[row]
        assert scores.shadow_in[row, cols].tolist() == splits.solution.astype(bool).tolist()


def test_defect_len_training_is_per_track():
    """The original used CIFAR-10's LEN_TRAINING = 50000 for Purchase-100 too."""
    assert get_task("purchase100").len_training == 150_000
    assert get_task("cifar10").len_training == 50_000


def test_defect_train_target_is_not_its_own_shadow(demo_root):
    """In the train phase the target must be excluded from its own shadow statistics."""
    scores = _scores(demo_root, load_task(demo_root, CHALLENGE).scenarios[0])
    train = scores.phases["train"]
    assert train.shadow.tolist() == list(range(len(train.ids)))
    # Moving only the target's own row must not move its own predictions (it is excluded),
    # and must move other targets' predictions (it is their shadow).
    config = get_attack("lira").configs()[0]
    before = Predictor(scores).predict(config, "train")
    scores.shadow_margin[0] += 5.0
    after = Predictor(scores).predict(config, "train")
    np.testing.assert_allclose(before[0], after[0], rtol=1e-9, atol=1e-12)
    assert not np.allclose(before[1:], after[1:])


FLAGS = ["--global_variance", "--online_attack"]
SCALINGS = [[], ["--logit_scaling"], ["--stable_logit_scaling"]]


@pytest.mark.parametrize(
    "flags",
    [
        [*scaling, *chosen]
        for scaling in SCALINGS
        for r in range(3)
        for chosen in itertools.combinations(FLAGS, r)
    ],
    ids=lambda f: "+".join(a.strip("-") for a in f) or "default",
)
def test_defect_every_flag_combination_writes_valid_predictions(demo_root, flags, capsys):
    """The original refused scaling + online and wrote online ratios outside [0, 1]."""
    code = run_lira_mia.main(["--challenge", CHALLENGE, "--root", str(demo_root), "-q", *flags])
    assert code == 0
    assert "TPR@10%" in capsys.readouterr().out
    task = load_task(demo_root, CHALLENGE)
    for scenario in task.scenarios:
        for phase in ("train", "dev", "final"):
            for model in model_dirs(demo_root / CHALLENGE / scenario, phase):
                read_prediction(model, task.num_challenges)  # raises unless 2m values in [0, 1]


def test_defect_each_point_is_evaluated_once_and_reruns_are_free(tmp_path):
    """The original ran every shadow over each target's points separately (repeated work)."""
    root = tmp_path / "r"
    assert (
        download_files.main(["--challenge", CHALLENGE, "--demo", "tiny", "--root", str(root)]) == 0
    )
    task = load_task(root, CHALLENGE)
    dataset = task.load_dataset(root / "data")
    scenario = root / CHALLENGE / task.scenarios[0]
    options = PredictOptions(batch_size=37)
    out = tmp_path / "preds"
    scores, evaluated = save_scenario(scenario, out, task, dataset, options)
    shadows, unique = scores.shadow_margin.shape
    targets = len(scores.phases["dev"].ids) + len(scores.phases["final"].ids)
    assert evaluated == shadows * unique + targets * task.num_challenges
    total = sum(len(p.ids) for p in scores.phases.values()) * task.num_challenges
    assert unique < total  # shared points exist, and each was evaluated once per shadow
    # Interrupted after the first shadow: only the missing models run again.
    for cache in sorted((out / "models" / "train").glob("model_*.npz"))[1:]:
        cache.unlink()
    _, evaluated = save_scenario(scenario, out, task, dataset, options)
    assert evaluated == (shadows - 1) * unique
    _, evaluated = save_scenario(scenario, out, task, dataset, options)
    assert evaluated == 0


def test_reference_scoring_and_plot(demo_root, capsys):
    plot = demo_root / "roc.png"
    args = ["--challenge", CHALLENGE, "--root", str(demo_root), "--global_variance", "-q"]
    args += ["--reference", str(demo_root / "reference"), "--plot", str(plot)]
    assert run_lira_mia.main(args) == 0
    out = capsys.readouterr().out
    assert "dev/final against the reference" in out and "purchase100_lo final" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_save_zip_layout_and_refusals(demo_root, tmp_path, capsys, monkeypatch):
    assert run_lira_mia.main(["--challenge", CHALLENGE, "--root", str(demo_root), "-q"]) == 0
    output = tmp_path / "sub.zip"
    opened: Counter[str] = Counter()
    real_open = io.open

    def counted_open(file, *args, **kwargs):
        opened[str(file)] += 1
        return real_open(file, *args, **kwargs)

    with monkeypatch.context() as patch:  # Path.read_bytes opens through io.open, zipfile open
        patch.setattr(io, "open", counted_open)
        patch.setattr(builtins, "open", counted_open)
        args = ["--challenge", CHALLENGE, "--root", str(demo_root), "--output", str(output)]
        assert save_zip.main(args) == 0
    task = load_task(demo_root, CHALLENGE)
    expected = {
        f"{CHALLENGE}/{scenario}/{phase}/{model.name}/prediction.csv"
        for scenario in task.scenarios
        for phase in ("dev", "final")
        for model in model_dirs(demo_root / CHALLENGE / scenario, phase)
    }
    read = {
        Path(name).relative_to(demo_root).as_posix(): count
        for name, count in opened.items()
        if Path(name).is_relative_to(demo_root)
    }
    assert {name: read.get(name) for name in expected} == dict.fromkeys(expected, 1)
    with zipfile.ZipFile(output) as archive:
        assert set(archive.namelist()) == expected
        for name in expected:  # what archive.write would store: bytes, time stamp, deflated
            info = archive.getinfo(name)
            assert archive.read(name) == (demo_root / name).read_bytes()
            mtime = zipfile.ZipInfo.from_file(demo_root / name).date_time
            assert info.date_time == (*mtime[:5], mtime[5] // 2 * 2)  # zip times: 2 s steps
            assert info.compress_type == zipfile.ZIP_DEFLATED
        name = sorted(expected)[0]
        values = np.array(archive.read(name).decode().strip().split(","), dtype=float)
        assert values.shape == (task.num_challenges,)
    # Break two models: the zip is refused, both problems are listed, the old zip is untouched.
    dev = model_dirs(demo_root / CHALLENGE / task.scenarios[1], "dev")[0]
    (dev / "prediction.csv").write_text("0.5,2.0\n")
    final = model_dirs(demo_root / CHALLENGE / task.scenarios[2], "final")[0]
    (final / "prediction.csv").unlink()
    stamp = output.stat().st_mtime_ns
    capsys.readouterr()
    assert (
        save_zip.main(["--challenge", CHALLENGE, "--root", str(demo_root), "--output", str(output)])
        == 2
    )
    err = capsys.readouterr().err
    assert f"{dev}/prediction.csv" in err and f"{final}/prediction.csv" in err
    assert output.stat().st_mtime_ns == stamp
    write_prediction(dev / "prediction.csv", np.full(task.num_challenges, 0.5))
    write_prediction(final / "prediction.csv", np.full(task.num_challenges, 0.5))


def test_bad_input_gives_one_line_errors(tmp_path, demo_root, capsys):
    assert save_preds.main(["--challenge", CHALLENGE, "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "download_files.py" in err and "\n" not in err
    assert (
        run_lira_mia.main(
            ["--challenge", CHALLENGE, "--root", str(demo_root), "--preds-dir", str(tmp_path)]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "run save_preds.py first" in err and "\n" not in err
    wrong = ["--challenge", CHALLENGE, "--root", str(demo_root), "--data-dir", str(tmp_path)]
    assert save_preds.main([*wrong, "--preds-dir", str(tmp_path / "p")]) == 2
    assert "dataset_purchase" in capsys.readouterr().err
