"""Tests of mico.attacks.budget (seeded, stratified shadow draws and the scores they leave) and
of the budget curve built on them (mico.attacks.budget_curve, ``--compare --budget``)."""

import dataclasses
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import run_lira_mia
from mico.attacks.budget import budget_draws, keep_rows
from mico.attacks.budget_curve import ALL, CURVE_KEYS, average_curve, check_budgets, scenario_curve
from mico.attacks.compare import Predictor, compare_scenario, evaluate_row
from mico.attacks.lira import lira
from mico.attacks.registry import get_attack
from mico.outputs.store import PhaseScores, ScenarioScores
from mico.scoring import metrics
from tests.test_attacks import CHALLENGE, FAST, FAST_BOOT, synthetic_scores, write_synthetic_root


@settings(max_examples=50, deadline=None)
@given(
    n_rows=st.integers(1, 12),
    n_points=st.integers(1, 30),
    budget=st.integers(1, 14),
    repeats=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_draws_are_distinct_sorted_rows_and_reproducible(n_rows, n_points, budget, repeats, seed):
    mask = np.random.default_rng(seed).random((n_rows, n_points)) < 0.7
    draws = budget_draws(mask, budget, repeats, seed)
    assert draws.shape == (repeats, min(budget, n_rows)) and draws.dtype == np.int64
    for rows in draws:
        assert np.all(np.diff(rows) > 0) and rows.min() >= 0 and rows.max() < n_rows
    np.testing.assert_array_equal(draws, budget_draws(mask, budget, repeats, seed))


def test_budget_of_every_row_keeps_them_all():
    mask = np.ones((5, 3), dtype=bool)
    np.testing.assert_array_equal(budget_draws(mask, 9, 2), np.tile(np.arange(5), (2, 1)))


def test_rows_that_give_points_their_only_out_shadow_are_taken():
    """Rows 3 and 7 are each the only OUT shadow of half the points: a budget of 2 must
    take both, in every draw, while plain random pairs would almost never."""
    mask = np.ones((10, 40), dtype=bool)
    mask[3, :20] = False
    mask[7, 20:] = False
    draws = budget_draws(mask, 2, repeats=20, seed=1)
    assert all(rows.tolist() == [3, 7] for rows in draws)
    # With room to spare, the other rows are random.
    more = budget_draws(mask, 4, repeats=50, seed=1)
    assert all({3, 7} <= set(rows.tolist()) for rows in more)
    assert len({tuple(rows) for rows in more}) > 10


def test_draws_are_uniform_when_rows_are_alike():
    """Exchangeable rows (a random design, every point IN and OUT somewhere): each row is
    drawn about budget / S of the time."""
    rng = np.random.default_rng(2)
    mask = rng.random((10, 2000)) < 0.75
    draws = budget_draws(mask, 3, repeats=3000, seed=3)
    counts = np.bincount(draws.ravel(), minlength=10)
    expected = 3000 * 3 / 10
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
    assert not np.array_equal(draws, budget_draws(mask, 3, repeats=3000, seed=4))


def test_stratified_draws_cover_more_points_than_random_ones():
    rng = np.random.default_rng(5)
    mask = rng.random((40, 3000)) < 0.8

    def uncovered(rows):
        part = mask[rows]
        return int(np.sum(~(part.any(0) & (~part).any(0))))

    drawn = np.mean([uncovered(rows) for rows in budget_draws(mask, 6, 200, seed=6)])
    plain = np.mean([uncovered(rng.choice(40, 6, replace=False)) for _ in range(200)])
    assert drawn < plain


def test_bad_budgets_are_refused():
    mask = np.ones((3, 2), dtype=bool)
    with pytest.raises(ValueError, match="at least 1"):
        budget_draws(mask, 0)
    with pytest.raises(ValueError, match="at least 1"):
        budget_draws(mask, 2, repeats=0)
    with pytest.raises(ValueError, match="boolean"):
        budget_draws(mask.astype(int), 2)


def scenario(rng, n_shadows=6, n_points=10, n_targets=3):
    """A train phase whose targets are shadows 1, 3 and 5, with logits and a population."""
    margin = rng.normal(0, 1, (n_shadows, n_points))
    points = np.stack([rng.choice(n_points, 4, replace=False) for _ in range(n_targets)])
    train = PhaseScores(
        ids=np.arange(n_targets),
        points=points,
        margin=rng.normal(0, 1, points.shape),
        shadow=np.array([1, 3, 5]),
        solution=rng.integers(0, 2, points.shape).astype(np.int8),
    )
    return ScenarioScores(
        points=np.arange(n_points),
        labels=np.zeros(n_points, dtype=np.int64),
        shadow_ids=np.arange(n_shadows) + 100,
        shadow_margin=margin,
        shadow_in=rng.random((n_shadows, n_points)) < 0.6,
        phases={"train": train},
        shadow_population=rng.normal(0, 1, (n_shadows, 5)),
        shadow_kind=np.array(["train"] * 4 + ["extra"] * 2),
        shadow_logits=rng.normal(0, 1, (n_shadows, n_points, 3)).astype(np.float32),
    )


def test_keep_rows_subsets_every_shadow_array_and_remaps_targets():
    scores = scenario(np.random.default_rng(7))
    kept = keep_rows(scores, np.array([0, 3, 4]))
    np.testing.assert_array_equal(kept.shadow_ids, [100, 103, 104])
    np.testing.assert_array_equal(kept.shadow_margin, scores.shadow_margin[[0, 3, 4]])
    np.testing.assert_array_equal(kept.shadow_in, scores.shadow_in[[0, 3, 4]])
    np.testing.assert_array_equal(kept.shadow_population, scores.shadow_population[[0, 3, 4]])
    np.testing.assert_array_equal(kept.shadow_logits, scores.shadow_logits[[0, 3, 4]])
    np.testing.assert_array_equal(kept.shadow_kind, ["train", "train", "extra"])
    # Target 1 was shadow 3, now row 1; targets 0 and 2 are no longer shadows.
    np.testing.assert_array_equal(kept.phases["train"].shadow, [-1, 1, -1])
    np.testing.assert_array_equal(scores.phases["train"].shadow, [1, 3, 5])  # untouched


def test_attacks_on_kept_rows_equal_attacks_on_the_deleted_arrays():
    scores = scenario(np.random.default_rng(8))
    rows = np.array([1, 2, 5])
    kept = keep_rows(scores, rows)
    data = kept.phases["train"]
    got = lira(kept.shadow_margin, kept.shadow_in, data.margin, data.points, data.shadow)
    full = scores.phases["train"]
    for t, own in enumerate(full.shadow):
        others = [r for r in rows if r != own]
        want = lira(
            scores.shadow_margin[others],
            scores.shadow_in[others],
            data.margin[t : t + 1],
            data.points[t : t + 1],
        )
        np.testing.assert_allclose(got[t], want[0], rtol=1e-12)


def test_keep_rows_refuses_bad_rows():
    scores = scenario(np.random.default_rng(9))
    for rows in ([0, 0], [6], [-1], [[0, 1]]):
        with pytest.raises(ValueError, match="distinct shadow rows"):
            keep_rows(scores, np.array(rows))
    # Files from before extra shadows have no kinds: every kept row is a train model.
    old = dataclasses.replace(scores, shadow_kind=None)
    np.testing.assert_array_equal(keep_rows(old, np.array([4])).shadow_kind, ["train"])


# --- the budget curve (run_lira_mia.py --compare --budget) ------------------------------


@pytest.fixture(scope="module")
def curve_scores():
    return synthetic_scores(np.random.default_rng(5))[0]


def test_curve_all_column_is_the_compare_estimate(curve_scores):
    """The whole pool's column is what --compare prints for every (CV) row, replicates
    included; each budget's cell holds one point per draw."""
    attacks = [get_attack(name) for name in ("loss", "lira", "hardness", "logit_lira")]
    curve = scenario_curve(curve_scores, attacks, [3, 6], repeats=2, uncertainty=FAST)
    assert curve.columns == ["3", "6", ALL] and curve.shadows == 12
    compared = compare_scenario(curve_scores, attacks, uncertainty=FAST).rows
    assert list(curve.cells) == [label for label in compared if label.endswith("(CV)")]
    for label, by_column in curve.cells.items():
        for key in CURVE_KEYS:
            cell = by_column[ALL][key]
            assert cell.points.tolist() == [compared[label].metrics["train"][key]]
            np.testing.assert_array_equal(cell.replicates, compared[label].replicates["train"][key])
            assert by_column["3"][key].points.shape == (2,)
    # A budget's cells are the CV estimates on the scores its seeded draws keep.
    draws = budget_draws(curve_scores.shadow_in, 3, 2, (0, 0, 3))
    lira_rows = get_attack("lira").configs()
    want = [
        metrics(
            curve_scores.phases["train"].solution,
            evaluate_row(Predictor(keep_rows(curve_scores, rows)), lira_rows, 5, FAST.rule).train,
        )["TPR_FPR_1000"]
        for rows in draws
    ]
    assert curve.cells["lira (CV)"]["3"]["TPR_FPR_1000"].points.tolist() == want


def test_curve_average_averages_points_and_replicates(curve_scores):
    attacks = [get_attack("lira")]
    one = scenario_curve(curve_scores, attacks, [4], repeats=1, uncertainty=FAST)
    two = scenario_curve(curve_scores, attacks, [4], repeats=1, uncertainty=FAST, stream=1)
    mean = average_curve({"a": one, "b": two})
    cells = [c.cells["lira (CV)"]["4"]["TPR_FPR_100"] for c in (one, two, mean)]
    np.testing.assert_allclose(cells[2].points, (cells[0].points + cells[1].points) / 2)
    np.testing.assert_allclose(cells[2].replicates, (cells[0].replicates + cells[1].replicates) / 2)


@pytest.mark.parametrize(
    ("budgets", "repeats", "message"),
    [
        ([1, 4], 1, "at least 2 shadow models"),
        ([4, 12], 1, "--budget 12 is not below the 12 shadow models"),
        ([4], 0, "--budget-repeats must be at least 1"),
        ([], 1, "at least one number"),
    ],
)
def test_bad_curve_budgets_are_refused(budgets, repeats, message):
    with pytest.raises(ValueError, match=message):
        check_budgets(budgets, repeats, 12)


def test_budget_cli_prints_the_curve_and_draws_it(tmp_path, capsys):
    root = write_synthetic_root(tmp_path / "r")
    plot = tmp_path / "budget.png"
    args = ["--challenge", CHALLENGE, "--root", str(root), "-q", "--compare", *FAST_BOOT]
    assert (
        run_lira_mia.main([*args, "--budget", "4", "--budget-repeats", "1", "--plot", str(plot)])
        == 0
    )
    out = capsys.readouterr().out
    assert "every (CV) row with the shadow set cut to each budget" in out
    assert "track average, TPR@10%" in out and "purchase100_lo, TPR@1%" in out
    header = next(line for line in out.splitlines() if line.strip().startswith("4"))
    assert header.split() == ["4", "all", "12"]
    assert re.search(r"\nbest of all \(CV\) +0\.\d{4} \[0\.\d{4}, 0\.\d{4}\] +0\.\d{4} \[", out)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget", "4"], "add --compare"),
        (["--compare", "--budget-repeats", "2"], "add --budget"),
        (["--compare", "--budget", "1"], "at least 2 shadow models"),
        (["--compare", "--budget", "4", "20"], "--budget 20 is not below the 12 shadow models"),
        (["--compare", "--budget", "4", "--budget-repeats", "0"], "at least 1"),
        (["--compare", "--budget", "4", "--audit"], "drop --budget"),
        (["--compare", "--budget", "4", "--no-intervals"], "drop --no-intervals"),
        (["--compare", "--budget", "4", "--references", "2"], "drop --references"),
    ],
)
def test_budget_cli_refuses_in_one_line(synthetic_root, extra, message, capsys):
    args = ["--challenge", CHALLENGE, "--root", str(synthetic_root), *extra]
    assert run_lira_mia.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return write_synthetic_root(tmp_path_factory.mktemp("budget_root"))
