"""Track registry, bundle.json overrides and the on-disk layout readers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mico.bundle import (
    check_layout,
    model_dirs,
    model_splits,
    read_prediction,
    read_solution,
    scenario_dirs,
    write_prediction,
    write_solution,
)
from mico.splits import split_indices
from mico.tasks import get_task, load_task


def test_registry_values():
    cifar, purchase = get_task("cifar10"), get_task("purchase100")
    assert (cifar.dataset_len, cifar.len_training, cifar.num_classes) == (60000, 50000, 10)
    assert (purchase.dataset_len, purchase.len_training, purchase.num_classes) == (
        197324,
        150000,
        100,
    )
    assert purchase.scenarios == ("purchase100_inf", "purchase100_hi", "purchase100_lo")
    assert [purchase.expected_models(p) for p in ("train", "dev", "final")] == [100, 50, 50]
    sst2 = get_task("sst2")
    assert (sst2.dataset_len, sst2.len_training, sst2.num_classes) == (68221, 67349, 2)
    assert sst2.model_files == ("config.json", "pytorch_model.bin")
    with pytest.raises(ValueError, match="choose one of cifar10, ddp, purchase100, sst2"):
        get_task("cifar100")


def test_bundle_json_overrides_and_validation(tmp_path):
    assert load_task(tmp_path, "purchase100") == get_task("purchase100")
    folder = tmp_path / "purchase100"
    folder.mkdir()
    config = {
        "dataset_len": 1000,
        "len_training": 600,
        "len_challenge": 50,
        "models_per_phase": {"train": 4, "dev": 2, "final": 2},
    }
    (folder / "bundle.json").write_text(json.dumps(config))
    task = load_task(tmp_path, "purchase100")
    assert (task.dataset_len, task.len_training, task.num_challenges) == (1000, 600, 100)
    assert task.expected_models("dev") == 2 and task.num_classes == 100
    (folder / "bundle.json").write_text(json.dumps({"len_trainin": 5}))
    with pytest.raises(ValueError, match="unknown keys"):
        load_task(tmp_path, "purchase100")
    (folder / "bundle.json").write_text(json.dumps({"len_training": 250000}))
    with pytest.raises(ValueError, match="inconsistent sizes"):
        load_task(tmp_path, "purchase100")
    (folder / "bundle.json").write_text("{not json")
    with pytest.raises(ValueError, match="bundle.json"):
        load_task(tmp_path, "purchase100")


def test_model_dirs_numeric_order_and_scenarios(tmp_path):
    task = get_task("cifar10")
    with pytest.raises(FileNotFoundError, match="download_files.py"):
        scenario_dirs(tmp_path, task)
    for n in (10, 2, 1, 100):
        (tmp_path / "cifar10" / "cifar10_hi" / "dev" / f"model_{n}").mkdir(parents=True)
    (tmp_path / "cifar10" / "cifar10_hi" / "dev" / "model_x").mkdir()
    (tmp_path / "cifar10" / "cifar10_inf").mkdir()
    (tmp_path / "cifar10" / "cifar10_lo").write_text("a file, not a scenario")
    assert [p.name for p in scenario_dirs(tmp_path, task)] == ["cifar10_inf", "cifar10_hi"]
    dev = model_dirs(tmp_path / "cifar10" / "cifar10_hi", "dev")
    assert [p.name for p in dev] == ["model_1", "model_2", "model_10", "model_100"]
    assert model_dirs(tmp_path / "cifar10" / "cifar10_hi", "final") == []


def test_solution_and_prediction_files(tmp_path):
    (tmp_path / "solution.csv").write_bytes(b"1,0,0,1\r\n")
    assert read_solution(tmp_path, 4).tolist() == [1, 0, 0, 1]
    (tmp_path / "uneven.csv").write_bytes(b"1,0,1,1\r\n")  # MICO's have m members of 2m
    with pytest.raises(ValueError, match="3 of 4 values are 1, a MICO solution has exactly 2"):
        read_solution(tmp_path / "uneven.csv", 4)
    write_solution(tmp_path / "s2.csv", np.array([0, 1]))
    assert (tmp_path / "s2.csv").read_bytes() == b"0,1\r\n"
    with pytest.raises(ValueError, match="expected 5 comma-separated"):
        read_solution(tmp_path / "solution.csv", 5)
    (tmp_path / "bad.csv").write_text("1,2,0,1\n")
    with pytest.raises(ValueError, match="bad.csv"):
        read_solution(tmp_path / "bad.csv", 4)
    values = np.array([0.0, 1.0, 0.123456789012345678, 1e-300])
    write_prediction(tmp_path, values)
    assert np.array_equal(read_prediction(tmp_path, 4), values)
    with pytest.raises(ValueError, match="refusing"):
        write_prediction(tmp_path / "p.csv", np.array([0.5, np.nan]))
    assert not (tmp_path / "p.csv").exists()
    (tmp_path / "prediction.csv").write_text("0.5,1.5,0.1,0\n")
    with pytest.raises(ValueError, match="outside"):
        read_prediction(tmp_path, 4)


def test_model_splits_and_check_layout(tmp_path):
    folder = tmp_path / "purchase100"
    folder.mkdir()
    config = {"dataset_len": 1000, "len_training": 600, "len_challenge": 50}
    config["models_per_phase"] = {"train": 1, "dev": 1, "final": 1}
    (folder / "bundle.json").write_text(json.dumps(config))
    task = load_task(tmp_path, "purchase100")
    problems = check_layout(tmp_path, task)
    assert len(problems) == 3 and "scenario folder missing" in str(problems[0])
    seeds = {"seed_challenge": 2**40 + 3, "seed_training": 11, "seed_membership": 12}
    for name in task.scenarios:
        for phase, n in (("train", 0), ("dev", 1), ("final", 2)):
            model = folder / name / phase / f"model_{n}"
            model.mkdir(parents=True)
            for seed, value in seeds.items():
                if phase == "train" or seed == "seed_challenge":
                    (model / seed).write_text(f"{value}\n")
            (model / "model.pt").write_bytes(b"x")
            if phase == "train":
                write_solution(model / "solution.csv", np.arange(100) % 2)
    assert check_layout(tmp_path, task) == []
    (folder / "purchase100_lo" / "dev" / "model_1" / "model.pt").unlink()
    (problem,) = check_layout(tmp_path, task)
    assert problem.path.name == "model.pt" and "dev/model_1" in str(problem)
    s = model_splits(folder / "purchase100_inf" / "train" / "model_0", task)
    expected = split_indices(1000, 600, 50, 2**40 + 3, 11, 12)
    assert np.array_equal(s.challenge, expected.challenge)
    assert np.array_equal(s.solution, expected.solution)
    dev = model_splits(folder / "purchase100_inf" / "dev" / "model_1", task)
    assert dev.solution is None and np.array_equal(dev.challenge, expected.challenge)


@pytest.mark.parametrize(
    "counts",
    [
        None,
        [4, 2, 2],
        {"train": 4.7, "dev": 1, "final": 1},
        {"train": "four", "dev": 1, "final": 1},
        {"train": 4, "dev": -1, "final": 1},
        {"train": True, "dev": 1, "final": 1},
        {"train": 0, "dev": 1, "final": 1},
        {"train": 4, "dev": 1},
    ],
)
def test_bundle_json_rejects_bad_model_counts(tmp_path, counts):
    """Issue #11 item 8: null, a list, 4.7, "four", negative counts were accepted or crashed."""
    folder = tmp_path / "purchase100"
    folder.mkdir()
    (folder / "bundle.json").write_text(json.dumps({"models_per_phase": counts}))
    with pytest.raises(ValueError, match="bundle.json: models_per_phase"):
        load_task(tmp_path, "purchase100")


def _bundle(tmp_path, counts=(2, 1, 1)):
    """A small purchase100 bundle with seed files and solutions, no model.pt needed."""
    folder = tmp_path / "purchase100"
    folder.mkdir()
    config = {"dataset_len": 1000, "len_training": 600, "len_challenge": 100}
    config["models_per_phase"] = dict(zip(("train", "dev", "final"), counts, strict=True))
    (folder / "bundle.json").write_text(json.dumps(config))
    task = load_task(tmp_path, "purchase100")
    for name in task.scenarios:
        first = 0
        for phase, n in zip(("train", "dev", "final"), counts, strict=True):
            for i in range(first, first + n):
                model = folder / name / phase / f"model_{i}"
                model.mkdir(parents=True)
                (model / "seed_challenge").write_text(f"{i + 7}\n")
                if phase == "train":
                    (model / "seed_training").write_text("1\n")
                    (model / "seed_membership").write_text("2\n")
                    write_solution(model / "solution.csv", np.arange(200) % 2)
            first += n
    assert check_layout(tmp_path, task, need_models=False) == []
    return folder, task


def test_check_layout_names_extra_renamed_and_missing_models(tmp_path):
    """Issue #11 item 9: an extra train/model_999 joined the shadows silently, and a dev model
    renamed model_04 got its prediction in a new model_4 folder."""
    folder, task = _bundle(tmp_path)
    inf = folder / "purchase100_inf"
    (inf / "train" / "model_0").rename(inf / "train" / "model_999")
    (inf / "dev" / "model_2").rename(inf / "dev" / "model_02")
    problems = [str(p) for p in check_layout(tmp_path, task, need_models=False)]
    assert any("missing model_0 " in p and "train" in p for p in problems), problems
    assert any("unexpected model_999" in p for p in problems), problems
    assert any("missing model_2 " in p and "dev" in p for p in problems), problems
    assert any("not model_N names: model_02" in p for p in problems), problems


def test_check_layout_catches_len_challenge_that_does_not_fit_the_solutions(tmp_path):
    """Issue #11 item 8: len_challenge 50 was accepted although every solution holds 200."""
    folder, _ = _bundle(tmp_path)
    config = json.loads((folder / "bundle.json").read_text())
    (folder / "bundle.json").write_text(json.dumps({**config, "len_challenge": 50}))
    problems = check_layout(tmp_path, load_task(tmp_path, "purchase100"), need_models=False)
    assert problems and all("len_challenge=50 means 100" in str(p) for p in problems)
