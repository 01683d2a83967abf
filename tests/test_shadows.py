"""train_shadows.py: the balanced design, the shadow folders, growth, Ray against the local
pool, and one-line errors that leave no model folder behind."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import train_shadows
from mico.bundle.layout import (
    ACCURACY_FILE,
    EPSILON_FILE,
    MEMBERS_FILE,
    MODEL_FILE,
    RECIPE_FILE,
    shadow_design_path,
    shadows_dir,
)
from mico.tracks.registry import get_task, load_task
from mico.train import farm
from mico.train.design import extend_design, load_design
from mico.train.shadows import extra_shadows, resolve_recipe
from tests.test_attacks import FAST_BOOT

INF, HI = "purchase100_inf", "purchase100_hi"


def sized(dataset_len: int, len_training: int):
    return get_task("purchase100").replace(
        dataset_len=dataset_len, len_training=len_training, len_challenge=10
    )


def check_balanced(keep: np.ndarray, k: int) -> None:
    """Every row holds exactly ``k`` pool points; every column floor/ceil of ``N * p``."""
    rows, pool = keep.shape
    assert (keep.sum(axis=1) == k).all()
    mean = rows * k / pool
    assert set(keep.sum(axis=0).tolist()) <= {int(np.floor(mean)), int(np.ceil(mean))}


@pytest.mark.parametrize(
    ("dataset_len", "len_training", "k"),
    [
        (5000, 2000, 200),  # plenty of non-pool records: p = 1/2
        (600, 500, 300),  # 200 non-pool records: k = 500 - 200, the smallest feasible p = 0.75
    ],
)
def test_design_is_balanced_deterministic_and_grows_without_changing_old_rows(
    dataset_len: int, len_training: int, k: int
) -> None:
    task = sized(dataset_len, len_training)
    pool = np.sort(np.random.default_rng(1).choice(dataset_len, 400, replace=False))
    design = extend_design(None, pool, task, 16, seed=3, scenario_index=0)
    check_balanced(design.keep, k)
    assert design.fraction == pytest.approx(k / 400)
    again = extend_design(None, pool, task, 16, seed=3, scenario_index=0)
    assert np.array_equal(design.keep, again.keep)
    assert not np.array_equal(design.keep, extend_design(None, pool, task, 16, 4, 0).keep)

    grown = extend_design(design, pool, task, 40, seed=3, scenario_index=0)
    assert np.array_equal(grown.keep[:16], design.keep)
    check_balanced(grown.keep, k)
    members = grown.members(20)
    assert len(members) == len_training and np.all(np.diff(members) > 0)
    assert np.array_equal(np.intersect1d(members, pool), pool[grown.keep[20]])
    assert len(np.intersect1d(grown.held_out(20, members), members)) == 0

    with pytest.raises(ValueError, match="--seed 3"):
        extend_design(grown, pool, task, 41, seed=5, scenario_index=0)


def run(root: Path, *args: str) -> int:
    return train_shadows.main(["--challenge", "purchase100", "--root", str(root), "-q", *args])


def test_shadow_folders_hold_the_model_its_members_and_recipe_and_grow(tiny_copy) -> None:
    root = tiny_copy("purchase100")
    task = load_task(root, "purchase100")
    assert run(root, "--models", "2", "--scenarios", "inf", "--seed", "5") == 0
    shadows = extra_shadows(root, task, INF)
    assert [s.id for s in shadows] == [0, 1]
    design = load_design(shadow_design_path(root, "purchase100", INF))
    for shadow in shadows:
        assert np.array_equal(shadow.members, design.members(shadow.id))
        assert len(shadow.members) == task.len_training
        state = torch.load(shadow.model_path, weights_only=True)
        task.architecture().load_state_dict(state)
        recipe = json.loads((shadow.folder / RECIPE_FILE).read_text())
        assert recipe["recipe"]["epochs"] == 3  # the tiny demo's recipe, from bundle.json
        assert recipe["dp_epsilon"] is None
        assert float((shadow.folder / EPSILON_FILE).read_text()) == float("inf")
        assert 0 <= float((shadow.folder / ACCURACY_FILE).read_text()) <= 1
    first = (shadows[0].folder / MODEL_FILE).stat().st_mtime_ns

    # Growing trains model_2 only; the design's first rows stay; another seed is refused.
    assert run(root, "--models", "3", "--scenarios", "inf", "--seed", "5") == 0
    assert [s.id for s in extra_shadows(root, task, INF)] == [0, 1, 2]
    assert (shadows[0].folder / MODEL_FILE).stat().st_mtime_ns == first
    grown = load_design(shadow_design_path(root, "purchase100", INF))
    assert np.array_equal(grown.keep[:2], design.keep)
    assert run(root, "--models", "4", "--scenarios", "inf", "--seed", "6") == 2


@pytest.mark.slow
def test_ray_local_trains_the_same_models_as_the_local_pool(tiny_copy, tmp_path: Path) -> None:
    """One Ray task per model on a real local Ray instance, against the spawn pool."""
    root = tiny_copy("purchase100")
    other = tmp_path / "pool_root"
    other.mkdir()
    for name in ("purchase100", "data"):
        (other / name).symlink_to(root / name)
    task = load_task(root, "purchase100")
    args = ("--models", "2", "--scenarios", "hi", "--device", "cpu")
    assert run(root, *args, "--ray", "local", "--workers", "2") == 0
    assert run(other, *args, "--workers", "2") == 0
    on_ray, in_pool = extra_shadows(root, task, HI), extra_shadows(other, task, HI)
    assert [s.id for s in on_ray] == [s.id for s in in_pool] == [0, 1]
    for a, b in zip(on_ray, in_pool, strict=True):
        assert np.array_equal(a.members, b.members)
        sa = torch.load(a.model_path, weights_only=True)
        sb = torch.load(b.model_path, weights_only=True)
        assert sorted(sa) == sorted(sb) and all(k.startswith("_module.") for k in sa)
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], atol=1e-5, rtol=0)


def no_model_folder(root: Path) -> bool:
    found = (root / "shadows").rglob("*")
    return not any(path.name.startswith(("model_", ".model_")) for path in found)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--models", "2", "--scenarios", "mid"), "unknown scenario 'mid'"),
        (("--models", "0"), "--models must be at least 1"),
        (("--models", "1", "--ray", "127.0.0.1:1"), "cannot reach the Ray cluster"),
    ],
)
def test_bad_input_is_one_line_and_writes_no_model(
    tiny_purchase: Path, tmp_path: Path, capsys, args: tuple[str, ...], message: str
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for name in ("purchase100", "data"):
        (root / name).symlink_to(tiny_purchase / name)
    assert run(root, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert no_model_folder(root)


def test_unreachable_epsilon_is_refused_before_training(tiny_copy, tmp_path, capsys) -> None:
    root = tiny_copy("purchase100")
    recipe = tmp_path / "recipe.json"
    # 12 Poisson steps an epoch (q = 1/12): the accountant gives up within seconds.
    settings = {"recipe": {"epochs": 3, "dp_batch_size": 75}, "dp_epsilon": {"lo": 0.001}}
    recipe.write_text(json.dumps(settings))
    assert run(root, "--models", "1", "--scenarios", "lo", "--recipe", str(recipe)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: purchase100_lo: epsilon 0.001 cannot be reached")
    assert no_model_folder(root)


def test_a_recipe_file_sets_the_clipping_once(tiny_purchase: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.json"
    task = load_task(tiny_purchase, "purchase100")
    recipe.write_text(json.dumps({"max_grad_norm": 1.5}))
    privacy = resolve_recipe(tiny_purchase, task, recipe).privacy
    assert privacy["hi"].max_grad_norm == privacy["lo"].max_grad_norm == 1.5
    assert privacy["inf"] is None
    recipe.write_text(json.dumps({"max_grad_norm": 1.5, "recipe": {"max_grad_norm": 2.0}}))
    with pytest.raises(ValueError, match="max_grad_norm 1.5 contradicts the recipe's 2.0"):
        resolve_recipe(tiny_purchase, task, recipe)
    recipe.write_text(json.dumps({"recipe": {"max_grad_norm": -1}}))
    with pytest.raises(ValueError, match="max_grad_norm of 'inf' must be a positive number"):
        resolve_recipe(tiny_purchase, task, recipe)


def test_full_disk_mid_write_leaves_no_partial_folder(tiny_copy, monkeypatch, capsys) -> None:
    root = tiny_copy("purchase100")

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(farm.torch, "save", disk_full)
    assert run(root, "--models", "1", "--scenarios", "inf") == 2
    assert "No space left on device" in capsys.readouterr().err
    assert no_model_folder(root)
    assert not list(shadows_dir(root, "purchase100", INF).glob(f"**/{MEMBERS_FILE}"))


def test_save_preds_takes_extra_shadows_and_run_lira_mia_chooses_them(tiny_copy) -> None:
    """Extra shadows become shadow rows (IN/OUT from ``members.npy``); ``--shadows`` picks."""
    import run_lira_mia
    import save_preds
    from mico.bundle.layout import preds_root, scores_path
    from mico.outputs.store import ScenarioScores

    root = tiny_copy("purchase100")
    assert run(root, "--models", "2", "--seed", "5") == 0
    assert save_preds.main(["--challenge", "purchase100", "--root", str(root), "-q"]) == 0
    task = load_task(root, "purchase100")
    scores = ScenarioScores.load(scores_path(preds_root(root, "purchase100"), INF))
    kinds = scores.kinds().tolist()
    assert kinds.count("extra") == 2
    assert kinds.count("train") == dict(task.models_per_phase)["train"]
    shadows = extra_shadows(root, task, INF)
    for shadow, row in zip(shadows, np.flatnonzero(scores.kinds() == "extra"), strict=True):
        assert np.array_equal(scores.shadow_in[row], np.isin(scores.points, shadow.members))

    base = ["--challenge", "purchase100", "--root", str(root), "-q"]
    dev = root / "purchase100" / INF / "dev"
    predictions = {}
    for choice in ("train", "extra", "all"):
        assert run_lira_mia.main([*base, "--global_variance", "--shadows", choice]) == 0
        predictions[choice] = sorted(p.read_text() for p in dev.glob("model_*/prediction.csv"))
    assert predictions["train"] != predictions["all"] != predictions["extra"]
    assert run_lira_mia.main([*base, "--global_variance"]) == 0  # default: all
    assert sorted(p.read_text() for p in dev.glob("model_*/prediction.csv")) == predictions["all"]
    assert run_lira_mia.main([*base, "--global_variance", "--shadows", "train", "all"]) == 2


def test_compare_shows_each_row_once_per_shadow_choice(tiny_copy, capsys, monkeypatch) -> None:
    """``--compare --shadows train all``: every row twice, the train-only one equal to a plain
    ``--compare --shadows train`` row; each ``scores.npz`` is read once for both choices."""
    import run_lira_mia
    import save_preds
    from mico.outputs.store import ScenarioScores

    root = tiny_copy("purchase100")
    assert run(root, "--models", "2", "--seed", "5") == 0
    base = ["--challenge", "purchase100", "--root", str(root), "-q", "--compare", *FAST_BOOT]
    assert save_preds.main(base[:5]) == 0
    capsys.readouterr()
    assert run_lira_mia.main([*base, "--shadows", "train"]) == 0
    alone = capsys.readouterr().out
    loads: list[Path] = []
    real_load = ScenarioScores.load.__func__  # type: ignore[attr-defined]

    def counted(cls: type[ScenarioScores], path: Path) -> ScenarioScores:
        loads.append(Path(path))
        return real_load(cls, path)

    monkeypatch.setattr(ScenarioScores, "load", classmethod(counted))
    assert run_lira_mia.main([*base, "--shadows", "train", "all"]) == 0
    both = capsys.readouterr().out
    task = load_task(root, "purchase100")
    assert sorted(loads) == sorted(
        root / "preds" / "purchase100" / scenario / "scores.npz" for scenario in task.scenarios
    )
    for label in ("loss", "lira offline prob gv", "best of all (CV)"):
        row = next(line for line in alone.splitlines() if line.startswith(f"{label} "))
        numbers = row[len(label) :].split()
        twin = next(line for line in both.splitlines() if line.startswith(f"{label} [train]"))
        assert twin[len(f"{label} [train]") :].split() == numbers
        assert any(line.startswith(f"{label} [all]") for line in both.splitlines())
