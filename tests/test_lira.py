"""Tests of mico.attacks.lira and mico.attacks.stats against a naive per-point reference written
with plain loops."""

import itertools
import math
import statistics

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from mico.attacks.lira import TRANSFORMS, lira
from mico.attacks.signals import transform_margin
from mico.attacks.stats import STD_FLOOR_REL, VARIANCES, inout_stats

COMBOS = list(itertools.product(TRANSFORMS, VARIANCES, [False, True]))
COMBO_IDS = [f"{t}-{v}-{'online' if o else 'offline'}" for t, v, o in COMBOS]


# --- naive reference: loops, lists, exact variances, scipy.stats.norm ----------------------


def ref_sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def ref_transform(z, transform):
    z = float(z)
    if transform == "prob":
        return ref_sigmoid(z)
    if transform == "logit":
        p = min(max(ref_sigmoid(z), np.finfo(np.float64).tiny), 1.0 - 2.0**-53)
        return math.log(p / (1.0 - p))
    return z


def ref_pooled_var(groups):
    """Pooled within-group variance of lists of scores, None where undefined.

    ``statistics.variance`` is exact (rational arithmetic, rounded once): equal scores give 0,
    where ``np.var`` may give 1e-34 from the rounding of their mean, and the fallback chain
    treats a zero variance (undefined scale, 1.0) and a tiny one (a tiny scale) differently.
    """
    num = sum(statistics.variance(g) * (len(g) - 1) for g in groups if len(g) >= 2)
    den = sum(len(g) - 1 for g in groups if len(g) >= 2)
    return num / den if den else None


def naive_lira(sm, si, tm, tp, ts, transform, variance, online, scale_out=None):
    """The attack point by point; ``scale_out`` (an array of ``tm``'s shape), if given,
    receives the size of the Gaussian log-density terms behind each online ratio."""
    n_shadows, n_points = sm.shape
    x = [[ref_transform(sm[s, p], transform) for p in range(n_points)] for s in range(n_shadows)]
    result = np.empty(tm.shape)
    for t in range(tm.shape[0]):
        own = -1 if ts is None else int(ts[t])
        shadows = [s for s in range(n_shadows) if s != own]

        def scores(p, member, shadows=shadows):
            return [x[s][p] for s in shadows if bool(si[s, p]) == member]

        def side(member, t=t):
            scenario = ref_pooled_var([scores(p, member) for p in range(n_points)])
            scale = math.sqrt(scenario) if scenario else 1.0
            groups = [scores(int(p), member) for p in tp[t]]
            if variance == "pooled":
                every = [v for g in groups for v in g]
                pooled = statistics.variance(every) if len(every) >= 2 else None
            else:
                pooled = ref_pooled_var(groups)
            target_std = math.sqrt(pooled) if pooled is not None else scale
            stats = []
            for g in groups:
                mu = float(np.mean(g)) if g else None
                sd = statistics.stdev(g) if len(g) >= 2 and variance == "per-point" else target_std
                floor = STD_FLOOR_REL * max(abs(mu) if g else 0.0, scale)
                stats.append((len(g), mu, max(sd, floor)))
            return stats

        outs, ins = side(False), side(True)
        for k in range(tm.shape[1]):
            y = ref_transform(tm[t, k], transform)
            n_out, mu_out, sd_out = outs[k]
            n_in, mu_in, sd_in = ins[k]
            if n_out == 0:
                result[t, k] = 0.5
            elif not online or n_in == 0:
                result[t, k] = norm.cdf(y, mu_out, sd_out)
            else:
                terms = norm.logpdf(y, mu_in, sd_in), norm.logpdf(y, mu_out, sd_out)
                result[t, k] = ref_sigmoid(terms[0] - terms[1])
                if scale_out is not None:
                    scale_out[t, k] = max(abs(terms[0]), abs(terms[1]))
    return result


# --- random scenarios ---------------------------------------------------------------------


@st.composite
def scenarios(draw, max_shadows=7):
    """Small scenario-phase arrays covering ties, 0/1-model points and train-phase targets."""
    n_shadows = draw(st.integers(1, max_shadows))
    n_points = draw(st.integers(1, 8))
    n_targets = draw(st.integers(1, 4))
    k = draw(st.integers(1, min(n_points, 5)))
    values = draw(st.sampled_from(["normal", "discrete", "extreme", "offset"]))
    in_rate = draw(st.sampled_from([0.0, 0.2, 0.5, 0.8, 1.0]))
    phase = draw(st.sampled_from(["dev", "train", "mixed"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def margins(shape):
        if values == "normal":
            return rng.normal(0.0, 3.0, shape)
        if values == "discrete":
            return rng.choice([-2.0, 0.0, 0.5, 3.0], shape)
        if values == "extreme":
            return rng.choice([-1e3, -50.0, -1.0, 0.0, 2.0, 50.0, 1e3], shape)
        return 5.0 + 1e-4 * rng.normal(size=shape)

    sm = margins((n_shadows, n_points))
    si = rng.random((n_shadows, n_points)) < in_rate
    tp = np.stack([rng.choice(n_points, k, replace=False) for _ in range(n_targets)])
    tm = margins((n_targets, k))
    ts = None
    if phase != "dev":
        ts = rng.integers(0, n_shadows, n_targets)
        if phase == "mixed":
            ts[rng.random(n_targets) < 0.5] = -1
        for t in np.flatnonzero(ts >= 0):
            if rng.random() < 0.5:  # a train target's margins are its shadow row's
                tm[t] = sm[ts[t], tp[t]]
    return sm, si, tm, tp, ts


#: Both sides of point 0 at the std floor, their log-densities (1e12) cancelling to log 1.5.
FLOORED = (
    np.array([[3, 0.5], [3, 0], [-2, 3], [-2, 0.5], [-2, 3]]),
    np.array([[0, 0], [0, 0], [1, 1], [0, 0], [1, 0]], dtype=bool),
    np.array([[-2.0], [0.0]]),
    np.array([[0], [0]]),
    np.array([3, 3]),
)

#: Found by hypothesis: every IN side with two or more models holds equal margins (0, 0 at
#: point 1; -2, -2, -2 at point 3), so the IN scenario variance is exactly 0 and the IN std of
#: point 7 (one IN model) falls back to 1.0 (online prob per-point: 0.239).  ``np.var`` of
#: three equal sigmoids is 2.9e-34 (the rounding of their mean), which made the reference's
#: scale tiny and its confidence 0.99999.
EQUAL_INS = (
    np.array(
        [
            [0, 0, 3, 0, 3, 3, 0.5, -2],
            [3, 0, 3, -2, -2, 3, 0, 0],
            [0, 0.5, 0.5, -2, 0.5, 0.5, 0, 0],
            [3, 0, 0.5, -2, -2, 3, -2, -2],
            [0.5, -2, 3, 3, 3, 0, -2, 3],
            [0, 0, -2, 3, -2, 3, 3, 0],
            [0.5, 0.5, -2, 0.5, 0.5, 0, 3, 0],
        ]
    ),
    np.array(
        [
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 1, 1, 1, 0, 0, 0, 0],
            [0, 0, 0, 1, 0, 0, 0, 1],
            [0, 0, 0, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 1, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
        ],
        dtype=bool,
    ),
    np.array([[0.0, 3.0, 0.0]]),
    np.array([[6, 0, 7]]),
    None,
)


@pytest.mark.parametrize(("transform", "variance", "online"), COMBOS, ids=COMBO_IDS)
@settings(max_examples=40, deadline=None)
@given(data=scenarios())
@example(data=FLOORED)
@example(data=EQUAL_INS)
def test_matches_naive_reference(data, transform, variance, online):
    sm, si, tm, tp, ts = data
    got = lira(sm, si, tm, tp, ts, transform=transform, variance=variance, online=online)
    terms = np.zeros(tm.shape)
    want = naive_lira(sm, si, tm, tp, ts, transform, variance, online, terms)
    # Where both sides' std sits at its floor, each log-density is about 1e12 and their
    # difference keeps only the digits that rounding in the means leaves (a change of one ulp in
    # a mean moves the ratio by about 1e-4): the tolerance grows with the terms' size, and stays
    # 1e-9 wherever they are of ordinary size.
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 + 1e-15 * terms.max())


@settings(max_examples=40, deadline=None)
@given(data=scenarios())
def test_leaving_target_out_equals_deleting_its_row(data):
    """A train target's confidences equal those computed with its shadow row deleted."""
    sm, si, tm, tp, ts = data
    if ts is None or (ts < 0).all() or sm.shape[0] < 2:
        return
    for transform, variance, online in COMBOS:
        flags = {"transform": transform, "variance": variance, "online": online}
        got = lira(sm, si, tm, tp, ts, **flags)
        for t in np.flatnonzero(ts >= 0):
            rest = np.delete(np.arange(sm.shape[0]), ts[t])
            want = lira(sm[rest], si[rest], tm[t : t + 1], tp[t : t + 1], **flags)
            np.testing.assert_allclose(got[t], want[0], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("transform", "variance", "online"), COMBOS, ids=COMBO_IDS)
@settings(max_examples=25, deadline=None)
@given(data=scenarios())
def test_output_finite_in_unit_interval(data, transform, variance, online):
    sm, si, tm, tp, ts = data
    tm = np.where(np.arange(tm.size).reshape(tm.shape) % 2, 1e3, -1e3)
    got = lira(sm, si, tm, tp, ts, transform=transform, variance=variance, online=online)
    assert got.shape == tm.shape and got.dtype == np.float64
    assert np.all(np.isfinite(got)) and np.all((got >= 0) & (got <= 1))


# --- constructed cases --------------------------------------------------------------------


def test_target_is_not_its_own_shadow():
    # One point, three OUT shadows; shadow 0 is the target and scores far above the others.
    sm = np.array([[5.0], [-1.0], [1.0]])
    si = np.zeros((3, 1), dtype=bool)
    tm, tp = np.array([[5.0]]), np.array([[0]])
    got = lira(sm, si, tm, tp, np.array([0]), transform="stable_logit")
    np.testing.assert_allclose(got, [[norm.cdf(5.0, 0.0, math.sqrt(2.0))]], rtol=1e-12)
    included = norm.cdf(5.0, np.mean([5.0, -1.0, 1.0]), np.std([5.0, -1.0, 1.0], ddof=1))
    assert abs(got[0, 0] - included) > 0.1


def test_outlier_target_removed_precisely():
    # Others cluster within 1e-7; the target row is 1e3 away. Subtracting its contribution
    # from sums over all shadows would cancel catastrophically: must still be exact.
    rng = np.random.default_rng(3)
    n_shadows, n_points = 8, 6
    sm = 0.3 + 1e-7 * rng.normal(size=(n_shadows, n_points))
    sm[0] = 1e3
    si = np.zeros((n_shadows, n_points), dtype=bool)
    si[1:3, :3] = True
    tp = np.array([[0, 1, 2, 3], [2, 3, 4, 5]])
    tm = 0.3 + 1e-7 * rng.normal(size=tp.shape)
    ts = np.array([0, 0])
    for transform, variance, online in COMBOS:
        flags = {"transform": transform, "variance": variance, "online": online}
        got = lira(sm, si, tm, tp, ts, **flags)
        want = lira(sm[1:], si[1:], tm, tp, **flags)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(
            got, naive_lira(sm, si, tm, tp, ts, *flags.values()), rtol=1e-9, atol=1e-12
        )


def test_scenario_fallback_leaves_outlier_target_out():
    # The target's own points have one OUT model each (after removing the target), so its
    # std falls back to the scenario-wide pooled std, which its outlier row must not inflate.
    sm = np.array([[1e3, 1e3, 1e3, 1e3], [0.0, 1.0, 2.0, 2.5], [9.0, 9.0, 2.3, 2.1]])
    si = np.zeros(sm.shape, dtype=bool)
    si[2, :2] = True
    tm, tp, ts = np.array([[0.5, 1.5]]), np.array([[0, 1]]), np.array([0])
    got = lira(sm, si, tm, tp, ts, transform="stable_logit")
    scale = math.sqrt(ref_pooled_var([[2.0, 2.3], [2.5, 2.1]]))
    np.testing.assert_allclose(got, norm.cdf([[0.5, 0.5]], 0.0, scale), rtol=1e-9)
    stats = inout_stats(sm, si, tp, ts)
    np.testing.assert_allclose(stats.scenario_var_out, [scale**2], rtol=1e-9)


def test_std_fallback_chain():
    # Point 0 has three OUT models (variance 1), point 1 only one: point 1 borrows the
    # target's pooled std, 1.0.
    sm = np.array([[0.0, 5.0], [1.0, 7.0], [2.0, 7.0]])
    si = np.array([[False, False], [False, True], [False, True]])
    tm, tp = np.array([[0.5, 6.0]]), np.array([[0, 1]])
    got = lira(sm, si, tm, tp, transform="stable_logit")
    np.testing.assert_allclose(got, [[norm.cdf(-0.5), norm.cdf(1.0)]], rtol=1e-12)

    # A single shadow: no variance anywhere, so the std is 1.0.
    got = lira(sm[:1], si[:1], tm, tp, transform="stable_logit")
    np.testing.assert_allclose(got, [[norm.cdf(0.5), norm.cdf(1.0)]], rtol=1e-12)


def test_points_without_models():
    sm = np.array([[0.0, 1.0], [1.0, 2.0], [3.0, 0.0]])
    si = np.array([[True, False], [True, False], [True, False]])
    tm, tp = np.array([[2.0, 0.3]]), np.array([[0, 1]])
    offline = lira(sm, si, tm, tp, transform="stable_logit")
    online = lira(sm, si, tm, tp, transform="stable_logit", online=True)
    assert offline[0, 0] == 0.5 and online[0, 0] == 0.5  # no OUT model at point 0
    assert online[0, 1] == offline[0, 1]  # no IN model at point 1: offline confidence
    np.testing.assert_allclose(offline[0, 1], norm.cdf(0.3, 1.0, 1.0), rtol=1e-12)


@pytest.mark.parametrize("online", [False, True])
def test_zero_variance_points(online):
    # Saturated probabilities: every shadow gives p = 1.0 exactly.
    sm = np.full((5, 3), 60.0)
    si = np.array([[True, False, False]] * 3 + [[False, True, False]] * 2)
    tm, tp = np.array([[60.0, 60.0, 2.0]]), np.array([[0, 1, 2]])
    got = lira(sm, si, tm, tp, online=online)
    assert np.all(np.isfinite(got))
    np.testing.assert_array_equal(got[0, :2], [0.5, 0.5])
    assert got[0, 2] < 1e-12  # p = 0.88 is far below the OUT models' 1.0


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("variance", VARIANCES)
def test_offline_monotone_in_target_score(transform, variance):
    rng = np.random.default_rng(7)
    sm = rng.normal(1.0, 2.0, (12, 3))
    si = rng.random((12, 3)) < 0.5
    tm = np.linspace(-8.0, 8.0, 201)[None, :]
    tp = np.zeros(tm.shape, dtype=np.int64)
    got = lira(sm, si, tm, tp, transform=transform, variance=variance)[0]
    assert np.all(np.diff(got) >= 0)
    inner = (got[:-1] > 1e-12) & (got[1:] < 1 - 1e-12)
    assert np.all(np.diff(got)[inner] > 0)


def test_logit_saturates_stable_logit_does_not():
    moderate = np.linspace(-10.0, 10.0, 41)
    np.testing.assert_allclose(
        transform_margin(moderate, "logit"), transform_margin(moderate, "stable_logit"), rtol=1e-9
    )
    big = np.array([50.0, -1e3, 1e3])
    logit = transform_margin(big, "logit")
    assert np.all(np.isfinite(logit))
    np.testing.assert_allclose(logit, [math.log(2.0**53 - 1), math.log(2.0**-1022), 36.7368], 1e-5)
    np.testing.assert_array_equal(transform_margin(big, "stable_logit"), big)

    # The attack agrees on moderate margins and disagrees once the logit saturates.
    rng = np.random.default_rng(1)
    sm, si = rng.normal(0.0, 3.0, (10, 4)), rng.random((10, 4)) < 0.5
    tp = np.array([[0, 1, 2, 3]])
    tm = np.array([[-2.0, 0.0, 3.0, 5.0]])
    a = lira(sm, si, tm, tp, transform="logit")
    b = lira(sm, si, tm, tp, transform="stable_logit")
    np.testing.assert_allclose(a, b, rtol=1e-9)
    sm = 45.0 + rng.normal(0.0, 3.0, (10, 4))
    a = lira(sm, si, tm + 45.0, tp, transform="logit")
    b = lira(sm, si, tm + 45.0, tp, transform="stable_logit")
    assert np.all(np.isfinite(a)) and not np.allclose(a, b)


def test_transform_margin_matches_scalar_reference():
    z = np.concatenate([np.linspace(-40.0, 40.0, 161), [-745.0, -700.0, 700.0, 1e3]])
    for transform in TRANSFORMS:
        want = [ref_transform(v, transform) for v in z]
        np.testing.assert_allclose(transform_margin(z, transform), want, rtol=1e-12, atol=1e-300)
    assert transform_margin(np.array([-1e3]), "prob")[0] == 0.0


def test_inout_stats_conventions():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 3))
    si = np.array([[True, False, True]] * 5 + [[False, False, True]])
    stats = inout_stats(x, si, np.array([[0, 1, 2]]), np.array([5]))
    np.testing.assert_array_equal(stats.n_in, [[5, 0, 5]])
    np.testing.assert_array_equal(stats.n_out, [[0, 5, 0]])
    np.testing.assert_allclose(stats.var_in[0, [0, 2]], np.var(x[:5][:, [0, 2]], 0, ddof=1))
    np.testing.assert_allclose(stats.mean_out[0, 1], np.mean(x[:5, 1]))
    assert np.isnan(stats.mean_out[0, 0]) and np.isnan(stats.var_in[0, 1])
    np.testing.assert_allclose(stats.pooled_var_out, [np.var(x[:5, 1], ddof=1)])
    for side in ("in", "out"):
        for variance in VARIANCES:
            std = stats.std(side, variance)
            assert std.shape == (1, 3) and np.all(np.isfinite(std) & (std > 0))
    with pytest.raises(ValueError, match="side"):
        stats.std("both")
    with pytest.raises(ValueError, match="unknown variance"):
        stats.std("in", "global")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"transform": "softmax"}, "unknown transform"),
        ({"shadow_in": np.zeros((3, 4))}, "boolean"),
        ({"shadow_in": np.zeros((3, 5), dtype=bool)}, "shape"),
        ({"target_points": np.array([[0, 4]])}, "index the 4"),
        ({"target_points": np.array([[0.0, 1.0]])}, "integer"),
        ({"target_shadow": np.array([3])}, "target_shadow"),
        ({"target_shadow": np.array([-2])}, "target_shadow"),
        ({"target_shadow": np.array([0, 1])}, "target_shadow"),
        ({"target_margin": np.array([[np.nan, 0.0]])}, "finite"),
        ({"shadow_margin": np.full((3, 4), np.inf)}, "finite"),
        ({"target_margin": np.zeros((1, 3))}, "shape"),
        ({"shadow_margin": np.zeros((0, 4)), "shadow_in": np.zeros((0, 4), bool)}, "shadow"),
    ],
)
def test_invalid_inputs_raise(change, message):
    args = {
        "shadow_margin": np.zeros((3, 4)),
        "shadow_in": np.zeros((3, 4), dtype=bool),
        "target_margin": np.zeros((1, 2)),
        "target_points": np.array([[0, 1]]),
        "target_shadow": None,
        "transform": "prob",
    }
    args.update(change)
    with pytest.raises(ValueError, match=message):
        lira(**args)
