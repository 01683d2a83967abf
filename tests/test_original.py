"""``--original`` against an independent re-implementation of the published ``run_lira_mia.py``.

The reference below follows the published script's structure: Python lists of ``Subset``
indices, a loop over each target's challenge points, ``cp not in val`` membership tests, and
scipy on per-point arrays. It shares no code with :mod:`mico.attacks.original`.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.special
import scipy.stats
from scipy.stats import rankdata

import run_lira_mia
import save_preds
from mico.attacks.lira import TRANSFORMS, LiraParams
from mico.attacks.original import (
    OriginalInputs,
    check_original_params,
    original_lists,
    original_predictions,
    original_score,
)
from mico.bundle.layout import model_cache_path, model_dir
from mico.bundle.records import read_prediction, read_seeds
from mico.compat import ChallengeDataset
from mico.outputs.store import ScenarioScores
from mico.tracks.registry import get_task, load_task

# --- the reference: the published script's loop --------------------------------------------


def ref_score(logits, label, transform):
    """One model's score on one point, as the published script computes it."""
    if transform == "stable_logit":
        z = logits - np.max(logits, keepdims=True)
        p = np.array(np.exp(z), dtype=np.float64)
        p = p / np.sum(p, keepdims=True)
        true = p[label]
        wrong = np.sum(p, axis=-1) - true
        return np.log(true + 1e-45) - np.log(wrong + 1e-45)
    p = scipy.special.softmax(logits)[label]
    if transform == "logit":
        return np.log(p / (1 - p + 10e-30))
    return p


def ref_original(train_sets, shadow_logits, labels, points, targets, transform, gv, online):
    """``train_sets``: {model: list of Subset indices}; ``shadow_logits[model][p]``: logits on
    point column p; ``targets``: [(columns [K], own logits [K, C])]. Returns the raw outputs
    (likelihood ratios online) per target, NaN where the original would crash."""
    out = []
    for cols, own in targets:
        scores, means, predicted = [], [], []
        scores_in, means_in, predicted_in = [], [], []
        pr = []
        for i, col in enumerate(cols):
            cp = int(points[col])
            models_out = [m for m, val in train_sets.items() if cp not in val]
            if not models_out:
                pr.append(np.nan)
                continue
            preds_out = [
                ref_score(shadow_logits[m][col], labels[col], transform) for m in models_out
            ]
            preds_out = np.array(preds_out) if transform == "stable_logit" else preds_out
            mean_out = np.mean(preds_out, axis=-1)
            std_out = np.std(preds_out)
            score = ref_score(own[i], labels[col], transform)
            if online:
                models_in = [m for m, val in train_sets.items() if cp in val]
                if not models_in:
                    mean_in, std_in, preds_in = mean_out, std_out, []
                else:
                    preds_in = [
                        ref_score(shadow_logits[m][col], labels[col], transform) for m in models_in
                    ]
                    mean_in = np.mean(preds_in, axis=-1)
                    std_in = np.std(preds_in)
            if gv:
                scores.append(score)
                means.append(mean_out)
                predicted.extend(preds_out)
                if online:
                    scores_in.append(score)
                    means_in.append(mean_in)
                    predicted_in.extend(preds_in)
                pr.append(None)
            elif online:
                pdf = scipy.stats.norm.pdf
                pr.append(
                    pdf(score, mean_in, std_in + 1e-30) / pdf(score, mean_out, std_out + 1e-30)
                )
            else:
                pr.append(scipy.stats.norm.cdf(score, mean_out, std_out + 1e-30))
        if gv and scores:
            if online:
                pdf = scipy.stats.norm.pdf
                values = pdf(scores_in, means_in, np.std(predicted_in) + 1e-30) / pdf(
                    scores, means, np.std(predicted) + 1e-30
                )
            else:
                values = scipy.stats.norm.cdf(scores, means, np.std(predicted) + 1e-30)
            it = iter(values)
            pr = [next(it) if v is None else v for v in pr]
        out.append(np.array(pr, dtype=np.float64))
    return np.array(out)


# --- random small scenarios ----------------------------------------------------------------


def random_case(seed, n_shadows=6, n_points=9, n_classes=5, k=4, spread=3.0):
    """Random float32 logits, Subset-index lists, train targets (= shadows) and dev targets."""
    rng = np.random.default_rng(seed)
    points = np.sort(rng.choice(40, n_points, replace=False)).astype(np.int64)
    labels = rng.integers(0, n_classes, n_points)
    logits = (spread * rng.normal(size=(n_shadows, n_points, n_classes))).astype(np.float32)
    lists = rng.random((n_shadows, 40)) < 0.5
    lists[:, points[0]] = True  # a point with no OUT model: the original crashes there
    train_cols = np.array([rng.choice(n_points, k, replace=False) for _ in range(n_shadows)])
    dev_cols = np.array([rng.choice(n_points, k, replace=False) for _ in range(3)])
    dev_cols[0] = np.r_[0, rng.choice(np.arange(1, n_points), k - 1, replace=False)]
    train_cols[0] = np.r_[0, rng.choice(np.arange(1, n_points), k - 1, replace=False)]
    dev_logits = (spread * rng.normal(size=(3, k, n_classes))).astype(np.float32)
    return points, labels, logits, lists, train_cols, dev_cols, dev_logits


def ours(case, params):
    points, labels, logits, lists, train_cols, dev_cols, dev_logits = case
    n_shadows = len(logits)
    shadow_score = original_score(
        logits, np.broadcast_to(labels, logits.shape[:2]), params.transform
    )
    phases = {
        "train": _phase(np.arange(n_shadows), train_cols, np.arange(n_shadows)),
        "dev": _phase(np.arange(3), dev_cols, np.full(3, -1)),
    }
    scores = ScenarioScores(
        points=points,
        labels=labels,
        shadow_ids=np.arange(n_shadows),
        shadow_margin=np.zeros(logits.shape[:2]),
        shadow_in=np.zeros(logits.shape[:2], dtype=bool),
        phases=phases,
    )
    target = {
        "train": shadow_score[np.arange(n_shadows)[:, None], train_cols],
        "dev": original_score(dev_logits, labels[dev_cols], params.transform),
    }
    return original_predictions(OriginalInputs(scores, shadow_score, target, lists), params)


def _phase(ids, cols, shadow):
    from mico.outputs.store import PhaseScores

    return PhaseScores(ids, cols, np.zeros(cols.shape), shadow)


def reference(case, params):
    points, labels, logits, lists, train_cols, dev_cols, dev_logits = case
    train_sets = {m: [int(v) for v in np.flatnonzero(lists[m])] for m in range(len(logits))}
    flags = (params.transform, params.variance == "pooled", params.online)
    train = [(cols, logits[t][cols]) for t, cols in enumerate(train_cols)]
    dev = list(zip(dev_cols, dev_logits, strict=True))
    return {
        "train": ref_original(train_sets, logits, labels, points, train, *flags),
        "dev": ref_original(train_sets, logits, labels, points, dev, *flags),
    }


OFFLINE = [
    LiraParams(t, v, False) for t, v in itertools.product(TRANSFORMS, ("per-point", "pooled"))
]


@pytest.mark.parametrize("params", OFFLINE, ids=lambda p: f"{p.transform}-{p.variance}")
@pytest.mark.parametrize("seed", range(4))
def test_offline_equals_the_published_loop(params, seed):
    case = random_case(seed, spread=3.0 if seed % 2 else 12.0)
    got, want = ours(case, params), reference(case, params)
    for phase in ("train", "dev"):
        crashed = np.isnan(want[phase])
        assert crashed.any()  # the no-OUT point is covered, with its documented fallback
        np.testing.assert_array_equal(got[phase][crashed], 0.5)
        np.testing.assert_allclose(got[phase][~crashed], want[phase][~crashed], rtol=0, atol=1e-6)


@pytest.mark.parametrize("variance", ["per-point", "pooled"])
@pytest.mark.parametrize("seed", range(4))
def test_online_keeps_the_published_order(variance, seed):
    case = random_case(seed, spread=1.0)
    params = LiraParams("prob", variance, True)
    got, want = ours(case, params), reference(case, params)
    for phase in ("train", "dev"):
        ratio, conf = want[phase], got[phase]
        ok = ~np.isnan(ratio)
        assert np.all((conf >= 0) & (conf <= 1))
        finite = ok & np.isfinite(ratio)
        np.testing.assert_allclose(conf[finite], ratio[finite] / (1 + ratio[finite]), rtol=1e-9)
        np.testing.assert_array_equal(conf[ok & ~finite], 1.0)  # r = inf
        # The original's order: ties only where r/(1+r) rounds to 1.0 (r > ~1e16).
        order = np.argsort(ratio[ok], kind="stable")
        assert np.all(np.diff(conf[ok][order]) >= 0)
        resolved = ratio[ok] < 1e15
        np.testing.assert_array_equal(rankdata(conf[ok][resolved]), rankdata(ratio[ok][resolved]))


def test_logit_scaling_saturates_at_66_77():
    """Float32 p rounds to 1.0f from a margin of about 16.6; then log(1 / 1e-29) = 66.77."""
    logits = np.array([[20.0, 0.0], [16.0, 0.0], [10.0, 0.0]], dtype=np.float32)
    got = original_score(logits, np.zeros(3, dtype=np.int64), "logit")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got[0], np.log(1e29), rtol=1e-6)
    assert 15.0 < got[1] < 17.0 and abs(got[2] - 10.0) < 1e-3


def test_lists_are_subset_indices_of_mico_challenge_dataset():
    """The OUT lists are ``member.indices + training.indices`` of MICO's ChallengeDataset."""
    task = get_task("purchase100").replace(dataset_len=3000, len_training=1000, len_challenge=10)
    seeds = [
        {"seed_challenge": 11, "seed_training": 5 + s, "seed_membership": 9 + s} for s in range(3)
    ]
    lists = original_lists(task, seeds, len_training=1000)
    dataset = list(range(task.dataset_len))
    for row, seed in enumerate(seeds):
        mico = ChallengeDataset(
            dataset,
            1000,
            10,
            seed["seed_challenge"],
            seed["seed_training"],
            seed["seed_membership"],
        )
        want = set(list(mico.member.indices) + list(mico.training.indices))
        assert set(np.flatnonzero(lists[row]).tolist()) == want


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (LiraParams("logit", "per-point", True), "NotImplementedError"),
        (LiraParams("prob", "pooled-within", False), "--variance pooled-within"),
    ],
)
def test_refuses_what_the_original_did_not_run(params, message):
    with pytest.raises(ValueError, match=message):
        check_original_params(params)


# --- end to end on the tiny demo ----------------------------------------------------------

CHALLENGE = "purchase100"


@pytest.fixture(scope="module")
def logits_root(tiny_purchase, tmp_path_factory) -> Path:
    """A copy of the tiny demo whose preds keep the logits (``save_preds.py --save-logits``)."""
    root = Path(shutil.copytree(tiny_purchase, tmp_path_factory.mktemp("orig") / "root"))
    shutil.rmtree(root / "preds")
    args = ["--challenge", CHALLENGE, "--root", str(root), "-q", "--save-logits"]
    assert save_preds.main(args) == 0
    return root


def test_cli_original_writes_the_published_predictions(logits_root, capsys):
    root = logits_root
    args = ["--challenge", CHALLENGE, "--root", str(root), "-q", "--original", "--global_variance"]
    assert run_lira_mia.main(args) == 0
    out = capsys.readouterr()
    assert (
        "as the published" in out.out and "len_training" in out.err
    )  # bundle.json sets it: said so
    task = load_task(root, CHALLENGE)
    scenario = task.scenarios[0]
    preds = root / "preds" / CHALLENGE / scenario
    scores = ScenarioScores.load(preds / "scores.npz")
    logits = {
        int(i): np.load(model_cache_path(preds, "train", int(i)))["logits"]
        for i in scores.shadow_ids
    }
    train_sets = {}
    for i in scores.shadow_ids:
        seeds = read_seeds(model_dir(root, CHALLENGE, scenario, "train", int(i)))
        mico = ChallengeDataset(
            list(range(task.dataset_len)),
            task.len_training,
            task.len_challenge,
            seeds["seed_challenge"],
            seeds["seed_training"],
            seeds["seed_membership"],
        )
        train_sets[int(i)] = list(mico.member.indices) + list(mico.training.indices)
    dev = scores.phases["dev"]
    targets = [
        (cols, np.load(model_cache_path(preds, "dev", int(i)))["logits"])
        for i, cols in zip(dev.ids, dev.points, strict=True)
    ]
    want = ref_original(
        train_sets, logits, scores.labels, scores.points, targets, "prob", True, False
    )
    for i, row in zip(dev.ids, want, strict=True):
        folder = model_dir(root, CHALLENGE, scenario, "dev", int(i))
        got = read_prediction(folder, task.num_challenges)
        ok = ~np.isnan(row)
        np.testing.assert_allclose(got[ok], row[ok], rtol=0, atol=1e-6)


def test_cli_original_without_logits_says_what_to_run(tiny_copy, capsys):
    root = tiny_copy(CHALLENGE)
    args = ["--challenge", CHALLENGE, "--root", str(root), "-q", "--original"]
    assert run_lira_mia.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()  # the LEN_TRAINING warning, the error
    assert err[-1].startswith("error: ") and "--save-logits" in err[-1]
    assert not list((root / CHALLENGE).glob("*/*/model_*/prediction.csv"))


def test_the_runner_knows_original_only_through_the_registry():
    """``--original`` is a registered variant of ``lira`` (declared flags, fixed shadows, its
    own bundle inputs): the runner has no option or branch of that name."""
    import ast
    import dataclasses

    from mico.attacks import run
    from mico.attacks.original import OriginalLira
    from mico.attacks.registry import ATTACKS, VARIANTS, get_attack

    assert "original" not in {f.name for f in dataclasses.fields(run.RunOptions)}
    names = {
        getattr(node, "id", None) or getattr(node, "attr", None)
        for node in ast.walk(ast.parse(Path(run.__file__).read_text()))
    }
    assert not {name for name in names if name and "original" in name.lower()}
    variant = get_attack("original")
    assert isinstance(variant, OriginalLira) and "original" in VARIANTS
    assert "original" not in ATTACKS  # neither an --attack choice nor a --compare row
    assert variant.variant_of == "lira" and variant.shadows == "train"
    assert set(ATTACKS["lira"].cli_flags) < set(variant.cli_flags)
