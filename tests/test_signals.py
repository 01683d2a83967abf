"""Tests of mico.attacks.signals: each shared signal against a naive loop written here, each
attack's output equal to what the shared function gives, and no second copy of a formula in
an attack module (the source check at the end)."""

from __future__ import annotations

import ast
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit
from scipy.stats import norm

from mico.attacks.combine import lira_log_ratio
from mico.attacks.hardness import HARDNESS_SCORES, hardness_score
from mico.attacks.lira import lira
from mico.attacks.reference import reference_attack
from mico.attacks.rmia import rmia_inputs
from mico.attacks.rmia_online import online_inputs
from mico.attacks.signals import (
    STD_FLOOR_REL,
    TRANSFORMS,
    gaussian_cdf,
    gaussian_log_ratio,
    inout_stats,
    population_log_ratio,
    reference_stats,
    transform_margin,
)
from tests.test_attacks import TINY, ref_log_sigmoid, with_population
from tests.test_lira import ref_transform, scenarios

ATTACKS_DIR = Path(__file__).resolve().parents[1] / "mico" / "attacks"


@settings(max_examples=40, deadline=None)
@given(z=st.lists(st.floats(-800, 800), min_size=1, max_size=20))
def test_transforms_match_naive_math(z):
    margin = np.array(z)
    for transform in TRANSFORMS:
        got = transform_margin(margin, transform)
        if transform == "log_prob":
            want = [ref_log_sigmoid(v) for v in z]
        else:
            want = [ref_transform(v, transform) for v in z]
        # "logit" is log(p / (1 - p)) from the float64 p, as the original computed it: one ulp
        # of p near 0.5 moves it by about 4e-16 absolute, so near z = 0 only an absolute
        # tolerance holds (hypothesis found z = -6.1e-5, off by 1.1e-16).
        atol = 1e-14 if transform == "logit" else 1e-300
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=atol, err_msg=transform)
    with pytest.raises(ValueError, match="unknown transform"):
        transform_margin(margin, "bogus")


def test_hardness_scores_are_shared_transforms():
    z = np.linspace(-40, 40, 81)
    names = {"loss": "log_prob", "prob": "prob", "margin": "stable_logit"}
    assert set(HARDNESS_SCORES) == set(names)
    for score, transform in names.items():
        np.testing.assert_array_equal(hardness_score(z, score), transform_margin(z, transform))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_gaussian_tests_match_scipy(seed):
    rng = np.random.default_rng(seed)
    y, m_in, m_out = rng.normal(0, 3, (3, 5, 4))
    s_in, s_out = rng.uniform(0.1, 3, (2, 5, 4))
    want = norm.logpdf(y, m_in, s_in) - norm.logpdf(y, m_out, s_out)
    np.testing.assert_allclose(gaussian_log_ratio(y, m_in, s_in, m_out, s_out), want, rtol=1e-9)
    np.testing.assert_allclose(gaussian_cdf(y, m_out, s_out), norm.cdf(y, m_out, s_out))


def naive_reference_side(scores, member, valid, per_point):
    """Per target and point: (mean, std) of one side of its references, with a plain loop;
    per-point std (ddof=1) where the point has 2 on that side, else the pooled within-point
    std over the target's points; floored as every std is."""
    n_targets, n_refs, k = scores.shape
    side = [
        [
            [scores[t, r, p] for r in range(n_refs) if valid[t, r, p] and member[t, r, p]]
            for p in range(k)
        ]
        for t in range(n_targets)
    ]
    every = [g for groups in side for g in groups]
    scenario_num = sum(statistics.variance(g) * (len(g) - 1) for g in every if len(g) >= 2)
    scenario_den = sum(len(g) - 1 for g in every if len(g) >= 2)
    scale = math.sqrt(scenario_num / scenario_den) if scenario_den and scenario_num else 1.0
    mean, std = np.zeros((n_targets, k)), np.zeros((n_targets, k))
    for t, groups in enumerate(side):
        num = sum(statistics.variance(g) * (len(g) - 1) for g in groups if len(g) >= 2)
        den = sum(len(g) - 1 for g in groups if len(g) >= 2)
        pooled = math.sqrt(num / den) if den else scale
        for p, g in enumerate(groups):
            mean[t, p] = np.mean(g) if g else 0.0
            sd = statistics.stdev(g) if per_point and len(g) >= 2 else pooled
            std[t, p] = max(sd, STD_FLOOR_REL * max(abs(mean[t, p]), scale))
    return mean, std


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), transform=st.sampled_from(["stable_logit", "prob"]))
def test_reference_attack_is_the_shared_llr_on_a_naive_loop(seed, transform):
    """The reference attack's statistics (with invalid entries) against a loop, and its
    online, offline and midpoint tests against the shared Gaussian functions."""
    rng = np.random.default_rng(seed)
    t, r, k = 3, 6, 5
    inside = rng.random((t, r, k)) < 0.5
    margin = rng.normal(0, 3, (t, r, k)) + 2.0 * inside
    margin[:, :, 0] = 60.0  # saturated probabilities: the std floor
    valid = rng.random((t, r, k)) < 0.8
    target = rng.normal(0, 3, (t, k))
    x, refs = transform_margin(target, transform), transform_margin(margin, transform)
    stats = reference_stats(refs, inside, valid)
    for variance, kind in (("pooled", "pooled-within"), ("per-point", "per-point")):
        per_point = variance == "per-point"
        m_in, s_in = naive_reference_side(refs, inside, valid, per_point)
        m_out, s_out = naive_reference_side(refs, ~inside, valid, per_point)
        np.testing.assert_allclose(np.nan_to_num(stats.mean_in), m_in, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(stats.std("in", kind), s_in, rtol=1e-9)
        np.testing.assert_allclose(stats.std("out", kind), s_out, rtol=1e-9)
        args = dict(valid=valid, transform=transform, variance=variance)
        llr = gaussian_log_ratio(x, m_in, s_in, m_out, s_out)
        np.testing.assert_allclose(
            reference_attack(target, margin, inside, test="online", **args),
            expit(np.clip(llr, -700, 700)),
            rtol=1e-7,
            atol=1e-12,
        )
        np.testing.assert_allclose(
            reference_attack(target, margin, inside, test="offline", **args),
            norm.cdf(x, m_out, s_out),
            rtol=1e-7,
            atol=1e-12,
        )


@settings(max_examples=40, deadline=None)
@given(data=scenarios(max_shadows=8), seed=st.integers(0, 2**32 - 1))
def test_population_log_ratio_and_the_attacks_that_read_it(data, seed):
    """Pr(z) with the target left out against a loop; offline and online RMIA's prepared
    ratios are exactly the shared function's."""
    sm, si, tm, tp, ts = data
    spop, tpop = with_population(data, seed, 4)
    for tau in (1.0, 4.0):
        got = population_log_ratio(spop, tpop, ts, tau=tau)
        for t in range(tpop.shape[0]):
            rows = [s for s in range(sm.shape[0]) if ts is None or s != ts[t]]
            for q in range(spop.shape[1]):
                if not rows:
                    assert got[t, q] == 0.0
                    continue
                pr_z = sum(math.exp(ref_log_sigmoid(spop[s, q] / tau)) for s in rows) / len(rows)
                want = ref_log_sigmoid(tpop[t, q] / tau) - math.log(max(pr_z, TINY))
                assert got[t, q] == pytest.approx(want, rel=1e-9, abs=1e-9)
    prepared = rmia_inputs(sm, si, tm, tp, spop, tpop, ts)
    np.testing.assert_array_equal(prepared.log_ratio_z, population_log_ratio(spop, tpop, ts))
    if ts is None or sm.shape[0] >= 2:
        online = online_inputs(sm, si, tm, tp, spop, tpop, ts, tau=4.0)
        np.testing.assert_array_equal(
            online.log_ratio_z, population_log_ratio(spop, tpop, ts, tau=4.0)
        )


@settings(max_examples=40, deadline=None)
@given(data=scenarios())
def test_lira_and_combine_use_the_shared_llr(data):
    """LiRA's online confidence is the sigmoid of the shared log ratio, its offline one the
    shared CDF, and the combiner's LiRA feature the same log ratio."""
    sm, si, tm, tp, ts = data
    for transform in ("prob", "stable_logit"):
        stats = inout_stats(transform_margin(sm, transform), si, tp, ts)
        y = transform_margin(tm, transform)
        s_in, s_out = stats.std("in"), stats.std("out")
        llr = gaussian_log_ratio(y, stats.mean_in, s_in, stats.mean_out, s_out)
        both = (stats.n_in > 0) & (stats.n_out > 0)
        offline = np.where(stats.n_out > 0, gaussian_cdf(y, stats.mean_out, s_out), 0.5)
        online = np.where(both, expit(llr), np.where(stats.n_out > 0, offline, 0.5))
        np.testing.assert_array_equal(lira(sm, si, tm, tp, ts, transform=transform), offline)
        np.testing.assert_array_equal(
            lira(sm, si, tm, tp, ts, transform=transform, online=True), online
        )
        np.testing.assert_array_equal(
            lira_log_ratio(sm, si, tm, tp, ts, transform), np.where(both, llr, 0.0)
        )


#: Names only mico/attacks/signals.py may define, and scipy's transforms only it (and the
#: NIG module's Student-t, and the published code reproduced in original.py) may import.
SHARED_DEFINITIONS = {
    "transform_margin",
    "gaussian_log_ratio",
    "gaussian_cdf",
    "trimmed_side_means",
    "population_log_ratio",
    "reference_stats",
}
TRANSFORM_IMPORTS = {"log_expit", "ndtr", "ndtri", "log_ndtr"}
MAY_IMPORT_TRANSFORMS = {"signals.py", "nig.py", "original.py"}


def test_no_attack_module_keeps_a_copy_of_a_shared_signal():
    for path in sorted(ATTACKS_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and path.name != "signals.py":
                assert node.name not in SHARED_DEFINITIONS, f"{path.name} defines {node.name}"
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == "scipy.special"
                and path.name not in MAY_IMPORT_TRANSFORMS
            ):
                names = {alias.name for alias in node.names} & TRANSFORM_IMPORTS
                assert not names, f"{path.name} imports {names}: use mico.attacks.signals"
        text = path.read_text()
        if path.name not in {"signals.py", "original.py"}:
            # The Gaussian log-likelihood ratio's tell-tale: half the difference of squares.
            assert "z_out * z_out" not in text and "z_out**2" not in text, path.name
