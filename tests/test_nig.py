"""Tests of mico.attacks.nig: the NIG posterior against one-observation-at-a-time updating, the
marginal likelihood against the chain of predictives, the predictives against scipy, the
limits (pooled and per-point), and the empirical-Bayes fit of each prior family against a
derivative-free maximiser and against data simulated with known hyperparameters."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from scipy.optimize import minimize

from mico.attacks.nig import (
    PRIORS,
    NigPosterior,
    NigPrior,
    Predictive,
    PriorFit,
    fit_prior,
    log_marginal,
    posterior,
    predictive,
)

# --- naive references: one observation at a time, scipy distributions, loops ---------------


def sequential_posterior(values, prior):
    """NIG posterior by conjugate updating with one score at a time (a flat-mean prior
    takes its location from the first score and spends no shape on it)."""
    mean, kappa, alpha, beta = (float(v) for v in prior.params())
    flat = kappa == 0
    for i, x in enumerate(values):
        if flat and i == 0:
            mean, kappa = float(x), 1.0
            continue
        beta += kappa * (x - mean) ** 2 / (2 * (kappa + 1))
        mean = (kappa * mean + x) / (kappa + 1)
        kappa += 1
        alpha += 0.5
    return mean, kappa, alpha, beta


def t_logpdf(x, post):
    """Log density of the Student-t predictive of a sequential posterior tuple."""
    mean, kappa, alpha, beta = post
    scale = math.sqrt(beta * (kappa + 1) / (alpha * kappa))
    return sps.t.logpdf(x, 2 * alpha, mean, scale)


def summary(values):
    """Count, mean and sum of squared deviations of a list."""
    n = len(values)
    mean = float(np.mean(values)) if n else 0.0
    return n, mean, float(sum((v - mean) ** 2 for v in values))


priors = st.builds(
    NigPrior,
    mean=st.floats(-5, 5),
    kappa=st.sampled_from([0.0, 1e-3, 0.5, 3.0]),
    alpha=st.floats(0.05, 50.0),
    beta=st.floats(1e-3, 20.0),
)
samples = st.lists(st.floats(-20, 20, allow_nan=False), min_size=0, max_size=12)


@settings(max_examples=200, deadline=None)
@given(values=samples, prior=priors)
def test_posterior_matches_sequential_updating(values, prior):
    n, mean, ss = summary(values)
    got = posterior(np.array(n), np.array(mean), np.array(ss), prior)
    if prior.kappa == 0 and n == 0:
        assert np.isnan(got.mean) and got.kappa == 0
        return
    want = sequential_posterior(values, prior)
    np.testing.assert_allclose(
        [got.mean, got.kappa, got.alpha, got.beta], want, rtol=1e-9, atol=1e-9
    )


@settings(max_examples=150, deadline=None)
@given(values=samples.filter(lambda v: len(v) >= 2), prior=priors)
def test_log_marginal_is_the_chain_of_predictives(values, prior):
    """log p(x_1..x_n) = sum_i log p(x_i | x_<i); for a flat mean the chain starts at x_2."""
    n, mean, ss = summary(values)
    flat = prior.kappa == 0
    chain = sum(
        t_logpdf(values[i], sequential_posterior(values[:i], prior))
        for i in range(1 if flat else 0, n)
    )
    constant = -(n - 1) / 2 * math.log(2 * math.pi) - 0.5 * math.log(n) if flat else 0.0
    if not flat:
        constant = -n / 2 * math.log(2 * math.pi)
    got = float(log_marginal(np.array(n), np.array(mean), np.array(ss), prior)) + constant
    assert got == pytest.approx(chain, rel=1e-8, abs=1e-8)


def test_log_marginal_ignores_points_without_information():
    prior = NigPrior(0.0, 0.0, 2.0, 1.0)
    assert log_marginal(np.array([0, 1]), np.array([0.0, 3.0]), np.zeros(2), prior).tolist() == [
        0.0,
        0.0,
    ]


@settings(max_examples=100, deadline=None)
@given(
    df=st.floats(0.2, 400.0),
    loc=st.floats(-10, 10),
    scale=st.floats(1e-3, 10.0),
    x=st.floats(-50, 50),
)
def test_predictive_distributions_match_scipy(df, loc, scale, x):
    student = Predictive(np.array([df]), np.array([loc]), np.array([scale]))
    assert student.cdf(np.array([x]))[0] == pytest.approx(sps.t.cdf(x, df, loc, scale), abs=1e-12)
    assert student.logpdf(np.array([x]))[0] == pytest.approx(
        sps.t.logpdf(x, df, loc, scale), rel=1e-9, abs=1e-9
    )
    gauss = Predictive(np.array([np.inf]), np.array([loc]), np.array([scale]))
    assert gauss.cdf(np.array([x]))[0] == pytest.approx(sps.norm.cdf(x, loc, scale), abs=1e-12)
    assert gauss.logpdf(np.array([x]))[0] == pytest.approx(
        sps.norm.logpdf(x, loc, scale), rel=1e-9, abs=1e-9
    )


# --- limits ---------------------------------------------------------------------------------


def points(rng, n_points=40, max_n=15):
    """Random points' scores with very different variances: (n, mean, ss, lists)."""
    lists = [
        list(rng.normal(rng.normal(0, 3), math.exp(rng.normal(0, 1)), rng.integers(0, max_n)))
        for _ in range(n_points)
    ]
    n, mean, ss = (np.array(v) for v in zip(*(summary(v) for v in lists), strict=True))
    return n, mean, ss, lists


def test_overwhelming_prior_gives_the_pooled_variance():
    n, mean, ss, _ = points(np.random.default_rng(0))
    pooled = ss.sum() / np.maximum(n - 1, 0).sum()
    strong = NigPrior(0.0, 0.0, 1e12, 1e12 * pooled)
    used = n >= 1
    post = posterior(n, mean, ss, strong)
    normal = predictive(post, "normal")
    np.testing.assert_allclose(normal.scale[used], math.sqrt(pooled), rtol=1e-9)
    student = predictive(post, "t")
    np.testing.assert_allclose(student.scale[used], np.sqrt(pooled * (1 + 1 / n[used])), rtol=1e-9)
    assert np.all(student.df[used] > 1e12)
    np.testing.assert_allclose(normal.loc[used], mean[used], rtol=1e-12)


def test_vanishing_prior_gives_the_per_point_variance():
    n, mean, ss, lists = points(np.random.default_rng(1))
    weak = NigPrior(0.0, 0.0, 1e-12, 1e-12)
    post = posterior(n, mean, ss, weak)
    used = n >= 2
    per_point = np.array([np.std(v, ddof=1) if len(v) >= 2 else np.nan for v in lists])
    np.testing.assert_allclose(predictive(post, "normal").scale[used], per_point[used], rtol=1e-6)
    student = predictive(post, "t")
    np.testing.assert_allclose(student.df[used], n[used] - 1, rtol=1e-9)
    np.testing.assert_allclose(
        student.scale[used], per_point[used] * np.sqrt(1 + 1 / n[used]), rtol=1e-6
    )


def test_fit_goes_to_the_limits_the_data_call_for():
    """One common variance: the fitted prior pools; wildly different variances measured
    precisely: it barely shrinks."""
    rng = np.random.default_rng(2)
    n = np.full(3000, 12)
    common = rng.normal(0, 2.0, (3000, 12))
    ss = ((common - common.mean(1, keepdims=True)) ** 2).sum(1)
    fit = fit_prior(n, common.mean(1), ss)
    assert fit.alpha > 200 and fit.beta / fit.alpha == pytest.approx(4.0, rel=0.05)
    sigma = np.exp(rng.uniform(-4, 4, 3000))
    varied = rng.normal(0, 1, (3000, 200)) * sigma[:, None]
    ss = ((varied - varied.mean(1, keepdims=True)) ** 2).sum(1)
    assert fit_prior(np.full(3000, 200), varied.mean(1), ss).alpha < 1.0


# --- the empirical-Bayes fit -----------------------------------------------------------------


def simulate(rng, truth, n_points, n_per_point, covariate=None):
    """Scores drawn from the model with known hyperparameters (a ``PriorFit``): n, mean, ss."""
    var = truth.beta / rng.gamma(truth.alpha, 1.0, n_points)
    if truth.kappa > 0:
        centre = rng.normal(truth.prior(covariate).params()[0], np.sqrt(var / truth.kappa))
    else:
        centre = rng.normal(0, 5, n_points)
    x = rng.normal(centre[:, None], np.sqrt(var)[:, None], (n_points, n_per_point))
    mean = x.mean(1)
    return np.full(n_points, n_per_point), mean, ((x - mean[:, None]) ** 2).sum(1)


TRUTHS = {
    "flat": PriorFit(0.0, 0.0, 0.0, kappa=0.0, alpha=6.0, beta=3.0),
    "nig": PriorFit(1.5, 0.0, 0.0, kappa=0.4, alpha=6.0, beta=3.0),
    "cross": PriorFit(1.5, 0.8, 2.0, kappa=2.0, alpha=6.0, beta=3.0),
}


@pytest.mark.parametrize("family", PRIORS)
def test_fit_recovers_simulated_hyperparameters(family):
    rng = np.random.default_rng(3)
    covariate = rng.normal(2.0, 3.0, 6000)
    covariate[:300] = np.nan  # missing: the intercept alone
    truth = TRUTHS[family]
    n, mean, ss = simulate(rng, truth, 6000, 10, covariate)
    got = fit_prior(n, mean, ss, family=family, covariate=covariate)
    assert got.alpha == pytest.approx(truth.alpha, rel=0.15)
    assert got.beta / got.alpha == pytest.approx(truth.beta / truth.alpha, rel=0.05)
    assert got.kappa == pytest.approx(truth.kappa, rel=0.15, abs=1e-12)
    if family != "flat":
        assert got.prior(2.0).mean == pytest.approx(truth.prior(2.0).mean, abs=0.1)
    if family == "cross":
        assert got.slope == pytest.approx(truth.slope, rel=0.05)


def cross_covariate(mean, rng):
    """A covariate that predicts the points' means, with some missing."""
    u = mean + rng.normal(0, 1, len(mean))
    u[:10] = np.nan
    return u


@pytest.mark.parametrize("family", PRIORS)
def test_fit_maximises_the_marginal_likelihood(family):
    """No derivative-free search from the fit (or from the origin) finds a higher likelihood."""
    rng = np.random.default_rng(4)
    n, mean, ss, _ = points(rng, n_points=300)
    u = cross_covariate(mean, rng)
    got = fit_prior(n, mean, ss, family=family, covariate=u)

    def total(theta):
        a, b = math.exp(theta[0]), math.exp(theta[1])
        if family == "flat":
            fit = PriorFit(0.0, 0.0, 0.0, 0.0, a, b)
        else:
            slope = theta[4] if family == "cross" else 0.0
            fit = PriorFit(theta[2], slope, got.centre, math.exp(theta[3]), a, b)
        return float(np.sum(log_marginal(n, mean, ss, fit.prior(u))))

    start = [math.log(got.alpha), math.log(got.beta)]
    if family != "flat":
        start += [got.intercept, math.log(got.kappa)]
    if family == "cross":
        start.append(got.slope)
    best = total(start)
    for x0 in (start, [0.0] * len(start)):
        found = minimize(lambda t: -total(t), x0, method="Nelder-Mead", options={"maxiter": 8000})
        assert -found.fun <= best + 1e-6 * abs(best)


@pytest.mark.parametrize("family", PRIORS)
def test_fit_follows_an_affine_change_of_scores(family):
    rng = np.random.default_rng(5)
    n, mean, ss, _ = points(rng, n_points=200)
    u = cross_covariate(mean, rng)
    base = fit_prior(n, mean, ss, family=family, covariate=u)
    moved = fit_prior(n, 3.0 * mean - 7.0, 9.0 * ss, family=family, covariate=2.0 * u + 1.0)
    assert moved.alpha == pytest.approx(base.alpha, rel=1e-4)
    assert moved.beta == pytest.approx(9.0 * base.beta, rel=1e-4)
    assert moved.kappa == pytest.approx(base.kappa, rel=1e-4, abs=1e-12)
    here = np.array([0.5, np.nan])
    np.testing.assert_allclose(
        moved.prior(2.0 * here + 1.0).params()[0],
        3.0 * base.prior(here).params()[0] - 7.0,
        rtol=1e-4,
    )


def test_cross_without_a_covariate_fits_as_nig():
    n, mean, ss, _ = points(np.random.default_rng(6), n_points=200)
    cross = fit_prior(n, mean, ss, family="cross", covariate=np.full(len(n), np.nan))
    assert cross == fit_prior(n, mean, ss, family="nig")


def test_fit_without_spread_gives_a_prior_that_adds_none():
    fit = fit_prior(np.array([1, 3, 0]), np.array([2.0, 1.0, 0.0]), np.zeros(3), family="nig")
    assert (fit.alpha, fit.beta, fit.kappa) == (1.0, 0.0, 0.0)
    post = posterior(np.array([3]), np.array([1.0]), np.array([0.0]), fit.prior())
    assert predictive(post, "normal").scale[0] == 0.0
    assert predictive(post, "normal", floor=1e-6).scale[0] == 1e-6


def test_fit_rejects_mismatched_inputs_and_priors_bad_parameters():
    with pytest.raises(ValueError, match="one shape"):
        fit_prior(np.array([2, 3]), np.array([0.0]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="unknown prior"):
        fit_prior(np.array([2]), np.array([0.0]), np.array([1.0]), family="wishart")
    with pytest.raises(ValueError, match="alpha > 0"):
        NigPrior(0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="kappa >= 0"):
        NigPrior(0.0, -1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="unknown predictive"):
        predictive(NigPosterior(*(np.ones(1),) * 4), "cauchy")
