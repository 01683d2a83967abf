"""The offline demo on its ``tiny`` preset: layout, file formats, seeds vs solutions, DP models,
ground truth, resuming and refusing to mix configurations.

Each track's tiny bundle is built once per module (about 10-20 s each on 2 cores).
"""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mico.bundle.check import check_layout
from mico.bundle.layout import model_dirs, model_ids
from mico.bundle.records import read_seeds, read_solution
from mico.bundle.splits import split_indices
from mico.tracks import cifar10, purchase100
from mico.tracks.data import CIFAR10_BATCHES, load_cifar10, load_purchase100
from mico.tracks.models import OPACUS_PREFIX, load_model
from mico.tracks.registry import PHASES, get_task, load_task
from mico.train import demo
from mico.train.engine import accuracy, train_model

TARGET_EPSILON = {"inf": None, "hi": 10.0, "lo": 4.0}


def build(root: Path, challenge: str, **changes: object) -> int:
    """``download_files.py --demo tiny`` through the library, so errors arrive as exceptions."""
    options = demo.DemoOptions(challenge=challenge, root=root, preset="tiny", **changes)
    return demo.run(options)


def tiny(challenge: str) -> demo.Preset:
    return get_task(challenge).demo.presets["tiny"]


@pytest.fixture(scope="module")
def purchase(tiny_purchase: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable copy of the session's tiny purchase100 demo (tests here rebuild models)."""
    return Path(shutil.copytree(tiny_purchase, tmp_path_factory.mktemp("demo") / "purchase"))


@pytest.fixture(scope="module")
def cifar(tiny_cifar: Path) -> Path:
    return tiny_cifar


def all_models(root: Path, challenge: str) -> list[tuple[str, str, Path]]:
    task = load_task(root, challenge)
    return [
        (scenario, phase, folder)
        for scenario in task.scenarios
        for phase in PHASES
        for folder in model_dirs(root / challenge / scenario, phase)
    ]


@pytest.mark.parametrize("challenge", ["purchase100", "cifar10"])
def test_layout_and_bundle_json(challenge: str, request: pytest.FixtureRequest) -> None:
    root = request.getfixturevalue("purchase" if challenge == "purchase100" else "cifar")
    task = load_task(root, challenge)
    preset = tiny(challenge)
    assert (task.dataset_len, task.len_training, task.len_challenge) == (
        preset.dataset_len,
        preset.len_training,
        preset.len_challenge,
    )
    counts = {"train": preset.train_models, "dev": preset.eval_models, "final": preset.eval_models}
    assert dict(task.models_per_phase) == counts
    assert check_layout(root, task) == []
    # MICO numbering: train 0..T-1, then dev, then final.
    ids = {
        phase: [
            int(f.name.split("_")[1])
            for f in model_dirs(root / challenge / task.scenarios[0], phase)
        ]
        for phase in PHASES
    }
    t, e = preset.train_models, preset.eval_models
    assert ids == {
        "train": list(range(t)),
        "dev": list(range(t, t + e)),
        "final": list(range(t + e, t + 2 * e)),
    }
    # No temporary folders left behind.
    assert not list((root / challenge).rglob(".model_*"))


def test_seed_files_and_solutions(purchase: Path) -> None:
    task = load_task(purchase, "purchase100")
    seeds = []
    for _, phase, folder in all_models(purchase, "purchase100"):
        names = ["seed_challenge"] + (
            ["seed_training", "seed_membership"] if phase == "train" else []
        )
        for name in ("seed_challenge", "seed_training", "seed_membership"):
            assert (folder / name).exists() == (name in names), folder / name
        for name in names:
            text = (folder / name).read_text()
            assert re.fullmatch(r"\d+\n", text), (folder / name, text)
            assert 0 <= int(text) < 2**63
            seeds.append(int(text))
        assert (folder / "solution.csv").exists() == (phase == "train")
        if phase == "train":
            raw = (folder / "solution.csv").read_bytes()
            assert raw.endswith(b"\r\n") and raw.count(b"\n") == 1
            assert raw.count(b",") == task.num_challenges - 1
            got = read_solution(folder, task.num_challenges)
            s = read_seeds(folder)
            expected = split_indices(
                task.dataset_len,
                task.len_training,
                task.len_challenge,
                s["seed_challenge"],
                s["seed_training"],
                s["seed_membership"],
            ).solution
            np.testing.assert_array_equal(got, expected)
            assert got.sum() == task.len_challenge
    assert any(seed > 2**32 for seed in seeds)
    assert len(set(seeds)) == len(seeds)


@pytest.mark.parametrize("challenge", ["purchase100", "cifar10"])
def test_models_epsilon_and_accuracy(challenge: str, request: pytest.FixtureRequest) -> None:
    root = request.getfixturevalue("purchase" if challenge == "purchase100" else "cifar")
    task = load_task(root, challenge)
    for scenario, _, folder in all_models(root, challenge):
        target = TARGET_EPSILON[scenario.rsplit("_", 1)[1]]
        model = load_model(task, folder / "model.pt")
        assert not model.training
        keys = list(torch.load(folder / "model.pt", weights_only=True))
        assert all(k.startswith(OPACUS_PREFIX) for k in keys) == (target is not None), folder
        epsilon = (folder / "epsilon").read_text()
        assert epsilon.endswith("\n")
        if target is None:
            assert epsilon == "inf\n"
        else:
            assert abs(float(epsilon) - target) < 0.5
            assert float(epsilon) <= target + 1e-9
        acc = (folder / "accuracy").read_text()
        assert acc.endswith("\n") and 0.0 <= float(acc) <= 1.0


def test_reference_holds_hidden_membership(purchase: Path) -> None:
    task = load_task(purchase, "purchase100")
    reference = purchase / "reference" / "purchase100"
    assert (reference / demo.DEMO_MARKER).is_file()
    checked = 0
    for scenario, phase, folder in all_models(purchase, "purchase100"):
        ref = reference / scenario / phase / folder.name
        if phase == "train":
            assert not ref.exists()
            continue
        public, hidden = read_seeds(folder), read_seeds(ref)
        assert hidden["seed_challenge"] == public["seed_challenge"]
        assert hidden["seed_training"] is not None and hidden["seed_membership"] is not None
        splits = split_indices(
            task.dataset_len,
            task.len_training,
            task.len_challenge,
            hidden["seed_challenge"],
            hidden["seed_training"],
            hidden["seed_membership"],
        )
        np.testing.assert_array_equal(read_solution(ref, task.num_challenges), splits.solution)
        assert (ref / "solution.csv").read_bytes().endswith(b"\r\n")
        checked += 1
    assert checked == 3 * 2 * tiny("purchase100").eval_models


def test_purchase_data_file(purchase: Path) -> None:
    path = purchase / "data" / "purchase100" / "dataset_purchase"
    first = path.read_text().splitlines()[0].split(",")
    assert len(first) == 601 and 1 <= int(first[0]) <= 100
    assert set(first[1:]) <= {"0", "1"}
    data = load_purchase100(purchase / "data")
    assert len(data) == tiny("purchase100").dataset_len
    density = float(data.x.mean())
    assert 0.03 < density < 0.2  # sparse binary baskets
    assert int(data.y.min()) >= 0 and int(data.y.max()) <= 99
    assert len(torch.unique(data.y)) > 50


def test_cifar_pickles(cifar: Path) -> None:
    folder = cifar / "data" / "cifar10" / "cifar-10-batches-py"
    sizes = []
    for name in CIFAR10_BATCHES:
        with (folder / name).open("rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
        assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape[1] == 3072
        assert isinstance(batch[b"labels"], list) and len(batch[b"labels"]) == len(batch[b"data"])
        assert len(batch[b"filenames"]) == len(batch[b"data"])
        sizes.append(len(batch[b"data"]))
    n = tiny("cifar10").dataset_len
    assert sum(sizes) == n and sizes[-1] == n // 6
    data = load_cifar10(cifar / "data")
    assert data.x.shape == (n, 3, 32, 32)
    assert sorted(torch.unique(data.y).tolist()) == list(range(10))


@pytest.mark.slow
def test_rerun_skips_finished_models(purchase: Path) -> None:
    files = sorted(purchase.rglob("model.pt"))
    before = {path: path.stat().st_mtime_ns for path in files}
    assert build(purchase, "purchase100") == 0
    assert {path: path.stat().st_mtime_ns for path in files} == before


@pytest.mark.slow
def test_interrupted_model_is_rebuilt_identically(purchase: Path) -> None:
    folder = purchase / "purchase100" / "purchase100_inf" / "train" / "model_1"
    original = torch.load(folder / "model.pt", weights_only=True)
    solution = (folder / "solution.csv").read_bytes()
    # An interrupted run leaves a temporary folder and no model_1.
    tmp = folder.with_name(".model_1.tmp")
    folder.rename(tmp)
    (tmp / "model.pt").write_bytes(b"truncated")
    assert build(purchase, "purchase100") == 0
    assert not tmp.exists()
    rebuilt = torch.load(folder / "model.pt", weights_only=True)
    assert rebuilt.keys() == original.keys()
    for key in original:
        torch.testing.assert_close(rebuilt[key], original[key], rtol=0, atol=0)
    assert (folder / "solution.csv").read_bytes() == solution


def test_refuses_other_configuration(purchase: Path) -> None:
    with pytest.raises(FileExistsError, match="seed"):
        build(purchase, "purchase100", seed=1)
    with pytest.raises(FileExistsError, match="epochs"):
        build(purchase, "purchase100", epochs=7, data_dir=purchase / "other")


def test_refuses_foreign_data_and_bundles(tmp_path: Path) -> None:
    real = tmp_path / "data" / "purchase100" / "dataset_purchase"
    real.parent.mkdir(parents=True)
    real.write_text("1," + ",".join("0" * 600) + "\n")
    with pytest.raises(FileExistsError, match="did not make"):
        build(tmp_path, "purchase100")
    assert real.read_text().startswith("1,0")
    bundle = tmp_path / "b" / "cifar10" / "cifar10_inf"
    bundle.mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not a demo"):
        build(tmp_path / "b", "cifar10", data_dir=tmp_path / "d")


def test_plan_is_deterministic(tmp_path: Path) -> None:
    config = demo.make_config("purchase100", "tiny", seed=3)
    a = demo.plan_models(config, tmp_path, tmp_path / "ref")
    b = demo.plan_models(
        demo.make_config("purchase100", "tiny", seed=3), tmp_path, tmp_path / "ref"
    )
    c = demo.plan_models(
        demo.make_config("purchase100", "tiny", seed=4), tmp_path, tmp_path / "ref"
    )

    def key(jobs: list) -> list:
        return [(j.folder, j.train_seed, j.files, j.train_rows.tolist()) for j in jobs]

    assert key(a) == key(b)
    assert [j.files[0] for j in a] != [j.files[0] for j in c]  # seed_challenge differs
    x1, y1 = purchase100.synthesize_purchase100(300, 3)
    x2, y2 = purchase100.synthesize_purchase100(300, 3)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    i1, l1 = cifar10.synthesize_cifar10(60, 3)
    i2, l2 = cifar10.synthesize_cifar10(60, 3)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(l1, l2)


def test_make_config_knobs() -> None:
    config = demo.make_config(
        "purchase100", seed=5, train_models=10, eval_models=3, dataset_len=4000, epochs=2
    )
    assert config.len_training == round(4000 * 6080 / 8000)
    assert config.models_per_phase == {"train": 10, "dev": 3, "final": 3}
    assert list(model_ids(config.task.models_per_phase, "final")) == [13, 14, 15]
    assert config.recipe.epochs == 2
    with pytest.raises(ValueError, match="too small"):
        demo.make_config("purchase100", dataset_len=300)
    with pytest.raises(ValueError, match="at least 1"):
        demo.make_config("cifar10", train_models=0)


def test_train_model_dp_leaves_global_rng_alone() -> None:
    task = load_task(Path("/nonexistent"), "purchase100")
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(400, 600, generator=generator) < 0.1).float()
    y = torch.randint(0, 100, (400,), generator=generator)
    state = torch.get_rng_state()
    # Batches of every record: the PRV calibration takes 0.3 s instead of 4 s at rate 1/4.
    recipe = get_task("purchase100").recipe.replace(epochs=2, dp_batch_size=400)
    lo = task.scenario_privacy("purchase100_lo")
    result = train_model(task, x, y, recipe, privacy=lo, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(k.startswith(OPACUS_PREFIX) for k in result.state_dict)
    assert abs(result.epsilon - 4.0) < 0.5 and result.steps == 2
    again = train_model(task, x, y, recipe, privacy=lo, seed=7)
    for key, value in result.state_dict.items():
        assert torch.equal(value, again.state_dict[key])


@pytest.mark.parametrize(
    ("challenge", "shape"), [("cifar10", (3, 32, 32)), ("purchase100", (600,))]
)
def test_accuracy_counts_like_one_record_at_a_time(challenge: str, shape: tuple[int, ...]) -> None:
    """The held-out accuracy pass runs images channels-last in batches; it must count exactly
    what a plain NCHW forward of each record counts, and leave the model as it was."""
    task = get_task(challenge)
    model = task.architecture().train()
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(300, *shape, generator=generator)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::3] = (y[::3] + 1) % task.num_classes  # a third wrong
    with torch.no_grad():
        model.eval()
        plain = [int(model(x[i : i + 1]).argmax(1)) == int(y[i]) for i in range(len(y))]
        model.train()
    got = accuracy(model, x, y, batch_size=128)
    assert got == sum(plain) / len(y) == 200 / 300
    assert model.training and all(p.is_contiguous() for p in model.parameters())


@pytest.mark.slow
def test_download_files_dispatches_demo(tmp_path: Path) -> None:
    import download_files

    argv = ["--challenge", "purchase100", "--demo", "tiny", "--root", str(tmp_path), "-q"]
    assert download_files.main(argv) == 0
    assert check_layout(tmp_path, load_task(tmp_path, "purchase100")) == []


def test_nearest_centroid_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    features = (rng.random((500, 600)) < 0.1).astype(np.uint8)
    groups = rng.integers(0, 7, 500)
    centroids = np.stack([features[groups == g].mean(axis=0) for g in range(7)])
    distances = ((features[:, None, :] - centroids[None]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(
        purchase100._nearest_centroid(features, groups, 7), distances.argmin(1)
    )


def test_purchase_writer_round_trips(tmp_path: Path) -> None:
    features, labels = purchase100.synthesize_purchase100(50, 1)
    purchase100.write_purchase100(tmp_path, features, labels)
    path = tmp_path / "purchase100" / "dataset_purchase"
    expected = "".join(
        ",".join([str(label + 1), *map(str, row)]) + "\n"
        for label, row in zip(labels.tolist(), features.tolist(), strict=True)
    )
    assert path.read_text() == expected
    data = load_purchase100(tmp_path)
    np.testing.assert_array_equal(data.x.numpy(), features.astype(np.float32))
    np.testing.assert_array_equal(data.y.numpy(), labels)
