"""Bayesian variance for LiRA's per-point Gaussians: ``--variance bayes``.

With ~12-24 OUT shadows per MICO challenge point (and a handful at small shadow budgets) a
per-point variance is noisy and a pooled one ignores that points differ. BaVarIA (Brännvall,
"Exponential-Family Membership Inference: From LiRA and RMIA to BaVarIA", arXiv 2603.11799,
2026) gives each point's mean and variance a conjugate normal-inverse-gamma prior, so each
point's estimate lies between the two, and uses the posterior predictive: a Student-t
(BaVarIA-t) or a Gaussian with the stabilised variance (BaVarIA-n); it reports its largest
gains at small shadow budgets and offline. The conjugate algebra, the prior families and their
empirical-Bayes fit are in :mod:`mico.attacks.nig`; this module applies them to shadow scores:

* per scenario, phase and side (IN, OUT), the prior is fitted over every challenge point of
  the scenario (the shadows score all of them) by maximum marginal likelihood;
* leave-target-out as everywhere in :mod:`mico.attacks`: a train target's own shadow row
  enters neither its points' statistics nor the prior it is scored with, so each train target
  gets a prior fitted on the shadows without its row (:func:`side_priors`; dev/final targets,
  which are no shadow, share one fit);
* the ``cross`` prior (ours, not the paper's) centres each point's prior mean on a linear
  function of the *other* side's mean at the same point, fitted with the rest: in MICO about
  3/4 of a point's shadows are IN, so its few OUT scores borrow strength from its many IN ones.

What carries over from the paper is the model and its two predictives; its code and the way it
sets its priors were not used (only its abstract was reachable here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit
from threadpoolctl import threadpool_limits

from mico.attacks.nig import (
    NigPosterior,
    NigPrior,
    Predictive,
    fit_prior,
    posterior,
    predictive,
)
from mico.attacks.nig import sufficient as _sufficient
from mico.attacks.signals import inout_stats, std_floor
from mico.errors import InputError

#: What ``--variance bayes`` uses: the ``cross`` prior and the Student-t predictive. On the
#: purchase100 default demo (48 shadows, logit scores, train phase, one run without CV) offline
#: cross-t had TPR@10% 0.692 on inf against 0.673-0.676 for the other families and
#: predictives, and was within 0.005 of the best of them on hi and lo.
BAYES_PRIOR = "cross"
BAYES_PREDICTIVE = "t"


def side_priors(
    shadow_score: np.ndarray,
    side_mask: np.ndarray,
    target_shadow: np.ndarray,
    target_covariate: np.ndarray | None = None,
    *,
    family: str = "flat",
) -> NigPrior:
    """Each target's prior for the shadow scores ``[S, P]`` of one side (``side_mask [S, P]``:
    shadow s is on that side of point p), fitted over all P points without the target's own
    shadow row (``target_shadow [T]``, -1: none); targets sharing a row share one fit.

    For a ``cross`` prior the covariate of each point is the other side's mean there (also
    without the row), and ``target_covariate [T, K]`` gives it at the points the prior is
    for: the result's ``mean`` is then ``[T, K]``, else ``[T, 1]`` like the other parameters.
    """
    rows, inverse = np.unique(np.asarray(target_shadow, dtype=np.int64), return_inverse=True)
    n_points = np.shape(shadow_score)[1]
    columns = np.broadcast_to(np.arange(n_points, dtype=np.int64), (len(rows), n_points))
    # inout_stats's "in" side is the side asked for, its "out" side the other one.
    stats = inout_stats(shadow_score, side_mask, columns, rows)
    ss = _sufficient(stats.n_in, stats.var_in)

    # L-BFGS-B's tiny BLAS calls only pay thread start-ups (3x slower on 2 busy cores).
    with threadpool_limits(1, user_api="blas"):
        fits = [
            fit_prior(
                stats.n_in[r],
                stats.mean_in[r],
                ss[r],
                family=family,
                covariate=stats.mean_out[r] if family == "cross" else None,
            )
            for r in range(len(rows))
        ]
    fit_of = [fits[r] for r in inverse]
    column = [[f.kappa for f in fit_of], [f.alpha for f in fit_of], [f.beta for f in fit_of]]
    kappa, alpha, beta = (np.array(v, dtype=np.float64)[:, None] for v in column)
    intercept = np.array([f.intercept for f in fit_of])[:, None]
    mean = intercept
    if family == "cross" and target_covariate is not None:
        slope = np.array([f.slope for f in fit_of])[:, None]
        centre = np.array([f.centre for f in fit_of])[:, None]
        u = np.asarray(target_covariate, dtype=np.float64)
        mean = intercept + slope * np.where(np.isfinite(u), u - centre, 0.0)
    return NigPrior(mean=mean, kappa=kappa, alpha=alpha, beta=beta)


@dataclass(frozen=True)
class BayesSides:
    """Each side's NIG posterior at every target's points (``[T, K]`` arrays): ``n_in``,
    ``n_out`` shadow counts; ``post_in``, ``post_out`` posteriors; ``floor_in``, ``floor_out``
    scale floors (as :meth:`mico.attacks.stats.InOutStats.std` floors stds). Computed once
    per score and prior family (:func:`bayes_sides`), read by every predictive and test."""

    n_in: np.ndarray
    n_out: np.ndarray
    post_in: NigPosterior
    post_out: NigPosterior
    floor_in: np.ndarray
    floor_out: np.ndarray

    def predictive(self, side: str, kind: str) -> Predictive:
        """The posterior predictive ``kind`` of ``side`` (``"in"`` or ``"out"``)."""
        if side not in ("in", "out"):
            raise InputError(f"side must be 'in' or 'out', not {side!r}")
        return predictive(getattr(self, f"post_{side}"), kind, getattr(self, f"floor_{side}"))


def bayes_sides(
    shadow_score: np.ndarray,
    shadow_in: np.ndarray,
    target_points: np.ndarray,
    target_shadow: np.ndarray | None = None,
    *,
    family: str = "flat",
) -> BayesSides:
    """IN and OUT posteriors of (already transformed) shadow scores ``[S, P]`` at the targets'
    points ``[T, K]``, under the prior ``family`` (:data:`mico.attacks.nig.PRIORS`), each
    target's own row (``target_shadow``, as in :func:`mico.attacks.stats.inout_stats`) left
    out of its statistics and of its prior."""
    stats = inout_stats(shadow_score, shadow_in, target_points, target_shadow)
    n_targets = np.shape(target_points)[0]
    rows = (
        np.full(n_targets, -1, dtype=np.int64)
        if target_shadow is None
        else np.asarray(target_shadow, dtype=np.int64)
    )
    mask = np.asarray(shadow_in)
    parts: dict[str, np.ndarray | NigPosterior] = {}
    for side, other, side_mask in (("in", "out", mask), ("out", "in", ~mask)):
        n, mean = getattr(stats, f"n_{side}"), getattr(stats, f"mean_{side}")
        covariate = getattr(stats, f"mean_{other}")
        prior = side_priors(shadow_score, side_mask, rows, covariate, family=family)
        post = posterior(n, mean, _sufficient(n, getattr(stats, f"var_{side}")), prior)
        parts[f"n_{side}"] = n
        parts[f"post_{side}"] = post
        parts[f"floor_{side}"] = std_floor(post.mean, getattr(stats, f"scenario_var_{side}"))
    return BayesSides(**parts)  # type: ignore[arg-type]


def bayes_confidence(
    sides: BayesSides, target_score: np.ndarray, *, kind: str = "t", online: bool = False
) -> np.ndarray:
    """LiRA's membership confidence ``[T, K]`` with each side's Gaussian replaced by its NIG
    posterior predictive ``kind`` (:data:`mico.attacks.nig.PREDICTIVES`), ``target_score``
    transformed as the shadow scores were.

    A side "has a location" at a point where its posterior has one (``kappa_n > 0``): where
    it has shadows, and under the ``nig`` and ``cross`` priors everywhere (a point without
    shadows on a side gets that side's prior predictive). The fallbacks are LiRA's
    (:func:`mico.attacks.lira.lira`) for points without a location: offline,
    ``P(OUT score < y)``, 0.5 without one for OUT; online, ``sigmoid(log p_IN(y) - log
    p_OUT(y))``, the offline value without one for IN.
    """
    y = np.asarray(target_score, dtype=np.float64)
    has_out, has_in = sides.post_out.kappa > 0, sides.post_in.kappa > 0
    offline = np.where(has_out, sides.predictive("out", kind).cdf(y), 0.5)
    if not online:
        return offline
    online_conf = np.where(has_in, expit(bayes_log_ratio(sides, y, kind=kind)), offline)
    return np.where(has_out, online_conf, 0.5)


def bayes_log_ratio(sides: BayesSides, target_score: np.ndarray, *, kind: str = "t") -> np.ndarray:
    """``log p_IN(y) - log p_OUT(y)`` ``[T, K]`` under the two posterior predictives ``kind``:
    the Student-t (or stabilised Gaussian) counterpart of
    :func:`mico.attacks.signals.gaussian_log_ratio`; meaningful where both sides have a
    location (``post_*.kappa > 0``), finite everywhere."""
    y = np.asarray(target_score, dtype=np.float64)
    return sides.predictive("in", kind).logpdf(y) - sides.predictive("out", kind).logpdf(y)
