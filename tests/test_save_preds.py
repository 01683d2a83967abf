"""save_preds as plan / run / assemble: shards in separate processes, assembly refusals, caches
that heal, errors that name the model, logits, extra shadows, and the provenance record."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import save_preds
from mico.bundle import digests
from mico.bundle.layout import (
    MEMBERS_FILE,
    RECIPE_FILE,
    SCORES_FILE,
    SEED_FILES,
    model_dirs,
    shadows_dir,
)
from mico.bundle.splits import read_seed, split_indices
from mico.outputs.inference import true_label_margin
from mico.outputs.plan import EXTRA, made_for, plan_scenario
from mico.outputs.predict import PredictOptions, save_scenario
from mico.outputs.provenance import check_against_bundle, load_checked
from mico.outputs.store import ScenarioScores
from mico.tracks.registry import load_task
from mico.train.design import scenario_pool
from tests.conftest import TINY_POPULATION

REPO = Path(__file__).resolve().parents[1]
CHALLENGE = "purchase100"
POPULATION = ["--population", str(TINY_POPULATION[CHALLENGE])]


def _args(root: Path, *extra: str) -> list[str]:
    return ["--challenge", CHALLENGE, "--root", str(root), *POPULATION, *extra]


def _scores(root: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every scenario's ``scores.npz`` arrays (the provenance record names the root: left out)."""
    found = {}
    for path in sorted((root / "preds" / CHALLENGE).glob(f"*/{SCORES_FILE}")):
        with np.load(path) as data:
            found[path.parent.name] = {k: data[k] for k in data.files if k != "provenance"}
    return found


def _caches(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (root / "preds").rglob("models/*/*.npz")}


def _assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for scenario, arrays in want.items():
        assert got[scenario].keys() == arrays.keys(), scenario
        for key, value in arrays.items():
            if np.issubdtype(value.dtype, np.floating):
                # float32 reductions may differ in the last bit between processes (the BLAS
                # kernel depends on thread count and alignment): 1e-6 relative is float32's.
                np.testing.assert_allclose(got[scenario][key], value, rtol=1e-5, err_msg=scenario)
            else:
                assert np.array_equal(got[scenario][key], value), f"{scenario}: {key}"


@pytest.mark.slow
def test_shards_in_two_processes_then_a_plain_run_equal_an_unsharded_run(
    tiny_purchase, tiny_copy, capsys
):
    root = tiny_copy(CHALLENGE)
    shutil.rmtree(root / "preds")
    command = [sys.executable, str(REPO / "save_preds.py"), *_args(root, "-q")]
    first = subprocess.run([*command, "--shard", "1/2"], cwd=REPO, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    # Only shard 1 ran: assembling now is refused, naming the models of shard 2 and nothing else.
    capsys.readouterr()
    assert save_preds.main(_args(root, "--assemble")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "no outputs yet" in err
    assert "purchase100_inf train/model_1" in err and "purchase100_inf train/model_0," not in err
    assert not list((root / "preds").rglob(SCORES_FILE))
    second = subprocess.run([*command, "--shard", "2/2"], cwd=REPO, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    caches = _caches(root)
    assert len(caches) == 3 * 6 * 2  # 3 scenarios x 6 models x (points, population)
    assert save_preds.main(_args(root)) == 0
    log = capsys.readouterr().err
    assert log.count(": 6 models: 0 run, 6 from cache (0 records evaluated)") == 3
    assert _caches(root) == caches  # nothing rewritten
    _assert_same(_scores(root), _scores(tiny_purchase))


def test_bad_shard_values_are_refused(tmp_path, capsys):
    for value in ("0/2", "3/2", "x", "1/0"):
        with pytest.raises(SystemExit):
            save_preds.main(_args(tmp_path, "--shard", value))
        assert "K/N" in capsys.readouterr().err


def test_damaged_caches_and_scores_are_misses_that_heal(tiny_purchase, tiny_copy, capsys):
    root = tiny_copy(CHALLENGE)
    folder = root / "preds" / CHALLENGE / f"{CHALLENGE}_hi"
    zero = folder / "models" / "train" / "model_2.npz"
    cut = folder / "models" / "dev" / "model_4.npz"
    keyless = folder / "models" / "final" / "model_5.population.npz"
    zero.write_bytes(b"")
    cut.write_bytes(cut.read_bytes()[:300])
    np.savez(keyless, unrelated=np.zeros(3))
    scores = folder / SCORES_FILE
    scores.write_bytes(scores.read_bytes()[:1000])
    with pytest.raises(ValueError, match="unreadable .*rerun save_preds.py"):
        ScenarioScores.load(scores)
    capsys.readouterr()
    assert save_preds.main(_args(root)) == 0
    log = capsys.readouterr().err
    for path in (zero, cut, keyless):
        assert f"{path}: unreadable cache" in log
    assert f"{scores}: unreadable; rewritten" in log
    assert "purchase100_hi: 6 models: 3 run, 3 from cache" in log
    _assert_same(_scores(root), _scores(tiny_purchase))
    # A scores.npz without its arrays reads as damaged too, in one line.
    np.savez(scores, version=np.array(1))
    with pytest.raises(ValueError, match="unreadable .*'points'.*rerun save_preds.py"):
        ScenarioScores.load(scores)


def test_a_missing_seed_is_named_before_any_model_runs(tiny_copy, capsys):
    root = tiny_copy(CHALLENGE)
    shutil.rmtree(root / "preds")
    model = model_dirs(root / CHALLENGE / f"{CHALLENGE}_lo", "train")[1]
    (model / "seed_training").unlink()
    assert save_preds.main(_args(root)) == 2
    # The layout check lists it, then says what to do in one line.
    listed, line = capsys.readouterr().err.strip().splitlines()[-2:]
    assert listed.strip() == f"{model / 'seed_training'}: missing"
    assert line.startswith("error: ") and "re-download what is missing" in line
    assert not (root / "preds").exists()  # the inf and hi scenarios did not run either


def test_a_population_too_large_names_the_fewest_records_of_any_scenario(
    tiny_purchase, tmp_path, capsys
):
    """Scenarios have different numbers of non-challenge records: the error names each one the
    request exceeds and suggests the fewest, which then works for the whole bundle."""
    task = load_task(tiny_purchase, CHALLENGE)
    available = {}
    for scenario in task.scenarios:
        plan = plan_scenario(tiny_purchase, task, scenario)
        available[scenario] = task.dataset_len - len(plan.points)
    fewest = min(available.values())
    assert len(set(available.values())) > 1  # the case this test is about
    request = max(available.values()) + 1
    argv = ["--challenge", CHALLENGE, "--root", str(tiny_purchase), "--preds-dir", str(tmp_path)]
    assert save_preds.main([*argv, "--population", str(request)]) == 2
    listed = ", ".join(f"{count} in {name}" for name, count in available.items())
    assert capsys.readouterr().err.strip() == (
        f"error: --population {request} exceeds the non-challenge records of this bundle "
        f"({listed}): pass --population {fewest} or fewer"
    )
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("content", ["\u00b2\n".encode(), b"\xff\xfe12\n", b""])
def test_a_malformed_seed_is_named(tiny_copy, capsys, content):
    root = tiny_copy(CHALLENGE)
    seed = model_dirs(root / CHALLENGE / f"{CHALLENGE}_hi", "dev")[0] / "seed_challenge"
    seed.write_bytes(content)
    assert save_preds.main(_args(root)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {seed}: expected a non-negative int64 seed") and "\n" not in err


def test_a_model_with_nan_outputs_is_refused_by_name(tiny_copy, capsys):
    root = tiny_copy(CHALLENGE)
    model = model_dirs(root / CHALLENGE / f"{CHALLENGE}_inf", "dev")[0]
    state = torch.load(model / "model.pt", weights_only=True)
    first = next(iter(state))
    state[first] = torch.full_like(state[first], float("nan"))
    torch.save(state, model / "model.pt")
    assert save_preds.main(_args(root)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {model}: the model's outputs are NaN or infinite")
    assert "\n" not in err


def test_save_logits_stores_every_models_logits_and_keeps_the_margins(tiny_purchase, tiny_copy):
    root = tiny_copy(CHALLENGE)
    assert save_preds.main(_args(root, "-q", "--save-logits")) == 0
    plain = _scores(tiny_purchase)
    for scenario, arrays in _scores(root).items():
        s, p = arrays["shadow_margin"].shape
        logits = arrays["shadow_logits"]
        assert logits.shape == (s, p, 100) and logits.dtype == np.float32
        labels = torch.from_numpy(arrays["labels"])
        for row in range(s):
            margin = true_label_margin(torch.from_numpy(logits[row]), labels).numpy()
            np.testing.assert_allclose(margin, arrays["shadow_margin"][row], atol=1e-5)
        for phase in ("train", "dev", "final"):
            got = arrays[f"{phase}_logits"]
            assert got.shape == (*arrays[f"{phase}_points"].shape, 100)
            cols = arrays[f"{phase}_points"]
            for k in range(len(got)):
                margin = true_label_margin(torch.from_numpy(got[k]), labels[cols[k]]).numpy()
                np.testing.assert_allclose(margin, arrays[f"{phase}_margin"][k], atol=1e-5)
        for key, value in plain[scenario].items():  # the default outputs are unchanged
            assert np.array_equal(arrays[key], value), key


def test_provenance_refuses_a_changed_bundle(tiny_copy):
    root = tiny_copy(CHALLENGE)
    task = load_task(root, CHALLENGE)
    scenario = f"{CHALLENGE}_hi"
    path = root / "preds" / CHALLENGE / scenario / SCORES_FILE
    scores = load_checked(path, root, task, root / CHALLENGE / scenario)  # untouched: passes
    dev = model_dirs(root / CHALLENGE / scenario, "dev")[0]
    seed = dev / "seed_challenge"
    original = seed.read_text()
    seed.write_text(f"{read_seed(seed) + 1}\n")
    with pytest.raises(ValueError, match=r"dev/model_4 seeds or .*; rerun save_preds.py") as err:
        check_against_bundle(scores, root, task, scenario)
    assert "\n" not in str(err.value)
    seed.write_text(original)
    check_against_bundle(scores, root, task, scenario)
    final = model_dirs(root / CHALLENGE / scenario, "final")[0]
    shutil.rmtree(final)
    with pytest.raises(ValueError, match="final/model_5 is gone; rerun save_preds.py"):
        check_against_bundle(scores, root, task, scenario)
    scores.provenance = None
    with pytest.raises(ValueError, match="does not record what it was computed from"):
        check_against_bundle(scores, root, task, scenario)


def test_extra_shadows_join_as_shadow_rows_with_their_own_membership(tiny_copy):
    root = tiny_copy(CHALLENGE)
    task = load_task(root, CHALLENGE)
    scenario = root / CHALLENGE / f"{CHALLENGE}_inf"
    # An "extra" shadow that is a copy of train/model_0, with its membership as members.npy.
    source = model_dirs(scenario, "train")[0]
    seeds = [read_seed(source / name) for name in SEED_FILES]
    splits = split_indices(task.dataset_len, task.len_training, task.len_challenge, *seeds)
    extra = shadows_dir(root, CHALLENGE, scenario.name) / "model_0"
    extra.mkdir(parents=True)
    shutil.copy2(source / "model.pt", extra / "model.pt")
    np.save(extra / MEMBERS_FILE, np.flatnonzero(splits.training_mask()))
    options = PredictOptions(sources=("bundle", EXTRA))
    dataset = task.load_dataset(root / "data")
    record = made_for(CHALLENGE, scenario.name, scenario_pool(scenario, task), dataset.digest)
    (extra / RECIPE_FILE).write_text(json.dumps({"made_for": record}))
    out = root / "preds" / CHALLENGE / scenario.name
    scores, evaluated = save_scenario(scenario, out, task, dataset, options)
    assert evaluated == len(scores.points)  # only the new shadow ran
    assert scores.shadow_kind.tolist() == ["train"] * 4 + [EXTRA]
    assert scores.shadow_ids.tolist() == [0, 1, 2, 3, 0]
    assert np.array_equal(scores.shadow_margin[4], scores.shadow_margin[0])
    assert np.array_equal(scores.shadow_in[4], scores.shadow_in[0])
    assert scores.phases["train"].shadow.tolist() == [0, 1, 2, 3]
    check_against_bundle(scores, root, task, scenario.name)
    # Choosing shadows by kind: train alone is the bundle-only result, extra alone one row.
    train = scores.select_shadows(["train"])
    assert np.array_equal(train.shadow_margin, scores.shadow_margin[:4])
    assert train.phases["train"].shadow.tolist() == [0, 1, 2, 3]
    only = scores.select_shadows([EXTRA])
    assert only.shadow_ids.tolist() == [0] and only.shadow_kind.tolist() == [EXTRA]
    assert only.phases["train"].shadow.tolist() == [-1] * 4
    assert np.array_equal(only.phases["dev"].margin, scores.phases["dev"].margin)
    with pytest.raises(ValueError, match="no shadow models of kind nothing"):
        scores.select_shadows(["nothing"])
    (extra / MEMBERS_FILE).unlink()
    np.save(extra / MEMBERS_FILE, np.array([3, 1]))
    with pytest.raises(ValueError, match="extra/model_0 seeds or membership changed"):
        check_against_bundle(scores, root, task, scenario.name)
    with pytest.raises(ValueError, match=f"{MEMBERS_FILE}: expected sorted unique"):
        save_scenario(scenario, out, task, dataset, options)


def test_a_run_reads_each_seed_file_once_and_digests_each_weight_file_once(
    tiny_copy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning parses the seeds and provenance digests the same bytes; the weights' digest
    (one stat, a hash where the stamp is new) serves every cache key and the record."""
    root = tiny_copy(CHALLENGE)
    shutil.rmtree(root / "preds")  # a first run: every model runs, every weight file is hashed
    reads: Counter[str] = Counter()
    stats: Counter[str] = Counter()
    hashed: Counter[str] = Counter()
    read_bytes, stat, hash_file = Path.read_bytes, os.stat, digests.hash_file

    def counted_read(path: Path) -> bytes:
        reads[str(path)] += 1
        return read_bytes(path)

    def counted_stat(path, *args, **kwargs):
        stats[str(path)] += 1
        return stat(path, *args, **kwargs)

    def counted_hash(path: Path) -> str:
        hashed[str(path)] += 1
        return hash_file(path)

    monkeypatch.setattr(Path, "read_bytes", counted_read)
    monkeypatch.setattr(os, "stat", counted_stat)
    monkeypatch.setattr(digests, "hash_file", counted_hash)
    task = load_task(root, CHALLENGE)
    seeds = [
        str(folder / name)
        for scenario in task.scenarios
        for phase in ("train", "dev", "final")
        for folder in model_dirs(root / CHALLENGE / scenario, phase)
        for name in SEED_FILES
        if (folder / name).is_file()
    ]
    weights = [str(Path(s).parent / "model.pt") for s in seeds if s.endswith("seed_challenge")]
    for run in ("first", "rerun"):
        for counter in (reads, stats, hashed):
            counter.clear()
        assert save_preds.main(_args(root, "-q")) == 0
        assert {path: reads[path] for path in seeds} == dict.fromkeys(seeds, 1), run
        # One stat by the layout check, one for the digest (and one more after hashing, to
        # tell that the file did not change while it was read: the first run only).
        want = 3 if run == "first" else 2
        assert {path: stats[path] for path in weights} == dict.fromkeys(weights, want), run
        assert sum(hashed[path] for path in weights) == (len(weights) if run == "first" else 0)
    scenario = f"{CHALLENGE}_hi"
    path = root / "preds" / CHALLENGE / scenario / SCORES_FILE
    load_checked(path, root, task, root / CHALLENGE / scenario)  # the record matches the files
