"""Tests of the attacks besides LiRA, the registry, mico.attacks.selection and
mico.attacks.compare/run.

The attacks are checked against naive per-point references written with plain loops, lists
and ``math``; RMIA also against an example worked out by hand; the cross-validated choice
against constructed cases that would expose a look at the held-out fold.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

import run_lira_mia
import save_preds
from mico.attacks.base import Attack, Config, Params
from mico.attacks.compare import (
    BEST_ROW,
    SUBMITTED_LIRA,
    Predictor,
    Uncertainty,
    compare_scenario,
    evaluate_row,
)
from mico.attacks.hardness import (
    HARDNESS_SCORES,
    HARDNESS_VARIANTS,
    hardness,
    hardness_calibrated,
    minmax,
)
from mico.attacks.lira import lira
from mico.attacks.loss import loss_attack
from mico.attacks.registry import ATTACKS, get_attack
from mico.attacks.report import print_comparison
from mico.attacks.rmia import RECOMMENDED_POPULATION, fraction_below, rmia
from mico.attacks.run import RunOptions, attack_scenario, compare_challenge
from mico.attacks.selection import (
    Rule,
    best_candidate,
    candidate_bootstraps,
    cross_validate,
    fold_assignment,
    phase_quantiles,
)
from mico.attacks.stats import STD_FLOOR_REL, Z_CAP
from mico.bundle.layout import model_dirs
from mico.bundle.records import read_prediction, write_solution
from mico.outputs.provenance import bundle_record
from mico.outputs.store import SCORES_FILE, PhaseScores, ScenarioScores
from mico.scoring import metrics as official_score
from mico.scoring import tpr_at_fpr
from mico.tracks.registry import get_task, load_task
from tests.test_lira import ref_pooled_var, ref_sigmoid, scenarios

HARDNESS_COMBOS = [(s, v) for s in HARDNESS_SCORES for v in HARDNESS_VARIANTS]
TINY = float(np.finfo(np.float64).tiny)


# --- naive references ---------------------------------------------------------------------


def ref_log_sigmoid(z):
    z = float(z)
    return -math.log1p(math.exp(-z)) if z >= 0 else z - math.log1p(math.exp(z))


def ref_hardness_score(z, score):
    if score == "loss":
        return ref_log_sigmoid(z)  # -cross-entropy = log p
    if score == "prob":
        return ref_sigmoid(float(z))
    return float(z)


def naive_hardness(sm, si, tm, tp, ts, score, variant):
    """Per (target, point): the calibrated score with plain loops (before the min-max)."""
    n_shadows, n_points = sm.shape
    x = [[ref_hardness_score(sm[s, p], score) for p in range(n_points)] for s in range(n_shadows)]
    out = np.empty(tm.shape)
    for t in range(tm.shape[0]):
        own = -1 if ts is None else int(ts[t])
        rows = [s for s in range(n_shadows) if s != own]
        everyone = [[x[s][p] for s in rows] for p in range(n_points)]
        # std fallbacks of InOutStats.std: per point (n >= 2), the target's pooled std over
        # its K points, the scenario's pooled std over all points, 1.0; then the floor.
        scenario = ref_pooled_var(everyone)
        scale = math.sqrt(scenario) if scenario else 1.0
        pooled = ref_pooled_var([everyone[int(p)] for p in tp[t]])
        target_std = math.sqrt(pooled) if pooled is not None else scale
        for k in range(tm.shape[1]):
            p = int(tp[t, k])
            y = ref_hardness_score(tm[t, k], score)
            ins = [x[s][p] for s in rows if si[s, p]]
            outs = [x[s][p] for s in rows if not si[s, p]]
            pool = everyone[p]
            mean_all = float(np.mean(pool)) if pool else None
            if variant == "std":
                if not pool:
                    out[t, k] = 0.0
                    continue
                sd = statistics.stdev(pool) if len(pool) >= 2 else target_std
                sd = max(sd, STD_FLOOR_REL * max(abs(mean_all), scale))
                out[t, k] = min(max((y - mean_all) / sd, -Z_CAP), Z_CAP)
                continue
            if variant == "in" and ins:
                reference = float(np.mean(ins))
            elif variant == "mid" and ins and outs:
                reference = (float(np.mean(ins)) + float(np.mean(outs))) / 2
            elif pool:
                reference = mean_all
            else:
                reference = y
            out[t, k] = y - reference
    return out


def naive_rmia_bounds(sm, si, tm, tp, ts, spop, tpop, a, gamma, tol=1e-9):
    """RMIA per (target, point) with loops; returns the score with ties read both ways.

    Where log LR(x, z) is within ``tol`` of log gamma the strict comparison depends on the
    last bits of two different summation orders, so the vectorised score must lie between
    the count that excludes those z (``low``) and the one that includes them (``high``).
    """
    n_shadows = sm.shape[0]
    low, high = np.empty(tm.shape), np.empty(tm.shape)
    for t in range(tm.shape[0]):
        own = -1 if ts is None else int(ts[t])
        rows = [s for s in range(n_shadows) if s != own]
        log_ratio_z = []
        for q in range(spop.shape[1]):
            pr_z = sum(ref_sigmoid(float(spop[s, q])) for s in rows) / len(rows) if rows else 0
            log_ratio_z.append(ref_log_sigmoid(tpop[t, q]) - math.log(max(pr_z, TINY)))
        for k in range(tm.shape[1]):
            p = int(tp[t, k])
            outs = [ref_sigmoid(float(sm[s, p])) for s in rows if not si[s, p]]
            if not outs:
                low[t, k] = high[t, k] = 0.5
                continue
            pr_x = 0.5 * ((1 + a) * (sum(outs) / len(outs)) + (1 - a))
            log_ratio_x = ref_log_sigmoid(tm[t, k]) - math.log(max(pr_x, TINY))
            margins = [log_ratio_x - rz - math.log(gamma) for rz in log_ratio_z]
            low[t, k] = sum(m > tol for m in margins) / len(margins)
            high[t, k] = sum(m > -tol for m in margins) / len(margins)
    return low, high


def with_population(data, draw_seed, n_pop):
    """Add population margins; a train target's are its shadow row's, as save_preds stores."""
    sm, _, tm, _, ts = data
    rng = np.random.default_rng(draw_seed)
    spop = rng.normal(1.0, 3.0, (sm.shape[0], n_pop))
    tpop = rng.normal(1.0, 3.0, (tm.shape[0], n_pop))
    if ts is not None:
        for t in np.flatnonzero(ts >= 0):
            if rng.random() < 0.5:
                tpop[t] = spop[ts[t]]
    return spop, tpop


# --- loss ---------------------------------------------------------------------------------


def test_loss_is_the_true_label_probability():
    z = np.array([[-800.0, -3.0, 0.0], [2.0, 36.0, 800.0]])
    got = loss_attack(z)
    want = [[ref_sigmoid(v) for v in row] for row in z]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    # Monotone in -loss = log p: higher margin, higher confidence.
    assert np.all(np.diff(got.ravel()) >= 0)
    with pytest.raises(ValueError, match="finite"):
        loss_attack(np.array([[np.nan]]))


# --- hardness -----------------------------------------------------------------------------


@pytest.mark.parametrize(("score", "variant"), HARDNESS_COMBOS)
@settings(max_examples=30, deadline=None)
@given(data=scenarios())
@example(  # three mathematically equal z-scores (1/sqrt 2) that differ in the last bit
    data=(
        np.array([[3.0, 3.0, 0.5], [-2.0, 0.0, -2.0], [-2.0, -2.0, 0.0]]),
        np.zeros((3, 3), dtype=bool),
        np.array([[0.5, 3.0, 3.0]]),
        np.array([[2, 0, 1]]),
        np.array([2]),
    )
)
def test_hardness_matches_naive_reference(data, score, variant):
    sm, si, tm, tp, ts = data
    calibrated = hardness_calibrated(sm, si, tm, tp, ts, score=score, variant=variant)
    want = naive_hardness(sm, si, tm, tp, ts, score, variant)
    np.testing.assert_allclose(calibrated, want, rtol=1e-9, atol=1e-9)
    # The min-max is compared on our own calibrated values: applied to the loop's, it would
    # turn last-bit differences between mathematically equal scores into 0 and 1.
    got = hardness(sm, si, tm, tp, ts, score=score, variant=variant)
    low, high = calibrated.min(), calibrated.max()
    scaled = (calibrated - low) / (high - low) if high > low else np.full(tm.shape, 0.5)
    assert got.shape == tm.shape and np.all((got >= 0) & (got <= 1))
    np.testing.assert_allclose(got, scaled, rtol=1e-9, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(data=scenarios())
def test_hardness_leaves_target_out(data):
    """A train target's calibrated scores equal those with its shadow row deleted."""
    sm, si, tm, tp, ts = data
    if ts is None or (ts < 0).all() or sm.shape[0] < 2:
        return
    for score, variant in HARDNESS_COMBOS:
        got = hardness_calibrated(sm, si, tm, tp, ts, score=score, variant=variant)
        for t in np.flatnonzero(ts >= 0):
            rest = np.delete(np.arange(sm.shape[0]), ts[t])
            want = hardness_calibrated(
                sm[rest], si[rest], tm[t : t + 1], tp[t : t + 1], score=score, variant=variant
            )
            np.testing.assert_allclose(got[t], want[0], rtol=1e-9, atol=1e-9)


def test_hardness_variants_by_hand():
    # One point, shadows: IN losses give log p; use the margin score to keep numbers simple.
    sm = np.array([[4.0], [2.0], [-1.0], [1.0]])  # shadows 0, 1 IN; 2, 3 OUT
    si = np.array([[True], [True], [False], [False]])
    tm, tp = np.array([[2.5]]), np.array([[0]])
    calibrated = {
        v: hardness_calibrated(sm, si, tm, tp, score="margin", variant=v)[0, 0]
        for v in HARDNESS_VARIANTS
    }
    assert calibrated["in"] == pytest.approx(2.5 - 3.0)  # IN mean (4 + 2) / 2
    assert calibrated["mid"] == pytest.approx(2.5 - (3.0 + 0.0) / 2)  # OUT mean 0
    all_std = np.std([4.0, 2.0, -1.0, 1.0], ddof=1)
    assert calibrated["std"] == pytest.approx((2.5 - 1.5) / all_std)


def test_minmax_edges():
    np.testing.assert_array_equal(minmax(np.array([[3.0, 3.0]])), [[0.5, 0.5]])
    np.testing.assert_array_equal(minmax(np.array([[-1e100, 0.0, 1e100]])), [[0.0, 0.5, 1.0]])


# --- RMIA ---------------------------------------------------------------------------------


def logit(p):
    return math.log(p / (1 - p))


def hand_example():
    """Three dev shadows, one target, two challenge points, three population records.

    Softmax probabilities of the true label (margins are their logits):

        point x0: shadows 0.8 (IN), 0.4 (OUT), 0.2 (OUT)   mean_OUT = 0.3   target 0.95
        point x1: shadows 0.5 (OUT), 0.6 (IN), 0.9 (IN)    mean_OUT = 0.5   target 0.5
        z0: shadows 0.5, 0.5, 0.8  Pr(z0) = 0.6   target 0.9   ratio 1.5
        z1: shadows 0.2, 0.4, 0.3  Pr(z1) = 0.3   target 0.15  ratio 0.5
        z2: shadows 0.9, 0.9, 0.9  Pr(z2) = 0.9   target 0.81  ratio 0.9
    """
    p_sm = [[0.8, 0.5], [0.4, 0.6], [0.2, 0.9]]
    si = np.array([[True, False], [False, True], [False, True]])
    p_pop = [[0.5, 0.2, 0.9], [0.5, 0.4, 0.9], [0.8, 0.3, 0.9]]
    sm = np.vectorize(logit)(np.array(p_sm))
    spop = np.vectorize(logit)(np.array(p_pop))
    tm = np.array([[logit(0.95), logit(0.5)]])
    tpop = np.array([[logit(0.9), logit(0.15), logit(0.81)]])
    return sm, si, tm, np.array([[0, 1]]), spop, tpop


@pytest.mark.parametrize(
    ("a", "gamma", "want"),
    [
        # a = 0.5: Pr(x0) = (1.5 * 0.3 + 0.5) / 2 = 0.475, ratio 0.95 / 0.475 = 2.0
        #          Pr(x1) = (1.5 * 0.5 + 0.5) / 2 = 0.625, ratio 0.5 / 0.625 = 0.8
        # gamma 1: x0 beats z with ratio < 2.0: all three; x1 those < 0.8: z1 only.
        (0.5, 1.0, [1.0, 1 / 3]),
        # gamma 2: x0 beats z with ratio < 1.0: z1, z2; x1 those < 0.4: none.
        (0.5, 2.0, [2 / 3, 0.0]),
        # a = 1: Pr(x) = mean_OUT: ratios 0.95 / 0.3 = 3.17 (all) and 0.5 / 0.5 = 1 (z1, z2).
        (1.0, 1.0, [1.0, 2 / 3]),
        # a = 0: Pr(x0) = (0.3 + 1) / 2 = 0.65, ratio 1.46 (z1, z2);
        #        Pr(x1) = (0.5 + 1) / 2 = 0.75, ratio 0.67 (z1).
        (0.0, 1.0, [2 / 3, 1 / 3]),
    ],
)
def test_rmia_hand_computed(a, gamma, want):
    sm, si, tm, tp, spop, tpop = hand_example()
    got = rmia(sm, si, tm, tp, spop, tpop, a=a, gamma=gamma)
    np.testing.assert_allclose(got, [want], rtol=0, atol=1e-12)
    # The target as a 4th shadow (train phase) with outlying outputs changes nothing.
    sm4 = np.vstack([sm, [[9.0, -9.0]]])
    si4 = np.vstack([si, [[False, False]]])
    spop4 = np.vstack([spop, [[-9.0, 9.0, 9.0]]])
    got4 = rmia(sm4, si4, tm, tp, spop4, tpop, np.array([3]), a=a, gamma=gamma)
    np.testing.assert_allclose(got4, [want], rtol=0, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    data=scenarios(),
    seed=st.integers(0, 2**32 - 1),
    n_pop=st.integers(1, 6),
    a=st.sampled_from([0.0, 0.3, 1.0]),
    gamma=st.sampled_from([1.0, 2.0]),
)
def test_rmia_matches_naive_reference(data, seed, n_pop, a, gamma):
    sm, si, tm, tp, ts = data
    spop, tpop = with_population(data, seed, n_pop)
    got = rmia(sm, si, tm, tp, spop, tpop, ts, a=a, gamma=gamma)
    low, high = naive_rmia_bounds(sm, si, tm, tp, ts, spop, tpop, a, gamma)
    assert got.shape == tm.shape and np.all(np.isfinite(got))
    assert np.all((low - 1e-12 <= got) & (got <= high + 1e-12)), (got, low, high)


@settings(max_examples=30, deadline=None)
@given(data=scenarios(), seed=st.integers(0, 2**32 - 1))
def test_rmia_leaves_target_out(data, seed):
    sm, si, tm, tp, ts = data
    if ts is None or (ts < 0).all() or sm.shape[0] < 2:
        return
    spop, tpop = with_population(data, seed, 5)
    got = rmia(sm, si, tm, tp, spop, tpop, ts, a=0.3)
    for t in np.flatnonzero(ts >= 0):
        rest = np.delete(np.arange(sm.shape[0]), ts[t])
        want = rmia(
            sm[rest], si[rest], tm[t : t + 1], tp[t : t + 1], spop[rest], tpop[t : t + 1], a=0.3
        )
        np.testing.assert_allclose(got[t], want[0], rtol=0, atol=1e-12)


def test_rmia_rejects_bad_parameters_and_shapes():
    sm, si, tm, tp, spop, tpop = hand_example()
    with pytest.raises(ValueError, match="a must lie"):
        rmia(sm, si, tm, tp, spop, tpop, a=1.5)
    with pytest.raises(ValueError, match="gamma"):
        rmia(sm, si, tm, tp, spop, tpop, gamma=0.0)
    with pytest.raises(ValueError, match="population"):
        rmia(sm, si, tm, tp, spop[:, :2], tpop)
    with pytest.raises(ValueError, match="Q >= 1"):
        rmia(sm, si, tm, tp, spop[:, :0], tpop[:, :0])


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6)),
)
def test_fraction_below_matches_loops(seed, shape):
    rows, k, q = shape
    rng = np.random.default_rng(seed)
    thresholds = rng.choice([-1.0, 0.0, 0.5, 2.0], (rows, k))  # ties on purpose
    values = rng.choice([-1.0, 0.0, 0.5, 2.0, 3.0], (rows, q))
    want = [[sum(v < th for v in values[r]) / q for th in thresholds[r]] for r in range(rows)]
    np.testing.assert_array_equal(fraction_below(thresholds, values), want)


# --- cross-validated choice ---------------------------------------------------------------


def _two_classes(rng, n_targets, k):
    return np.stack([rng.permutation(np.repeat([0, 1], k // 2)) for _ in range(n_targets)])


def test_fold_assignment():
    np.testing.assert_array_equal(fold_assignment(7, 5), [0, 1, 2, 3, 4, 0, 1])
    np.testing.assert_array_equal(fold_assignment(3, 5), [0, 1, 2])
    with pytest.raises(ValueError, match="2 train models"):
        fold_assignment(1, 5)
    with pytest.raises(ValueError, match="2 folds"):
        fold_assignment(10, 1)


def test_cv_choice_ignores_the_held_out_fold():
    """Candidate A is slightly worse than B outside fold 0 but perfect on fold 0, so that A
    wins on all targets: a choice for fold 0 that looked at fold 0 would pick A."""
    rng = np.random.default_rng(0)
    n_targets, k = 10, 400
    solution = _two_classes(rng, n_targets, k)
    noise = rng.normal(size=(2, n_targets, k))
    a = solution * 1.0 + noise[0]
    b = solution * 1.3 + noise[1]
    a[[0, 5]] = np.where(solution[[0, 5]] == 1, 100.0, -100.0)  # fold 0 = targets 0 and 5
    outside = fold_assignment(n_targets) != 0
    for limit in (0.1, 0.01):  # A wins with fold 0 included, B without it
        assert tpr_at_fpr(solution, a, limit) > tpr_at_fpr(solution, b, limit)
        assert tpr_at_fpr(solution[outside], a[outside], limit) < tpr_at_fpr(
            solution[outside], b[outside], limit
        )

    selection = cross_validate([a, b], solution)
    assert selection.chosen == 0
    assert selection.fold_choice[0] == 1
    quantiles = phase_quantiles(np.stack([a, b]))
    np.testing.assert_array_equal(selection.held_out[[0, 5]], quantiles[1, [0, 5]])
    for t in range(n_targets):
        choice = selection.fold_choice[selection.fold_of[t]]
        np.testing.assert_array_equal(selection.held_out[t], quantiles[choice, t])


def _low_fpr_specialist(rng, n_targets=30, k=200):
    """Two candidates tied at TPR@10% FPR (0.392 and 0.373 here: within noise of each other)
    whose TPR@1% differ by 0.13 (0.100 and 0.229): ``spread`` scores every member a little
    higher, ``sharp`` picks out a fifth of the members with near certainty and the rest not
    at all."""
    solution = _two_classes(rng, n_targets, k)
    spread = rng.normal(size=(n_targets, k)) + 1.0 * solution
    sharp = rng.normal(size=(n_targets, k)) + np.where(
        solution & (rng.random((n_targets, k)) < 0.2), 8.0, 0.5 * solution
    )
    return solution, spread, sharp


def test_a_tie_at_ten_percent_goes_to_the_better_tpr_at_one_percent():
    solution, spread, sharp = _low_fpr_specialist(np.random.default_rng(7))
    assert tpr_at_fpr(solution, spread, 0.1) > tpr_at_fpr(solution, sharp, 0.1)
    assert tpr_at_fpr(solution, sharp, 0.01) > tpr_at_fpr(solution, spread, 0.01) + 0.1
    boots = candidate_bootstraps(np.stack([spread, sharp]), solution)
    assert best_candidate(boots, rule=Rule(n_boot=500)) == 1
    # Without the tie (a clear lead at 10%), the leader keeps its place whatever TPR@1% says.
    clear = spread + 0.3 * solution  # TPR@10% 0.505, TPR@1% 0.162
    boots = candidate_bootstraps(np.stack([clear, sharp]), solution)
    assert tpr_at_fpr(solution, clear, 0.01) < tpr_at_fpr(solution, sharp, 0.01)
    assert best_candidate(boots, rule=Rule(n_boot=500)) == 0


def test_phase_quantiles_keep_order_ties_and_metrics():
    rng = np.random.default_rng(4)
    solution = _two_classes(rng, 6, 20)
    preds = np.round(rng.random((2, 6, 20)) + 0.5 * solution, 1)  # many ties
    preds[1] = np.exp(30 * preds[1])  # another scale entirely
    quantiles = phase_quantiles(preds)
    for c in range(2):
        assert official_score(solution, quantiles[c]) == official_score(solution, preds[c])
        flat_p, flat_q = preds[c].ravel(), quantiles[c].ravel()
        order = np.argsort(flat_p)
        assert np.all(np.diff(flat_q[order]) >= 0)
        assert np.array_equal(np.diff(flat_p[order]) == 0, np.diff(flat_q[order]) == 0)
    assert quantiles.max() == 1.0 and quantiles.min() > 0
    # Every fold choosing the same candidate: the CV estimate is that candidate's score.
    same = cross_validate([preds[1], preds[1] - 1.0], solution)
    assert set(same.fold_choice) == {0}
    assert official_score(solution, same.held_out) == official_score(solution, preds[1])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_targets=st.integers(2, 12), folds=st.integers(2, 6))
def test_cv_choice_is_unchanged_by_anything_in_its_fold(seed, n_targets, folds):
    rng = np.random.default_rng(seed)
    k, n_candidates = 10, 4
    solution = _two_classes(rng, n_targets, k)
    preds = (
        rng.random((n_candidates, n_targets, k))
        + 0.3 * rng.random(n_candidates)[:, None, None] * solution
    )
    rule = Rule(n_boot=200)  # the fold logic, not the bootstrap, is under test
    base = cross_validate(preds, solution, folds, rule)
    for f in range(int(base.fold_of.max()) + 1):
        inside = base.fold_of == f
        preds2, solution2 = preds.copy(), solution.copy()
        preds2[:, inside] = rng.random((n_candidates, inside.sum(), k))
        solution2[inside] = _two_classes(rng, int(inside.sum()), k)
        changed = cross_validate(preds2, solution2, folds, rule)
        assert changed.fold_choice[f] == base.fold_choice[f]


# --- comparison and CLI on synthetic stored outputs ---------------------------------------


def with_logits(margin, logit_rng, n_classes=5):
    """Logit vectors ``[..., C]`` (true label 0) whose margin is ``margin``: random
    competitors, the true-label logit set to ``margin + logsumexp(competitors)``."""
    others = logit_rng.normal(0, 1.5, (*np.shape(margin), n_classes - 1))
    true = margin + logsumexp(others, axis=-1)
    return np.concatenate([true[..., None], others], axis=-1).astype(np.float32)


def synthetic_scores(
    rng, n_train=12, n_eval=6, k=20, n_points=120, n_pop=30, population=True, logits=True
):
    """A ``ScenarioScores`` where IN raises a point's margin by 2 over its own difficulty.

    Each point has its own spread, as real shadows' margins do (with one spread for all, the
    Bayesian variance's prior fit runs along its alpha -> infinity ridge: 64 objective
    evaluations a fit instead of 25, a third of a ``--compare``'s time here).

    With ``logits``, the full logit vectors too (drawn from a generator of their own, so the
    rest is the same either way). Returns the scores and ``{phase: (ids, solution)}`` for dev
    and final.
    """
    logit_rng = np.random.default_rng(99)
    spread = np.exp(np.random.default_rng(7).normal(0, 0.5, n_points))
    difficulty = rng.normal(0, 2, n_points)
    pop_difficulty = rng.normal(0, 2, n_pop)

    def models(n):
        trained = rng.random((n, n_points)) < 0.6
        margin = difficulty + 2.0 * trained + spread * rng.normal(0, 1, (n, n_points))
        pop = pop_difficulty + 2.0 * (rng.random((n, n_pop)) < 0.6) + rng.normal(0, 1, (n, n_pop))
        return trained, margin, pop

    def challenge(trained):
        cols, sols = [], []
        for row in trained:
            members = rng.choice(np.flatnonzero(row), k // 2, replace=False)
            others = rng.choice(np.flatnonzero(~row), k // 2, replace=False)
            order = rng.permutation(k)
            cols.append(np.concatenate([members, others])[order])
            sols.append(np.repeat([1, 0], k // 2)[order])
        return np.array(cols), np.array(sols, dtype=np.int8)

    shadow_in, shadow_margin, shadow_pop = models(n_train)
    cols, sol = challenge(shadow_in)
    rows = np.arange(n_train)
    phases = {
        "train": PhaseScores(rows, cols, shadow_margin[rows[:, None], cols], rows, sol, shadow_pop)
    }
    shadow_logits = with_logits(shadow_margin, logit_rng) if logits else None
    if logits:
        phases["train"].logits = shadow_logits[rows[:, None], cols]
    truths = {}
    for j, phase in enumerate(("dev", "final")):
        trained, margin, pop = models(n_eval)
        cols, sol = challenge(trained)
        ids = n_train + j * n_eval + np.arange(n_eval)
        phases[phase] = PhaseScores(
            ids,
            cols,
            margin[np.arange(n_eval)[:, None], cols],
            np.full(n_eval, -1),
            None,
            pop if population else None,
            with_logits(margin[np.arange(n_eval)[:, None], cols], logit_rng) if logits else None,
        )
        truths[phase] = (ids, sol)
    if not population:
        phases["train"].population = None
    scores = ScenarioScores(
        points=np.arange(n_points) * 3,
        labels=np.zeros(n_points, dtype=np.int64),
        shadow_ids=rows,
        shadow_margin=shadow_margin,
        shadow_in=shadow_in,
        phases=phases,
        population=np.arange(n_pop if population else 0) * 3 + 1,
        shadow_population=shadow_pop if population else None,
        shadow_logits=shadow_logits,
    )
    return scores, truths


def write_synthetic_root(root, population=True, seed=0):
    """A ``--root`` whose bundle has the layout of ``bundle.json`` (2m = 20; 12 train, 6 dev
    and 6 final models a scenario, holding seed files, train solutions and placeholder
    weights), stored outputs under ``preds/`` and dev/final solutions under ``reference/``
    (with the bundle's ``seed_challenge``)."""
    rng = np.random.default_rng(seed)
    task = get_task(CHALLENGE)
    (root / CHALLENGE).mkdir(parents=True)
    config = {"dataset_len": 1000, "len_training": 500, "len_challenge": 10}
    config["models_per_phase"] = {"train": 12, "dev": 6, "final": 6}
    (root / CHALLENGE / "bundle.json").write_text(json.dumps(config))
    for scenario in task.scenarios:
        scores, truths = synthetic_scores(rng, population=population)
        train = scores.phases["train"]
        phases = {"train": (train.ids, train.solution), **truths}
        for phase, (ids, sol) in phases.items():
            for model, values in zip(ids, sol, strict=True):
                folder = root / CHALLENGE / scenario / phase / f"model_{model}"
                folder.mkdir(parents=True)
                (folder / "seed_challenge").write_text(f"{1000 + model}\n")
                (folder / "model.pt").write_bytes(b"")  # the attacks never read weights
                if phase == "train":
                    for name in ("seed_training", "seed_membership"):
                        (folder / name).write_text(f"{model}\n")
                    write_solution(folder / "solution.csv", values)
                    continue
                truth = root / "reference" / CHALLENGE / scenario / phase / f"model_{model}"
                truth.mkdir(parents=True)
                write_solution(truth / "solution.csv", values)
                (truth / "seed_challenge").write_text(f"{1000 + model}\n")
        scores.provenance = bundle_record(root, load_task(root, CHALLENGE), scenario)
        (root / "preds" / CHALLENGE / scenario).mkdir(parents=True)
        scores.save(root / "preds" / CHALLENGE / scenario / SCORES_FILE)
    return root


CHALLENGE = "purchase100"

#: For tests of what a comparison prints, chooses or leaves out rather than of its intervals'
#: accuracy (tests/test_audit.py checks their coverage): the fewest replicates ``--bootstrap``
#: takes. A ``--compare`` of the synthetic root then takes 4.4 s instead of 7.6 s; the golden
#: comparisons keep the default 1000.
FAST_BOOT = ("--bootstrap", "100")
FAST = Uncertainty(rule=Rule(n_boot=100))


def every_config():
    return [c for attack in ATTACKS.values() for c in attack.configs()]


def lira_configs():
    return get_attack("lira").configs()


def available(scores):
    return [a for a in ATTACKS.values() if a.missing(scores, CHALLENGE) is None]


def test_compare_scenario_rows_and_choices():
    scores, truths = synthetic_scores(np.random.default_rng(1))
    truth = {p: sol for p, (_, sol) in truths.items()}
    result = compare_scenario(scores, available(scores), truth, uncertainty=FAST)
    labels = list(result.rows)
    assert labels[0] == "loss" and labels[-1] == BEST_ROW
    assert labels[1 : 1 + len(lira_configs())] == [c.label for c in lira_configs()]
    assert len(lira_configs()) == 24  # 3 transforms x 4 variances x offline/online
    assert {"lira (CV)", "hardness (CV)", "rmia (CV)"} <= set(labels)
    assert len(result.rows[BEST_ROW].fold_choices) == 5
    assert len({c.label for c in [*every_config(), result.rows[BEST_ROW].chosen]}) == len(
        every_config()
    )
    every = {c.label for c in every_config()}
    for label, row in result.rows.items():
        assert set(row.metrics) == {"train", "dev", "final"}
        for metrics in row.metrics.values():
            assert all(0.0 <= v <= 1.0 for v in metrics.values())
        if label.endswith("(CV)"):
            assert len(row.fold_choices) == 5 and row.chosen.label in every
            assert set(row.fold_choices) <= every
        else:
            assert row.fold_choices == [] and row.chosen.label == label
    # No population: RMIA is left out, everything else still compared.
    scores, _ = synthetic_scores(np.random.default_rng(1), population=False)
    assert "rmia (CV)" not in compare_scenario(scores, available(scores), uncertainty=FAST).rows


def test_run_attack_uses_the_choice_made_on_all_train_models(tmp_path):
    scores, _ = synthetic_scores(np.random.default_rng(2))
    task = get_task(CHALLENGE)
    for attack in ("hardness", "rmia", "loss"):
        options = RunOptions(root=tmp_path, challenge=CHALLENGE, attack=attack)
        estimate, predictions = attack_scenario(scores, tmp_path / "scores.npz", task, options)
        predictor = Predictor(scores)
        row = evaluate_row(predictor, get_attack(attack).configs())
        np.testing.assert_array_equal(estimate, row.train)
        for phase, values in predictions.items():
            np.testing.assert_array_equal(values, predictor.predict(row.chosen, phase))
            assert np.all((values >= 0) & (values <= 1))


class _Negated(Attack):
    """A made-up attack: the loss baseline turned upside down, with two configurations."""

    name = "negated"
    summary = "1 - loss baseline"

    def configs(self):
        return [Config(self.name, "negated plain"), Config(self.name, "negated square", _Sq())]

    def predict(self, inputs, params, prepared):
        values = 1.0 - loss_attack(inputs.margin)
        return values**2 if isinstance(params, _Sq) else values


class _Sq(Params):
    pass


def test_a_registry_entry_is_all_a_new_attack_needs(monkeypatch, synthetic_root, capsys):
    """One entry in ATTACKS: --attack accepts it, --compare and "best of all" include it."""
    monkeypatch.setitem(ATTACKS, "negated", _Negated())
    args = ["--challenge", CHALLENGE, "--root", str(synthetic_root), "-q", "--no-write"]
    assert run_lira_mia.main([*args, "--attack", "negated"]) == 0
    assert "negated (5-fold CV estimate" in capsys.readouterr().out
    assert run_lira_mia.main([*args, "--compare", *FAST_BOOT]) == 0
    train = capsys.readouterr().out.split("dev phase")[0]
    rows = [line.split("  ")[0] for line in train.splitlines()]
    # The new attack's (CV) row comes last among the attacks, just before "best of all (CV)".
    assert rows[rows.index(BEST_ROW) - 1] == "negated (CV)"
    assert {"negated plain", "negated square"} <= {c.label for c in every_config()}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return write_synthetic_root(tmp_path_factory.mktemp("synthetic"))


def test_compare_cli_table_reference_and_plot(synthetic_root, capsys):
    plot = synthetic_root / "compare.png"
    args = ["--challenge", CHALLENGE, "--root", str(synthetic_root), "--compare", "-q", *FAST_BOOT]
    args += ["--reference", str(synthetic_root / "reference"), "--plot", str(plot)]
    assert run_lira_mia.main(args) == 0
    captured = capsys.readouterr()
    out = captured.out
    for text in ("loss", SUBMITTED_LIRA, "lira online stable_logit gv", "hardness (CV)"):
        assert text in out
    assert "rmia (CV)" in out and BEST_ROW in out and "track average, train phase" in out
    assert "final phase against the reference" in out and "[5/5]" in out  # fold agreement
    assert "95% intervals: cluster bootstrap over target models, 100 replicates" in out
    assert re.search(r"\nloss +0\.\d{4} \[0\.\d{4}, 0\.\d{4}\]", out)
    assert f"{BEST_ROW} minus each (CV) row, paired bootstrap" in out and " tied" in out
    assert "RMIA's score takes 31 values" in captured.err  # 30 population records
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # --markdown's two layouts, with intervals and plain (--no-intervals), from one comparison
    # (the flags reach print_comparison through the CLI in test_ddp).
    options = run_lira_mia.options_from_args(run_lira_mia.build_parser().parse_args(args[:-2]))
    task, results = compare_challenge(options)
    print_comparison(task, results, options, markdown=True)
    tables = capsys.readouterr().out
    assert "| attack | TPR@0.1% | TPR@1% | TPR@10% | AUC |" in tables
    assert re.search(r"\| loss \| 0\.\d{4} \[", tables)
    plain = replace(options, uncertainty=replace(options.uncertainty, intervals=False))
    print_comparison(task, results, plain, markdown=True)
    tables = capsys.readouterr().out
    assert "| attack | TPR@10% inf |" in tables and "| loss |" in tables and "[0." not in tables
    assert "track averages, train-phase estimate beside dev/final" in tables


@pytest.mark.parametrize("attack", ["hardness", "rmia", "loss"])
def test_attack_cli_scores_train_with_cv(synthetic_root, attack, capsys):
    args = ["--challenge", CHALLENGE, "--root", str(synthetic_root), "--attack", attack]
    args += ["--no-write", "-q", "--truth", str(synthetic_root / "reference")]
    assert run_lira_mia.main(args) == 0
    out = capsys.readouterr().out
    assert "TPR@10%" in out and "purchase100_lo final" in out
    assert ("CV estimate" in out) == (attack != "loss")


def test_truth_keeps_its_former_name_reference(synthetic_root, capsys):
    """``--truth`` was ``--reference`` before issue 21: commands written then still run and
    score dev/final alike, and the help shows the new name first."""
    args = ["--challenge", CHALLENGE, "--root", str(synthetic_root), "--attack", "loss"]
    args += ["--no-write", "-q"]
    truth = str(synthetic_root / "reference")
    outs = []
    for flag in ("--truth", "--reference"):
        assert run_lira_mia.main([*args, flag, truth]) == 0
        outs.append(capsys.readouterr().out)
    assert "purchase100_lo final" in outs[0] and outs[0] == outs[1]
    assert "--truth DIR, --reference DIR" in run_lira_mia.build_parser().format_help()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--attack", "hardness", "--global_variance"], "--global_variance apply to --attack lira"),
        (["--attack", "loss", "--logit_scaling"], "apply to --attack lira only"),
        (["--compare", "--online_attack"], "not to --compare"),
        (["--compare", "--attack", "rmia"], "drop --attack"),
        (["--attack", "hardness", "--folds", "1"], "--folds"),
        (["--markdown"], "add --compare"),
        (["--attack", "rmia", "--variance", "pooled"], "--variance apply to --attack lira"),
        (["--compare", "--original"], "--original apply to --attack lira only"),
        (["--original", "--variance", "pooled-within"], "not --variance pooled-within"),
        (["--original", "--variance", "bayes"], "not --variance bayes"),
        (["--original", "--online_attack", "--logit_scaling"], "NotImplementedError"),
    ],
)
def test_cli_refuses_flags_that_would_be_ignored(synthetic_root, extra, message, capsys):
    args = ["--challenge", CHALLENGE, "--root", str(synthetic_root), "--no-write", *extra]
    assert run_lira_mia.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_rmia_without_population_is_one_line_error(tmp_path, capsys):
    root = write_synthetic_root(tmp_path / "r", population=False)
    args = ["--challenge", CHALLENGE, "--root", str(root), "--attack", "rmia", "--no-write"]
    assert run_lira_mia.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert f"save_preds.py --challenge {CHALLENGE} --population {RECOMMENDED_POPULATION}" in err
    # --compare goes on without RMIA and says why.
    assert (
        run_lira_mia.main(["--challenge", CHALLENGE, "--root", str(root), "--compare", *FAST_BOOT])
        == 0
    )
    captured = capsys.readouterr()
    assert "rmia (CV)" not in captured.out and "rmia left out" in captured.err


# --- the tiny offline demo, end to end ----------------------------------------------------


@pytest.fixture(scope="module")
def demo(tiny_purchase, tmp_path_factory):
    """A writable copy of the session's tiny purchase100 demo (with population outputs)."""
    return Path(shutil.copytree(tiny_purchase, tmp_path_factory.mktemp("demo") / "root"))


def test_demo_compare_table(demo, capsys):
    plot = demo / "compare.png"
    args = ["--challenge", CHALLENGE, "--root", str(demo), "--compare", "-q", *FAST_BOOT]
    args += ["--reference", str(demo / "reference"), "--plot", str(plot)]
    assert run_lira_mia.main(args) == 0
    out = capsys.readouterr().out
    rows = ["loss", *(c.label for c in lira_configs()), "lira (CV)", "hardness (CV)"]
    rows += ["rmia (CV)", BEST_ROW]
    train_table = out.split("dev phase")[0]
    for row in rows:
        assert f"\n{row} " in train_table
    assert "final phase against the reference" in out and "track average, train phase" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((demo / CHALLENGE).glob("*/*/model_*/prediction.csv"))  # wrote nothing

    # The table's fixed rows are the plain attacks on the stored outputs (compared here without
    # the other attacks, whose rows do not touch these).
    task = load_task(demo, CHALLENGE)
    for scenario in task.scenarios:
        scores = ScenarioScores.load(demo / "preds" / CHALLENGE / scenario / SCORES_FILE)
        train = scores.phases["train"]
        result = compare_scenario(
            scores, [get_attack("loss"), get_attack("lira")], uncertainty=FAST
        )
        assert result.rows["loss"].metrics["train"] == official_score(
            train.solution, loss_attack(train.margin)
        )
        submitted = lira(
            scores.shadow_margin,
            scores.shadow_in,
            train.margin,
            train.points,
            train.shadow,
            variance="pooled",
        )
        assert result.rows[SUBMITTED_LIRA].metrics["train"] == official_score(
            train.solution, submitted
        )


@pytest.mark.parametrize("attack", ["hardness", "rmia", "loss"])
def test_demo_attack_writes_valid_predictions(demo, attack, capsys):
    args = ["--challenge", CHALLENGE, "--root", str(demo), "--attack", attack, "-q"]
    assert run_lira_mia.main(args) == 0
    assert "TPR@10%" in capsys.readouterr().out
    task = load_task(demo, CHALLENGE)
    for scenario in task.scenarios:
        for phase in ("train", "dev", "final"):
            for model in model_dirs(demo / CHALLENGE / scenario, phase):
                values = read_prediction(model, task.num_challenges)  # 2m values in [0, 1]
                assert values.shape == (task.num_challenges,)
                (model / "prediction.csv").unlink()


def test_demo_rmia_without_population(demo, tmp_path, capsys):
    preds = tmp_path / "preds"
    args = ["--challenge", CHALLENGE, "--root", str(demo), "--preds-dir", str(preds), "-q"]
    assert save_preds.main(args) == 0
    capsys.readouterr()  # save_preds warns about points with few OUT models; not checked here
    assert run_lira_mia.main([*args, "--attack", "rmia"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "--population" in err
