"""Normal-inverse-gamma (NIG) conjugate analysis of per-point scores, and its empirical-Bayes fit.

The model of one side (IN or OUT) of a scenario's challenge points (Murphy, "Conjugate
Bayesian analysis of the Gaussian distribution", 2007, for the algebra)::

    sigma_p^2            ~ InvGamma(alpha0, beta0)
    mu_p | sigma_p^2     ~ N(m0_p, sigma_p^2 / kappa0)      kappa0 = 0: flat prior on mu_p
    x_pi | mu_p, sigma_p ~ N(mu_p, sigma_p^2)               shadow i's score at point p

Posterior from a point's sufficient statistics (n scores, mean xbar, ss = sum of squared
deviations from xbar), :func:`posterior`::

    kappa0 > 0:  kappa_n = kappa0 + n      m_n = (kappa0 m0 + n xbar) / kappa_n
                 alpha_n = alpha0 + n / 2  beta_n = beta0 + ss / 2
                                                    + kappa0 n (xbar - m0)^2 / (2 kappa_n)
    kappa0 = 0:  kappa_n = n   m_n = xbar   alpha_n = alpha0 + (n - 1) / 2   beta_n = beta0 + ss / 2

(a flat prior on the mean spends one degree of freedom on it, as ddof=1 does). Posterior
predictives of a new score, :func:`predictive`:

* ``"t"``: Student-t, ``2 alpha_n`` degrees of freedom, location ``m_n``, scale
  ``sqrt(beta_n (kappa_n + 1) / (alpha_n kappa_n))``;
* ``"normal"`` (the stabilised Gaussian): ``N(m_n, beta_n / alpha_n)``. With a flat mean and
  a vanishing prior (alpha0, beta0 -> 0) it is the per-point Gaussian with the ddof=1
  variance; with an overwhelming one (alpha0 -> inf, beta0 / alpha0 = v) its variance is v.

Prior families (:data:`PRIORS`), fitted by empirical Bayes in :func:`fit_prior`:

* ``flat``: flat mean, only the variance prior ``(alpha0, beta0)`` is fitted (restricted
  likelihood of the within-point sums of squares);
* ``nig``: one ``m0`` for all points, and ``kappa0``, fitted as well (full marginal likelihood);
* ``cross``: as ``nig``, but each point's prior mean follows a covariate of the point, linearly:
  ``m0_p = intercept + slope * (u_p - centre)`` (``u_p`` missing: ``intercept``). Used with
  the *other* side's mean at the same point (:mod:`mico.attacks.bayes`): a point's few OUT
  scores borrow strength from its many IN ones, since the same points are hard for both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import digamma, gammaln, ndtr, stdtr

from mico.attacks.signals import standardise
from mico.errors import InputError

#: Prior families, see the module docstring.
PRIORS: tuple[str, ...] = ("flat", "nig", "cross")

#: The two posterior predictives of the module docstring.
PREDICTIVES: tuple[str, ...] = ("t", "normal")

#: Bounds of the fit, in units of the pooled within-point variance and of its std: from a
#: prior worth 0.02 pseudo-observations of the variance (per-point) to 2e7 (pooled).
_BOUNDS = {
    "log_alpha": (np.log(1e-2), np.log(1e7)),
    "log_ratio": (-30.0, 30.0),
    "mean": (-1e4, 1e4),
    "log_kappa": (np.log(1e-8), np.log(1e6)),
    "slope": (-1e4, 1e4),
}
_PARAMS = {
    "flat": ("log_alpha", "log_ratio"),
    "nig": ("log_alpha", "log_ratio", "mean", "log_kappa"),
    "cross": ("log_alpha", "log_ratio", "mean", "log_kappa", "slope"),
}
_OPTIONS = {"ftol": 1e-15, "gtol": 1e-10, "maxiter": 1000}


@dataclass(frozen=True)
class NigPrior:
    """NIG hyperparameters; each a float or an array broadcasting against the points it is
    used with (e.g. ``kappa [T, 1]``, one per target; ``mean [T, K]``, one per point).

    ``kappa = 0`` is the flat prior on the mean; ``beta = 0`` is allowed for scores without
    any within-point spread (posterior variance 0 where a point has none either: the caller's
    std floor decides).
    """

    mean: float | np.ndarray
    kappa: float | np.ndarray
    alpha: float | np.ndarray
    beta: float | np.ndarray

    def __post_init__(self) -> None:
        _, kappa, alpha, beta = self.params()
        if not (np.all(kappa >= 0) and np.all(alpha > 0) and np.all(beta >= 0)):
            raise InputError(
                "a normal-inverse-gamma prior needs kappa >= 0, alpha > 0 and beta >= 0, got "
                f"kappa={self.kappa}, alpha={self.alpha}, beta={self.beta}"
            )

    def params(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(mean, kappa, alpha, beta)`` as float64 arrays."""
        mean, kappa, alpha, beta = (
            np.asarray(v, dtype=np.float64) for v in (self.mean, self.kappa, self.alpha, self.beta)
        )
        return mean, kappa, alpha, beta


@dataclass(frozen=True)
class NigPosterior:
    """Posterior NIG parameters per point (same shapes): ``mean`` m_n, ``kappa`` kappa_n,
    ``alpha`` alpha_n, ``beta`` beta_n."""

    mean: np.ndarray
    kappa: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray


@dataclass(frozen=True)
class PriorFit:
    """A fitted prior family: ``m0 = intercept + slope * (u - centre)`` (``slope`` 0 unless
    ``cross``), ``kappa``, ``alpha``, ``beta`` as in :class:`NigPrior`."""

    intercept: float
    slope: float
    centre: float
    kappa: float
    alpha: float
    beta: float

    def prior(self, covariate: np.ndarray | None = None) -> NigPrior:
        """The prior of points with this ``covariate`` (any shape; NaN: missing)."""
        if covariate is None or self.slope == 0:
            return NigPrior(self.intercept, self.kappa, self.alpha, self.beta)
        u = np.asarray(covariate, dtype=np.float64)
        mean = self.intercept + self.slope * np.where(np.isfinite(u), u - self.centre, 0.0)
        return NigPrior(mean, self.kappa, self.alpha, self.beta)


def sufficient(n: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Sum of squared deviations ``ss`` from a count and a ddof=1 variance (NaN where n < 2,
    as :class:`mico.attacks.stats.InOutStats` stores it): 0 where n < 2."""
    n = np.asarray(n)
    return np.where(n >= 2, np.nan_to_num(np.asarray(var, dtype=np.float64)) * (n - 1), 0.0)


def posterior(n: np.ndarray, mean: np.ndarray, ss: np.ndarray, prior: NigPrior) -> NigPosterior:
    """Posterior parameters of points with ``n`` scores of mean ``mean`` (any value where n = 0)
    and sum of squared deviations ``ss`` (all broadcast together and with the prior's arrays).

    With ``kappa0 = 0`` a point with ``n = 0`` has no location (``mean`` NaN, ``kappa`` 0);
    callers give such points their own fallback, as LiRA does.
    """
    m0, k0, a0, b0 = prior.params()
    n = np.asarray(n, dtype=np.float64)
    xbar = np.where(n > 0, np.nan_to_num(np.asarray(mean, dtype=np.float64)), 0.0)
    ss = np.asarray(ss, dtype=np.float64)
    flat = k0 == 0
    kn = k0 + n
    safe_kn = np.where(kn > 0, kn, 1.0)
    mn = np.where(flat, np.where(n > 0, xbar, np.nan), (k0 * m0 + n * xbar) / safe_kn)
    an = a0 + np.where(flat, np.maximum(n - 1, 0), n) / 2
    shrink = np.where(flat, 0.0, k0 * n / safe_kn)
    bn = b0 + ss / 2 + shrink * (xbar - m0) ** 2 / 2
    return NigPosterior(mean=mn, kappa=kn, alpha=an, beta=bn)


def log_marginal(n: np.ndarray, mean: np.ndarray, ss: np.ndarray, prior: NigPrior) -> np.ndarray:
    """Log marginal likelihood of each point's scores under ``prior``, up to terms that do not
    depend on the prior (``(2 pi)^(-n/2)``, and for ``kappa0 = 0`` the ``n^(-1/2)`` of
    integrating the flat mean out): what the empirical-Bayes fit maximises.

    For ``kappa0 > 0`` it is the density of the n scores; for ``kappa0 = 0`` the restricted
    likelihood of their ``n - 1`` contrasts (0 where n < 2: no information about the variance).
    """
    _, k0, a0, b0 = prior.params()
    post = posterior(n, mean, ss, prior)
    n = np.asarray(n, dtype=np.float64)
    used = np.where(k0 == 0, n >= 2, n >= 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = (
            gammaln(post.alpha)
            - gammaln(a0)
            + a0 * np.log(b0)
            - post.alpha * np.log(post.beta)
            + np.where(k0 == 0, 0.0, 0.5 * (np.log(k0) - np.log(post.kappa)))
        )
    return np.where(used, value, 0.0)


def _objective(
    theta: np.ndarray, n: np.ndarray, xbar: np.ndarray, ss: np.ndarray, w: np.ndarray, family: str
) -> tuple[float, np.ndarray]:
    """Negative summed log marginal likelihood and its exact gradient in standardised units.

    ``theta`` follows ``_PARAMS[family]``, with ``beta0 = alpha0 * exp(log_ratio)`` (the
    ratio is the prior's guess of the variance) and ``m0_p = mean + slope * w_p``.
    """
    a0 = np.exp(theta[0])
    b0 = a0 * np.exp(theta[1])
    if family == "flat":
        an, bn = a0 + (n - 1) / 2, b0 + ss / 2
        mean_term = 0.0
    else:
        k0 = np.exp(theta[3])
        dev = xbar - theta[2] - (theta[4] * w if family == "cross" else 0.0)
        kn = k0 + n
        an = a0 + n / 2
        bn = b0 + ss / 2 + k0 * n * dev * dev / (2 * kn)
        mean_term = 0.5 * (np.log(k0) - np.log(kn))
    ll = gammaln(an) - gammaln(a0) + a0 * np.log(b0) - an * np.log(bn) + mean_term
    d_a0 = digamma(an) - digamma(a0) + np.log(b0) - np.log(bn)
    d_b0 = a0 / b0 - an / bn
    grad = [np.sum(a0 * d_a0 + b0 * d_b0), np.sum(b0 * d_b0)]
    if family != "flat":
        d_m0 = an / bn * k0 * n * dev / kn
        d_k0 = -an / bn * n * n * dev * dev / (2 * kn * kn) + 0.5 / k0 - 0.5 / kn
        grad += [np.sum(d_m0), np.sum(k0 * d_k0)]
        if family == "cross":
            grad.append(np.sum(d_m0 * w))
    return -float(np.sum(ll)), -np.array(grad)


def fit_prior(
    n: np.ndarray,
    mean: np.ndarray,
    ss: np.ndarray,
    *,
    family: str = "flat",
    covariate: np.ndarray | None = None,
) -> PriorFit:
    """Empirical-Bayes prior of one side: maximum marginal likelihood over points ``[P]``.

    ``n``, ``mean``, ``ss`` are the points' counts, means (anything where n = 0) and sums of
    squared deviations; ``covariate`` ``[P]`` (NaN: missing) is what a ``cross`` prior's mean
    follows (without one, ``cross`` fits as ``nig``). The fit runs in units of the pooled
    within-point variance v, the count-weighted mean c and the covariate's own spread (so it
    does not depend on the scores' scale), by L-BFGS-B with exact gradients, and is mapped
    back. Where no point has two scores or none has any spread there is no variance to learn:
    the prior is ``alpha0 = 1, beta0 = 0`` with a flat mean.
    """
    if family not in PRIORS:
        raise InputError(f"unknown prior {family!r}; choose one of {', '.join(PRIORS)}")
    n = np.asarray(n, dtype=np.float64).ravel()
    xbar = np.nan_to_num(np.asarray(mean, dtype=np.float64).ravel())
    ss = np.asarray(ss, dtype=np.float64).ravel()
    u = np.full(n.shape, np.nan) if covariate is None else np.asarray(covariate, float).ravel()
    if not n.shape == xbar.shape == ss.shape == u.shape:
        raise InputError(
            f"n, mean, ss and covariate must have one shape, got {n.shape}, {xbar.shape}, "
            f"{ss.shape} and {u.shape}"
        )
    dof, total = np.maximum(n - 1, 0).sum(), ss.sum()
    centre = float((n * xbar).sum() / n.sum()) if n.sum() > 0 else 0.0
    if dof == 0 or not total > 0:
        return PriorFit(centre, 0.0, 0.0, kappa=0.0, alpha=1.0, beta=0.0)
    var = total / dof
    scale = np.sqrt(var)
    known = np.isfinite(u)
    if family == "cross" and not known.any():
        family = "nig"
    u_centre = float(u[known].mean()) if known.any() else 0.0
    u_scale = float(u[known].std()) if known.any() else 0.0
    u_scale = u_scale if u_scale > 0 else 1.0
    w = np.where(known, u - u_centre, 0.0) / u_scale
    used = n >= (2 if family == "flat" else 1)
    names = _PARAMS[family]
    result = minimize(
        _objective,
        np.zeros(len(names)),
        args=(n[used], (xbar[used] - centre) / scale, ss[used] / var, w[used], family),
        jac=True,
        method="L-BFGS-B",
        bounds=[_BOUNDS[name] for name in names],
        options=_OPTIONS,
    )
    theta = dict(zip(names, (float(v) for v in result.x), strict=True))
    alpha = float(np.exp(theta["log_alpha"]))
    return PriorFit(
        intercept=centre + scale * theta.get("mean", 0.0),
        slope=scale * theta.get("slope", 0.0) / u_scale,
        centre=u_centre,
        kappa=float(np.exp(theta["log_kappa"])) if "log_kappa" in theta else 0.0,
        alpha=alpha,
        beta=alpha * float(np.exp(theta["log_ratio"])) * var,
    )


@dataclass(frozen=True)
class Predictive:
    """A posterior predictive per point: Student-t with ``df`` degrees of freedom (``inf``:
    Gaussian), location ``loc`` and positive scale ``scale``."""

    df: np.ndarray
    loc: np.ndarray
    scale: np.ndarray

    def cdf(self, y: np.ndarray) -> np.ndarray:
        """Probability that a score from this predictive lies below ``y``."""
        z = standardise(y, self.loc, self.scale)
        gauss = np.isinf(self.df)
        return np.where(gauss, ndtr(z), stdtr(np.where(gauss, 1.0, self.df), z))

    def logpdf(self, y: np.ndarray) -> np.ndarray:
        """Log density at ``y`` (finite for finite ``y``: distances are capped)."""
        z = standardise(y, self.loc, self.scale)
        gauss = np.isinf(self.df)
        df = np.where(gauss, 1.0, self.df)
        student = (
            gammaln((df + 1) / 2)
            - gammaln(df / 2)
            - 0.5 * np.log(df * np.pi)
            - (df + 1) / 2 * np.log1p(z * z / df)
        )
        normal = -0.5 * z * z - 0.5 * np.log(2 * np.pi)
        return np.where(gauss, normal, student) - np.log(self.scale)


def predictive(post: NigPosterior, kind: str, floor: np.ndarray | float = 0.0) -> Predictive:
    """The posterior predictive ``kind`` (one of :data:`PREDICTIVES`, see the module
    docstring), its scale raised to at least ``floor``."""
    if kind not in PREDICTIVES:
        raise InputError(f"unknown predictive {kind!r}; choose one of {', '.join(PREDICTIVES)}")
    if kind == "t":
        kappa = np.where(post.kappa > 0, post.kappa, 1.0)
        var = post.beta * (kappa + 1) / (post.alpha * kappa)
        df = 2 * post.alpha
    else:
        var = post.beta / post.alpha
        df = np.full(np.shape(var), np.inf)
    return Predictive(df=df, loc=post.mean, scale=np.maximum(np.sqrt(var), floor))
