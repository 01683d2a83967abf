"""Nothing wrong passes silently, round two (issue 22): one test per group, each covering the
class of its reproduction (another track, another file, another way to make the change).

Real files and the real scripts, on copies of the session's tiny demos.  Each test names its
group; the SST-2 cases (groups A and G) live in ``tests/test_sst2.py`` beside its demo.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import download_files
import run_lira_mia
import save_preds
import save_zip
import train_shadows
from mico.bundle import digests
from mico.bundle.fileio import atomic_write
from mico.bundle.splits import read_seed
from mico.outputs.predict import PredictOptions, dataset_loader, save_scenario
from mico.outputs.predict import predict as run_models
from mico.outputs.store import ScenarioScores
from mico.tracks.data import CIFAR10_FOLDER, TensorPairDataset
from mico.tracks.registry import get_task, load_task
from tests.conftest import TINY_POPULATION
from tests.test_reliability import error_line

NAME = "purchase100"


def args(root: Path, track: str = NAME, *extra: str) -> list[str]:
    return ["--challenge", track, "--root", str(root), "-q", *extra]


def predict(root: Path, track: str) -> tuple[dict[str, ScenarioScores], dict[str, int]]:
    """``save_preds.py``'s engine as the fixtures ran it: every scenario's ``scores.npz``, and
    how many models each scenario ran (not from their caches)."""
    options = PredictOptions(population=TINY_POPULATION[track])
    task = load_task(root, track)
    loader = dataset_loader(root / "data")
    results = run_models(root, task, loader, root / "preds" / track, options)
    ran = {r.plan.scenario: r.stats.models_run for r in results}
    return {r.plan.scenario: r.scores for r in results}, ran  # type: ignore[misc]


def same_outputs(a: dict[str, ScenarioScores], b: dict[str, ScenarioScores]) -> bool:
    """Every margin of every scenario equal (shadows, targets, population)."""
    assert a.keys() == b.keys()
    for name in a:
        x, y = a[name], b[name]
        arrays = [(x.shadow_margin, y.shadow_margin), (x.shadow_population, y.shadow_population)]
        arrays += [(x.phases[p].margin, y.phases[p].margin) for p in x.phases]
        if not all(np.array_equal(u, v) for u, v in arrays):
            return False
    return True


def replace_keeping_times(path: Path, data: bytes) -> None:
    """New content under the old size-independent time stamps, as ``cp -p`` or ``tar x``."""
    info = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


# --- A: per-model caches and scores.npz know the base data -------------------------------------


def _shuffle_rows(root: Path) -> None:
    text = root / "data" / NAME / "dataset_purchase"
    rows = text.read_bytes().splitlines(keepends=True)
    order = np.random.default_rng(0).permutation(len(rows))
    replace_keeping_times(text, b"".join(rows[i] for i in order))


def _swap_images(root: Path) -> None:
    batch = root / "data" / "cifar10" / CIFAR10_FOLDER / "data_batch_1"
    content = pickle.loads(batch.read_bytes(), encoding="bytes")
    data = content[b"data"]
    data[[0, 1]] = data[[1, 0]]  # two images change places, their labels stay
    replace_keeping_times(batch, pickle.dumps(content, protocol=2))


@pytest.mark.parametrize(("track", "change"), [(NAME, _shuffle_rows), ("cifar10", _swap_images)])
def test_a_caches_are_recomputed_when_the_base_data_changes(tiny_copy, track, change):
    """One scenario through save_preds' engine (``save_scenario``, as ``predict`` runs each)."""
    root = tiny_copy(track)
    task, scenario = load_task(root, track), root / track / f"{track}_hi"
    out = root / "preds" / track / scenario.name
    before = ScenarioScores.load(out / "scores.npz")
    options = PredictOptions(population=TINY_POPULATION[track])
    unchanged, evaluated = save_scenario(
        scenario, out, task, task.load_dataset(root / "data"), options
    )
    assert evaluated == 0 and same_outputs({"s": unchanged}, {"s": before})  # caches hold
    change(root)  # same size and time stamps
    dataset = task.load_dataset(root / "data")
    after, evaluated = save_scenario(scenario, out, task, dataset, options)
    shadows = len(before.shadow_ids)  # every model runs again: shadows on every point, the dev
    every = (
        shadows * len(before.points) + 2 * task.num_challenges
    )  # and final targets on theirs, and all on
    assert evaluated == every + (shadows + 2) * len(before.population)  # the population
    assert not same_outputs({"s": after}, {"s": before})
    assert after.provenance["data"] == dataset.digest != before.provenance["data"]


# --- B: a model replaced by one of the same size and time stamp --------------------------------


def test_b_a_replaced_model_file_is_noticed_whatever_its_stamp(tiny_copy, tmp_path, capsys):
    root = tiny_copy(NAME)
    scenario = root / NAME / f"{NAME}_inf"
    before, _ = predict(root, NAME)
    # The reproduction (a dev target: cp, touch -r, mv), and a train shadow replaced by
    # the copy of another's file with its time stamps kept (cp -p).
    target, shadow = scenario / "dev" / "model_4" / "model.pt", scenario / "train" / "model_2"
    copy = tmp_path / "m.pt"
    shutil.copyfile(scenario / "train" / "model_1" / "model.pt", copy)
    stamp = target.stat()
    os.utime(copy, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    os.replace(copy, target)
    replace_keeping_times(shadow / "model.pt", (scenario / "train/model_3/model.pt").read_bytes())
    # The attack refuses the stale outputs, naming both models ...
    assert run_lira_mia.main(args(root, NAME, "--no-write")) == 2
    line = error_line(capsys)
    assert "dev/model_4 model file changed" in line and "train/model_2 model file" in line
    # ... and save_preds.py runs those two models again, and only them.
    after, ran = predict(root, NAME)
    assert ran == {f"{NAME}_inf": 2, f"{NAME}_hi": 0, f"{NAME}_lo": 0}
    assert not same_outputs(after, before)
    assert run_lira_mia.main(args(root, NAME, "--no-write")) == 0


def test_b_each_weight_file_is_hashed_once_then_remembered(tiny_copy, monkeypatch):
    root = tiny_copy(NAME)
    hashed: list[Path] = []
    real = digests.hash_file

    def counting(path: Path) -> str:
        hashed.append(Path(path))
        return real(path)

    monkeypatch.setattr(digests, "hash_file", counting)
    monkeypatch.setattr(digests, "_MEMO", {})
    predict(root, NAME)  # a copied bundle: new inodes, so every weight file is hashed, once
    models = sorted(root.glob(f"{NAME}/*/*/model_*/model.pt"))
    assert sorted(hashed) == models
    store = json.loads((root / "preds" / NAME / "digests.json").read_text())
    assert {str(path) for path in models} <= set(store["files"])
    hashed.clear()
    monkeypatch.setattr(digests, "_MEMO", {})  # a new run: only the store remembers
    predict(root, NAME)
    assert run_lira_mia.main(args(root, NAME, "--no-write")) == 0
    assert hashed == []
    touched = models[0]
    os.utime(touched)  # same bytes, new stamp: hashed again, and nothing recomputed
    _, ran = predict(root, NAME)
    assert hashed == [touched] and set(ran.values()) == {0}


def test_b_a_store_remembers_digests_this_run_already_knew(tmp_path, monkeypatch):
    """A digest computed for one record (or none) still reaches a store asked later in the
    same run, so the next run finds it there."""
    monkeypatch.setattr(digests, "_MEMO", {})
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights")
    first = digests.file_digest(weights)  # memo only
    store = digests.DigestStore(tmp_path / "digests.json")
    assert digests.file_digest(weights, store) == first
    store.save()
    again = digests.DigestStore(tmp_path / "digests.json")
    assert again.lookup(str(weights.resolve()), digests.stamp(weights)) == first


# --- C: one layout check, run by every script before any work ----------------------------------

SCRIPTS = {
    "save_preds": save_preds.main,
    "run_lira_mia": run_lira_mia.main,
    "save_zip": save_zip.main,
    "train_shadows": train_shadows.main,
}


def _extra_model(bundle: Path) -> str:
    shutil.copytree(
        bundle / f"{NAME}_inf" / "train" / "model_3", bundle / f"{NAME}_inf/train/model_999"
    )
    return f"{NAME}_inf/train: unexpected model_999"


def _no_final(bundle: Path) -> str:
    shutil.rmtree(bundle / f"{NAME}_hi" / "final")
    return f"{NAME}_hi/final: missing model_5"


def _no_scenario(bundle: Path) -> str:
    shutil.rmtree(bundle / f"{NAME}_lo")
    return f"{NAME}_lo: scenario folder missing"


def _leading_zero(bundle: Path) -> str:
    (bundle / f"{NAME}_inf" / "dev" / "model_4").rename(bundle / f"{NAME}_inf" / "dev" / "model_04")
    return "not model_N names: model_04"


def _gap(bundle: Path) -> str:
    final = bundle / f"{NAME}_lo" / "final"
    (final / "model_5").rename(final / "model_6")
    return f"{NAME}_lo/final: unexpected model_6"


def _file_for_folder(bundle: Path) -> str:
    folder = bundle / f"{NAME}_hi" / "train" / "model_2"
    shutil.rmtree(folder)
    folder.write_text("not a model\n")
    return f"{NAME}_hi/train/model_2: a file where a model folder belongs"


def _seed_folder(bundle: Path) -> str:
    seed = bundle / f"{NAME}_inf" / "final" / "model_5" / "seed_challenge"
    seed.unlink()
    seed.mkdir()
    return "final/model_5/seed_challenge: a folder, not a file"


def _no_weights(bundle: Path) -> str:
    (bundle / f"{NAME}_hi" / "dev" / "model_4" / "model.pt").unlink()
    return "dev/model_4/model.pt: missing"


def _len_challenge(bundle: Path) -> str:
    config = json.loads((bundle / "bundle.json").read_text())
    (bundle / "bundle.json").write_text(json.dumps({**config, "len_challenge": 50}))
    return "len_challenge=50 means 100 challenge points"


@pytest.mark.parametrize(
    "damage",
    [
        _extra_model,
        _no_final,
        _no_scenario,
        _leading_zero,
        _gap,
        _file_for_folder,
        _seed_folder,
        _no_weights,
        _len_challenge,
    ],
)
def test_c_every_script_checks_the_layout_before_any_work(tiny_copy, capsys, damage):
    root = tiny_copy(NAME)
    expected = damage(root / NAME)
    files_before = sorted(p for p in root.rglob("*"))
    for name, main in SCRIPTS.items():
        if damage is _no_weights and name == "save_zip":
            continue  # a submission needs the predictions, not the weights
        extra = ("--models", "1") if name == "train_shadows" else ()
        assert main(args(root, NAME, *extra)) == 2, name
        err = capsys.readouterr().err
        assert "Traceback" not in err and expected in err, (name, err)
        assert err.strip().splitlines()[-1].startswith("error: "), name
    assert sorted(p for p in root.rglob("*")) == files_before  # nothing written anywhere


# --- D: a train model's solution.csv agrees with its seeds --------------------------------------


def _swap_membership(folder: Path) -> None:
    other = folder.parent / "model_1"
    mine = (folder / "seed_membership").read_bytes()
    (folder / "seed_membership").write_bytes((other / "seed_membership").read_bytes())
    (other / "seed_membership").write_bytes(mine)


def _complement(folder: Path) -> None:
    values = (folder / "solution.csv").read_text().strip().split(",")
    (folder / "solution.csv").write_text(",".join(str(1 - int(v)) for v in values) + "\r\n")


def _one_flipped_pair(folder: Path) -> None:
    values = (folder / "solution.csv").read_text().strip().split(",")
    first_one, first_zero = values.index("1"), values.index("0")
    values[first_one], values[first_zero] = "0", "1"  # still 100 members
    (folder / "solution.csv").write_text(",".join(values) + "\n")


def _malformed(folder: Path) -> None:
    (folder / "solution.csv").write_text("0,1,2\n")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_swap_membership, "disagrees with the membership its seed files give on"),
        (_complement, "on 200 of 200 points"),
        (_one_flipped_pair, "on 2 of 200 points"),
        (_malformed, "expected 200 comma-separated values, got 3"),
    ],
)
def test_d_train_solutions_must_equal_the_membership_of_their_seeds(
    tiny_copy, capsys, change, expected
):
    root = tiny_copy(NAME)
    assert run_lira_mia.main(args(root, NAME, "--no-write")) == 0
    folder = root / NAME / f"{NAME}_lo" / "train" / "model_0"
    change(folder)
    # The attack refuses the outputs computed before the change (a malformed file: the layout
    # check lists it first) ...
    assert run_lira_mia.main(args(root, NAME, "--no-write")) == 2
    err = capsys.readouterr().err
    found = "train/model_0 seeds or membership changed" in err
    assert found or (change is _malformed and expected in err), err
    # ... and save_preds.py names the model and stops.
    assert save_preds.main(args(root, NAME)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(folder) in err and expected in err


# --- F: no predictions.json, no submission ------------------------------------------------------


def test_f_save_zip_needs_the_manifest_or_force(tiny_copy, tmp_path, capsys):
    root = tiny_copy(NAME)
    # The case: two configurations mixed, then the manifest deleted.
    assert run_lira_mia.main(args(root, NAME, "--global_variance")) == 0
    first = sorted(root.glob(f"{NAME}/*/dev/*/prediction.csv"))[0]
    kept = first.read_bytes()
    assert run_lira_mia.main(args(root, NAME, "--attack", "loss")) == 0
    first.write_bytes(kept)
    manifest = root / NAME / "predictions.json"
    record = json.loads(manifest.read_text())
    manifest.unlink()
    out = tmp_path / "out.zip"
    assert save_zip.main(args(root, NAME, "--output", str(out))) == 2
    err = capsys.readouterr().err
    assert f"{manifest} is missing" in err and "rerun run_lira_mia.py" in err
    assert "--force" in err and "Traceback" not in err and not out.exists()
    assert save_zip.main(args(root, NAME, "--output", str(out), "--force")) == 0
    # A manifest of another format version is refused, saying how to rebuild it.
    manifest.write_text(json.dumps({**record, "version": 0}))
    out.unlink()
    assert save_zip.main(args(root, NAME, "--output", str(out))) == 2
    assert "format version 0" in capsys.readouterr().err and not out.exists()


# --- E: extra shadows record the bundle and data they were made for ------------------------------


def test_e_extra_shadows_for_another_bundle_or_data_are_refused(tiny_copy, capsys):
    root = tiny_copy(NAME)
    assert train_shadows.main(args(root, NAME, "--models", "2", "--scenarios", "inf")) == 0
    shadow = root / "shadows" / NAME / f"{NAME}_inf" / "model_0"
    assert save_preds.main(args(root, NAME)) == 0
    text = root / "data" / NAME / "dataset_purchase"
    original = text.read_bytes()
    # Other base data (the issue rebuilt the demo with another --seed): refused by save_preds.py,
    # and train_shadows.py will not grow a design made for the old data.
    _shuffle_rows(root)
    assert save_preds.main(args(root, NAME)) == 2
    line = error_line(capsys)
    assert f"{shadow}: this extra shadow was made for other base data" in line
    assert train_shadows.main(args(root, NAME, "--models", "3", "--scenarios", "inf")) == 2
    assert "made for other base data" in error_line(capsys)
    replace_keeping_times(text, original)
    assert save_preds.main(args(root, NAME)) == 0
    # Another bundle: a dev model's challenge points are not those the design pooled.
    seed = root / NAME / f"{NAME}_inf" / "dev" / "model_4" / "seed_challenge"
    seed.write_text(f"{int(seed.read_text()) + 1}\n")
    assert save_preds.main(args(root, NAME)) == 2
    assert "made for another bundle (other challenge points)" in error_line(capsys)
    # A shadow that records nothing (an older train_shadows.py) cannot be checked.
    recipe = json.loads((shadow / "recipe.json").read_text())
    del recipe["made_for"]
    (shadow / "recipe.json").write_text(json.dumps(recipe))
    assert save_preds.main(args(root, NAME)) == 2
    assert "records no bundle and data this shadow was made for" in error_line(capsys)


# --- K: CIFAR-10 labels and pixels validated at load ---------------------------------------------


def _labels(value: object):
    def change(content: dict) -> None:
        # Classes 0 and 9 present whatever the batch held, so the range the error names is known.
        content[b"labels"][4:7] = [0, value, 9]

    return change


def _pixels(content: dict) -> None:
    content[b"data"] = np.linspace(0.3, 433.8, content[b"data"].size).reshape(-1, 3072)


def _big_pixels(content: dict) -> None:
    content[b"data"] = content[b"data"].astype(np.int64) + 200


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_labels(12), "labels run from 0 to 12, expected 0..9"),
        (_labels(-1), "labels run from -1 to 9, expected 0..9"),
        (_labels(3.7), "labels are float64, expected integers in 0..9"),
        (_pixels, "pixels are float64, expected integers in 0..255"),
        (_big_pixels, "pixels run from 200 to 455, expected 0..255"),
    ],
)
def test_k_cifar_labels_and_pixels_are_checked_at_load(tiny_copy, capsys, change, expected):
    root = tiny_copy("cifar10")
    batch = root / "data" / "cifar10" / CIFAR10_FOLDER / "test_batch"
    content = pickle.loads(batch.read_bytes(), encoding="bytes")
    change(content)
    batch.write_bytes(pickle.dumps(content, protocol=2))
    assert save_preds.main(args(root, "cifar10")) == 2
    assert error_line(capsys) == f"error: {batch}: {expected}; re-download it"


def test_k_every_track_s_labels_are_checked(tmp_path):
    """Behind each loader's own checks, ``Task.load_dataset`` refuses labels outside the
    track's classes, whatever loader returned them."""
    task = dataclasses.replace(
        get_task(NAME).replace(dataset_len=3, len_training=2, len_challenge=1),
        loader=lambda folder: TensorPairDataset(torch.zeros(3, 600), torch.tensor([0, 100, 5])),
    )
    with pytest.raises(ValueError, match=r"labels outside 0\.\.99 \(from 0 to 100\)"):
        task.load_dataset(tmp_path)


# --- H: --truth must be this bundle's ground truth --------------------------------------------


def _members(reference: Path) -> Path:
    solution = reference / f"{NAME}_lo" / "final" / "model_5" / "solution.csv"
    solution.write_text(",".join(["1"] * 150 + ["0"] * 50) + "\r\n")
    return solution


def _other_bundle(reference: Path) -> Path:
    """Another bundle's truth: two scenarios' dev folders trade places (other seeds)."""
    inf, hi = (reference / f"{NAME}_{s}" / "dev" / "model_4" for s in ("inf", "hi"))
    inf.rename(inf.with_name("swap"))
    hi.rename(inf)
    inf.with_name("swap").rename(hi)
    return inf


def _other_solution(reference: Path) -> Path:
    """Only solution.csv is another model's: the seeds still match the bundle's."""
    inf, hi = (
        reference / f"{NAME}_{s}" / "final" / "model_5" / "solution.csv" for s in ("inf", "hi")
    )
    data = inf.read_bytes()
    inf.write_bytes(hi.read_bytes())
    hi.write_bytes(data)
    return inf.parent


def _no_seed(reference: Path) -> Path:
    seed = reference / f"{NAME}_hi" / "dev" / "model_4" / "seed_challenge"
    seed.unlink()
    return seed


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_members, "150 of 200 values are 1, a MICO solution has exactly 100 members"),
        (_other_bundle, "its seed_challenge is not the one of"),
        (_other_solution, "disagrees with the membership its seed files give"),
        (_no_seed, "missing; --truth needs each model's seed_challenge"),
    ],
)
def test_h_truth_is_checked_against_the_bundle(tiny_copy, capsys, change, expected):
    root = tiny_copy(NAME)
    argv = args(root, NAME, "--no-write", "--truth", str(root / "reference"))
    assert run_lira_mia.main(argv) == 0
    where = change(root / "reference" / NAME)
    assert run_lira_mia.main(argv) == 2
    line = error_line(capsys)
    assert str(where) in line and expected in line
    assert run_lira_mia.main([*argv, "--compare"]) == 2  # the comparison reads it too
    assert expected in error_line(capsys)


# --- L: every output path is checked before the first write ---------------------------------------


def predictions_of(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.glob(f"{NAME}/*/*/*/prediction.csv"))}


def test_l_bad_output_paths_are_refused_before_the_first_write(tiny_copy, tmp_path, capsys):
    root = tiny_copy(NAME)
    assert run_lira_mia.main(args(root, NAME, "--global_variance")) == 0
    before = predictions_of(root)
    manifest = (root / NAME / "predictions.json").read_bytes()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    # The issue's --plot into an existing folder, a plot under a file, and with --compare.
    for plot, expected in [
        (tmp_path, f"{tmp_path} is a folder, not a file"),
        (a_file / "roc.png", f"{a_file} is a file, not a folder"),
    ]:
        for extra in (("--attack", "loss"), ("--compare",)):
            argv = args(root, NAME, "--plot", str(plot), *extra)
            assert run_lira_mia.main(argv) == 2
            assert expected in error_line(capsys)
    assert predictions_of(root) == before
    assert (root / NAME / "predictions.json").read_bytes() == manifest
    # The other scripts' outputs: a zip, the preds folder, the shadows and the demo folders.
    out = ["--output", str(tmp_path)]
    assert save_zip.main(args(root, NAME, *out)) == 2
    assert f"{tmp_path} is a folder, not a file" in error_line(capsys)
    assert save_preds.main(args(root, NAME, "--preds-dir", str(a_file))) == 2
    assert f"{a_file} is a file, not a folder" in error_line(capsys)
    (root / "shadows").write_text("not a folder")
    assert train_shadows.main(args(root, NAME, "--models", "1")) == 2
    assert f"{root / 'shadows'} is a file, not a folder" in error_line(capsys)
    demo = ["--demo", "tiny", "--reference-dir", str(a_file / "reference")]
    assert download_files.main(args(tmp_path / "new", NAME, *demo)) == 2
    assert f"{a_file} is a file, not a folder" in error_line(capsys)
    assert not (tmp_path / "new").exists()


# --- N: clear messages --------------------------------------------------------------------------


def test_n_an_unwritable_output_names_the_users_path(tiny_copy, capsys):
    root = tiny_copy(NAME)
    assert run_lira_mia.main(args(root, NAME, "--attack", "loss")) == 0
    for target in (Path("/proc/x.zip"), Path("/proc/sub/x.zip")):
        assert save_zip.main(args(root, NAME, "--output", str(target))) == 2
        line = error_line(capsys)
        assert line.startswith(f"error: {target}: cannot write into /proc (")
        assert ".tmp" not in line and "choose another folder" in line
    # Behind the early check, the writer itself names the user's path too.
    refused = pytest.raises(OSError, match=r"^/proc/y\.zip: cannot write into /proc \(")
    with refused as caught, atomic_write("/proc/y.zip") as handle:
        handle.write(b"x")
    assert ".tmp" not in str(caught.value)


def test_n_a_seed_that_is_a_folder_gets_advice(tmp_path):
    (tmp_path / "seed_challenge").mkdir()
    with pytest.raises(ValueError, match="a folder where the seed file belongs; restore"):
        read_seed(tmp_path / "seed_challenge")


# --- M: contradictory flags refused in one line ---------------------------------------------------


@pytest.mark.parametrize(
    ("script", "flags", "expected"),
    [
        (download_files.main, ["--demo", "tiny", "--dry-run"], "--dry-run: download flags"),
        (download_files.main, ["--demo", "--url", "http://127.0.0.1:9/b.zip"], "--url: download"),
        (download_files.main, ["--demo", "--jobs", "2", "--skip-base"], "--skip-base, --jobs"),
        (download_files.main, ["--seed", "3", "--epochs", "2"], "--seed, --epochs: --demo flags"),
        (run_lira_mia.main, ["--original", "--shadows", "extra"], "drop --shadows"),
        (run_lira_mia.main, ["--original", "--shadows", "all"], "drop --shadows"),
        (run_lira_mia.main, ["--workers", "2", "--ray", "auto"], "--workers, --ray apply to"),
        (save_preds.main, ["--population-seed", "4"], "--population-seed chooses"),
    ],
    ids=lambda value: (
        value.__module__ if callable(value) else " ".join(value) if isinstance(value, list) else ""
    ),
)
def test_m_contradictory_flags_are_refused(tmp_path, capsys, script, flags, expected):
    assert script(args(tmp_path / "root", NAME, *flags)) == 2
    assert expected in error_line(capsys)
    assert not (tmp_path / "root").exists()  # refused before anything was made
