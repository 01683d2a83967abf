"""Tests of mico.attacks, mico.selection and mico.compare.

The attacks are checked against naive per-point references written with plain loops, lists
and ``math``; RMIA also against an example worked out by hand; the cross-validated choice
against constructed cases that would expose a look at the held-out fold.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mico.attacks import (
    HARDNESS_SCORES,
    HARDNESS_VARIANTS,
    fraction_below,
    hardness,
    hardness_calibrated,
    loss_attack,
    minmax,
    rmia,
)
from mico.lira import STD_FLOOR_REL, Z_CAP
from mico.selection import criterion, cross_validate, fold_assignment
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
    """Per (target, point): the calibrated score with plain loops, then min-max."""
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
                sd = float(np.std(pool, ddof=1)) if len(pool) >= 2 else target_std
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
    low, high = out.min(), out.max()
    return (out - low) / (high - low) if high > low else np.full(out.shape, 0.5)


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
def test_hardness_matches_naive_reference(data, score, variant):
    sm, si, tm, tp, ts = data
    got = hardness(sm, si, tm, tp, ts, score=score, variant=variant)
    want = naive_hardness(sm, si, tm, tp, ts, score, variant)
    assert got.shape == tm.shape and np.all((got >= 0) & (got <= 1))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


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
    assert criterion(solution, a) > criterion(solution, b)  # A wins with fold 0 included
    assert criterion(solution[outside], a[outside]) < criterion(solution[outside], b[outside])

    selection = cross_validate([a, b], solution)
    assert selection.chosen == 0
    assert selection.fold_choice[0] == 1
    np.testing.assert_array_equal(selection.held_out[[0, 5]], b[[0, 5]])
    for t in range(n_targets):
        choice = selection.fold_choice[selection.fold_of[t]]
        np.testing.assert_array_equal(selection.held_out[t], [a, b][choice][t])


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
    base = cross_validate(preds, solution, folds)
    for f in range(int(base.fold_of.max()) + 1):
        inside = base.fold_of == f
        preds2, solution2 = preds.copy(), solution.copy()
        preds2[:, inside] = rng.random((n_candidates, inside.sum(), k))
        solution2[inside] = _two_classes(rng, int(inside.sum()), k)
        assert cross_validate(preds2, solution2, folds).fold_choice[f] == base.fold_choice[f]
