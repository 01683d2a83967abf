"""The DP distinguisher: the ``ddp`` challenge end to end, its download, and ``--attack reference``.

One tiny DDP demo (both scenarios) is built per module and run through all four scripts; the
download tests serve that very bundle from the local fake hub in the Hugging Face layout of
``szanella/MICO-DDP`` (files under ``ddp/``).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import download_files
import run_lira_mia
import save_preds
import save_zip
from mico.attacks.reference import reference_attack
from mico.attacks.report import COMPARE_METRICS, comparison_frame
from mico.bundle.layout import per_target_models_dir
from mico.bundle.records import read_solution
from mico.scoring import metrics
from mico.tracks.registry import get_task, load_task
from mico.train.per_target import per_target_keep, read_target
from tests.fake_hub import bundle_folder_files, serve_bundle

#: Builds a DDP demo and trains reference models (with Ray once): slow.
pytestmark = pytest.mark.slow

SCENARIOS = ("cifar10_ddp", "purchase100_ddp")

#: Per-target reference models a target in the module's root: the fewest the design allows
#: (one IN and one OUT a challenge point), as each CIFAR-10 DP model costs seconds.
REFERENCES = "2"


def args(root: Path, *more: str) -> list[str]:
    return ["--challenge", "ddp", "--root", str(root), "-q", *more]


@pytest.fixture(scope="module")
def ddp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``--demo tiny`` then ``save_preds.py`` and ``--attack reference --references 2``."""
    root = tmp_path_factory.mktemp("ddp")
    assert download_files.main(args(root, "--demo", "tiny")) == 0
    assert save_preds.main(args(root)) == 0
    reference = str(root / "reference")
    attack = ("--attack", "reference", "--references", REFERENCES, "--reference", reference)
    assert run_lira_mia.main(args(root, *attack)) == 0
    return root


def test_registry_facts() -> None:
    ddp = get_task("ddp")
    assert ddp.scenarios == ("cifar10_ddp", "purchase100_ddp", "sst2_ddp")
    sizes = {s: ddp.at(s).len_training for s in ddp.scenarios}
    assert sizes == {"cifar10_ddp": 50_000, "purchase100_ddp": 150_000, "sst2_ddp": 67_349}
    assert all(ddp.dp_epsilon(s) == 4.0 for s in ddp.scenarios)
    assert ddp.at("purchase100_ddp").architecture_name == "MLP"
    assert ddp.at("sst2_ddp").model_files == get_task("sst2").model_files
    assert {ddp.at(s).challenge for s in ddp.scenarios} == {"ddp"}
    assert ddp.at("cifar10_ddp").eval_seeds == ("seed_challenge", "seed_training")
    assert [ddp.expected_models(p) for p in ("train", "dev", "final")] == [100, 50, 50]
    assert ddp.scenario_name("purchase100") == "purchase100_ddp"
    with pytest.raises(ValueError, match="no scenario 'cifar10_lo'"):
        ddp.at("cifar10_lo")


def test_bundle_json_sizes_per_scenario(tmp_path: Path) -> None:
    folder = tmp_path / "ddp"
    folder.mkdir()
    sizes = {"dataset_len": 1200, "len_training": 900, "len_challenge": 100}
    (folder / "bundle.json").write_text(json.dumps({"scenarios": {"purchase100_ddp": sizes}}))
    task = load_task(tmp_path, "ddp")
    assert task.scenarios == ("purchase100_ddp",)
    assert task.at("purchase100_ddp").dataset_len == 1200
    (folder / "bundle.json").write_text(json.dumps({"scenarios": {"mnist_ddp": sizes}}))
    with pytest.raises(ValueError, match="unknown scenarios \\['mnist_ddp'\\]"):
        load_task(tmp_path, "ddp")


def test_demo_layout_reveals_seed_training(ddp_root: Path) -> None:
    for scenario in SCENARIOS:
        dev = sorted((ddp_root / "ddp" / scenario / "dev").iterdir())[0]
        names = {p.name for p in dev.iterdir()}
        assert {"seed_challenge", "seed_training", "model.pt"} <= names
        assert not names & {"seed_membership", "solution.csv"}
        truth = ddp_root / "reference" / "ddp" / scenario / "dev" / dev.name
        assert (truth / "solution.csv").is_file()


def test_reference_models_differ_from_the_target_only_in_challenge_points(ddp_root: Path) -> None:
    task = load_task(ddp_root, "ddp")
    part = task.at("purchase100_ddp")
    target = read_target(ddp_root, task, "purchase100_ddp", "dev", 4)
    folder = per_target_models_dir(ddp_root, "ddp", "purchase100_ddp", "dev", 4)
    keeps = np.stack([read_solution(folder / f"model_{r}", 200) for r in range(2)])
    assert (keeps.sum(axis=0) == 1).all() and (keeps.sum(axis=1) == 100).all()
    truth = read_solution(ddp_root / "reference/ddp/purchase100_ddp/dev/model_4", 200)
    members = target.challenge[truth == 1]
    assert len(members) + len(target.training) == part.len_training


def test_end_to_end_zip_and_rerun_trains_nothing(ddp_root: Path, capsys) -> None:
    root = ddp_root
    zip_path = root / "out.zip"
    assert save_zip.main(args(root, "--output", str(zip_path))) == 0
    names = zipfile.ZipFile(zip_path).namelist()
    assert len(names) == 4  # tiny: one dev and one final model per scenario
    assert {n.split("/")[1] for n in names} == set(SCENARIOS)
    assert all(n.startswith("ddp/") and n.endswith("/prediction.csv") for n in names)
    manifest = json.loads((root / "ddp" / "predictions.json").read_text())
    assert "2 reference models a target" in json.dumps(manifest)
    argv = ["--challenge", "ddp", "--root", str(root), "--attack", "reference", "--no-write"]
    argv += ["--references", REFERENCES]
    assert run_lira_mia.main(argv) == 0
    err = capsys.readouterr().err
    assert "0 to train" in err and "0 reference models trained" in err


def test_reference_audit_bounds_both_scenarios(ddp_root: Path, capsys) -> None:
    argv = args(
        ddp_root, "--attack", "reference", "--references", REFERENCES, "--no-write", "--audit"
    )
    assert run_lira_mia.main(argv) == 0
    out = capsys.readouterr().out.split("Empirical epsilon lower bounds")[1]
    for scenario in SCENARIOS:
        row = next(line for line in out.splitlines() if scenario in line)
        reference, _, claimed, train = row.split()[:4]
        assert reference == "reference" and float(claimed) == pytest.approx(4.0, abs=0.01)
        assert float(train) >= 0  # a bound (0: no leakage shown at 95%), not a blank


def test_every_attack_runs_on_ddp(ddp_root: Path, capsys) -> None:
    assert run_lira_mia.main(args(ddp_root, "--compare", "--references", REFERENCES)) == 0
    out = capsys.readouterr().out
    for row in ("hardness", "reference (CV)", "lira (CV)", "loss"):
        assert row in out


def test_compare_tables_keep_every_scenario(ddp_root: Path, capsys) -> None:
    """Both scenarios end in ``_ddp``: each keeps its own columns, and ``avg`` is their mean."""
    assert run_lira_mia.main(args(ddp_root, "--compare", "--no-intervals", "--markdown")) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("| attack | TPR@10%"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    assert columns[1:4] == ["TPR@10% cifar10", "TPR@10% purchase100", "TPR@10% avg"]
    loss = next(line for line in lines if line.startswith("| loss |"))
    cells = [float(cell) for cell in loss.strip("|").split("|")[1:4]]
    assert cells[2] == pytest.approx((cells[0] + cells[1]) / 2, abs=1e-4)


def test_short_scenario_names_stay_distinct() -> None:
    metric = {key: 0.5 for key in COMPARE_METRICS}
    rows = {"loss": {"cifar10_ddp": metric, "purchase100_ddp": {**metric, "TPR_FPR_1000": 0.7}}}
    frame = comparison_frame(rows)
    assert list(frame["TPR@10%"].columns) == ["cifar10", "purchase100", "avg"]
    assert frame["TPR@10%"].loc["loss"].tolist() == pytest.approx([0.5, 0.7, 0.6])
    plain = {"loss": {f"purchase100_{s}": metric for s in ("inf", "hi", "lo")}}
    assert list(comparison_frame(plain)["AUC"].columns) == ["inf", "hi", "lo", "avg"]


def test_reference_needs_revealed_training(tiny_copy, capsys) -> None:
    root = tiny_copy("purchase100")
    argv = ["--challenge", "purchase100", "--root", str(root), "--attack", "reference"]
    assert run_lira_mia.main(argv) == 2
    err = capsys.readouterr().err
    assert "no seed_training" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--references", "3"), "--references must be an even number"),
        (("--attack", "lira", "--references", "4"), "--references builds models for"),
        (("--original", "--attack", "lira"), "--original reproduces the 2nd place"),
    ],
)
def test_bad_reference_options_are_one_line_errors(ddp_root, capsys, extra, message) -> None:
    more = extra if "--attack" in extra else ("--attack", "reference", *extra)
    assert run_lira_mia.main(args(ddp_root, "--no-write", *more)) == 2
    assert message in capsys.readouterr().err


def test_demo_scenarios_and_train_shadows_refusal(tmp_path, capsys) -> None:
    assert download_files.main(args(tmp_path, "--demo", "tiny", "--scenarios", "sst2_ddp")) == 2
    assert "builds cifar10_ddp, purchase100_ddp only" in capsys.readouterr().err
    import train_shadows

    assert train_shadows.main(args(tmp_path, "--models", "2")) == 2
    assert "--attack reference" in capsys.readouterr().err


def test_reference_keep_is_balanced_and_prefix_stable() -> None:
    eight = per_target_keep(3, "cifar10_ddp", 7, 8, 200)
    four = per_target_keep(3, "cifar10_ddp", 7, 4, 200)
    assert (eight.sum(axis=0) == 4).all() and (eight.sum(axis=1) == 100).all()
    assert np.array_equal(eight[:4], four)
    assert not np.array_equal(four, per_target_keep(3, "cifar10_ddp", 8, 4, 200))


def test_reference_attack_separates_members() -> None:
    rng = np.random.default_rng(0)
    targets, refs, points = 20, 4, 200
    keep = np.stack([per_target_keep(0, "s", t, refs, points) for t in range(targets)])
    effect = rng.normal(0, 3, (targets, 1, points))  # per-point difficulty
    reference = effect + 1.0 * keep + rng.normal(0, 0.3, keep.shape)
    truth = rng.random((targets, points)) < 0.5
    target = effect[:, 0] + 1.0 * truth + rng.normal(0, 0.3, truth.shape)
    auc = {}
    for variance in ("pooled", "per-point"):
        for test in ("online", "offline"):
            scores = reference_attack(target, reference, keep, variance=variance, test=test)
            assert scores.shape == truth.shape and scores.min() >= 0 and scores.max() <= 1
            auc[variance, test] = metrics(truth.ravel(), scores.ravel())["AUC"]
    assert min(auc.values()) > 0.75
    # Two references a side: a per-point variance is noise, the pooled one is not.
    assert auc["pooled", "online"] > 0.95 and auc["pooled", "online"] > auc["per-point", "online"]
    with pytest.raises(ValueError, match="must both be"):
        reference_attack(target, reference, keep[:, :2])


@pytest.fixture
def hub(fake_hub, ddp_root):
    """The suite's fake hub, serving the tiny DDP bundle as ``szanella/MICO-DDP`` (under
    ``ddp/``) too."""
    serve_bundle(fake_hub, bundle_folder_files(ddp_root, "ddp"), "ddp")
    return fake_hub


def test_download_ddp_layout_whole(hub, tmp_path: Path, ddp_root: Path) -> None:
    assert download_files.main(args(tmp_path, "--skip-base")) == 0
    for scenario in SCENARIOS:
        fetched = tmp_path / "ddp" / scenario / "final"
        model = sorted(fetched.iterdir())[0]
        assert {p.name for p in model.iterdir()} == {"seed_challenge", "seed_training", "model.pt"}
        original = ddp_root / "ddp" / scenario / "final" / model.name / "model.pt"
        assert (model / "model.pt").read_bytes() == original.read_bytes()


def test_download_ddp_scenarios_fetches_one_dataset(hub, tmp_path: Path) -> None:
    mirror = f"{hub.url}/mirror"
    argv = args(tmp_path, "--scenarios", "purchase100_ddp", "--base-url", mirror)
    assert download_files.main(argv) == 0
    assert (tmp_path / "ddp" / "purchase100_ddp" / "dev").is_dir()
    assert not (tmp_path / "ddp" / "cifar10_ddp").exists()
    assert (tmp_path / "data" / "purchase100" / "dataset_purchase").is_file()
    assert not any("cifar" in request.path for request in hub.log)


def test_download_unknown_ddp_scenario(hub, tmp_path: Path, capsys) -> None:
    assert download_files.main(args(tmp_path, "--scenarios", "mnist_ddp", "--skip-base")) == 2
    assert "unknown mnist_ddp" in capsys.readouterr().err
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_references_grow_on_ray(ddp_root: Path, tmp_path: Path, capsys) -> None:
    """``--ray local`` trains the two new references a target that ``--references 4`` adds
    (the first two are reused: the design is prefix-stable), written like the pool's."""
    root = Path(shutil.copytree(ddp_root, tmp_path / "root", symlinks=True))
    # A bundle of the purchase100_ddp scenario alone, as bundle.json declares it: keep it quick.
    shutil.rmtree(root / "ddp" / "cifar10_ddp")
    config = json.loads((root / "ddp" / "bundle.json").read_text())
    for key in ("scenarios", "demo"):
        del config[key]["cifar10_ddp"]
    (root / "ddp" / "bundle.json").write_text(json.dumps(config))
    argv = ["--challenge", "ddp", "--root", str(root), "--attack", "reference", "--no-write"]
    assert run_lira_mia.main([*argv, "--references", "4", "--ray", "local", "--workers", "2"]) == 0
    err = capsys.readouterr().err
    assert "cifar10_ddp" not in err
    assert "purchase100_ddp: 12 reference models trained" in err
    folder = per_target_models_dir(root, "ddp", "purchase100_ddp", "final", 5)
    keeps = np.stack([read_solution(folder / f"model_{r}", 200) for r in range(4)])
    assert (keeps.sum(axis=0) == 2).all()
    assert (folder / "model_3" / "model.pt").is_file()
