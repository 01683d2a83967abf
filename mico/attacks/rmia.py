"""RMIA: the offline relative membership inference attack of Zarifzadeh, Liu and Shokri,
"Low-Cost High-Power Membership Inference Attacks" (ICML 2024). Details in :func:`rmia`.

Shapes as in :mod:`mico.attacks.stats`, plus the population (non-challenge) records::

    shadow_population [S, Q]  float64   shadows' margins on Q population records
    target_population [T, Q]  float64   targets' margins on the same records
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from mico.attacks.base import POPULATION, Attack, CliParam, Config, Params
from mico.attacks.inputs import PhaseInputs
from mico.attacks.signals import inout_stats, population_log_ratio, transform_margin
from mico.attacks.stats import check_finite, check_targets
from mico.errors import InputError
from mico.outputs.store import ScenarioScores

_TINY = float(np.finfo(np.float64).tiny)

#: RMIA's offline ``a`` grid (ML Privacy Meter tunes it on the same 0.1 grid) and ``gamma``.
RMIA_A: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))
RMIA_GAMMA: tuple[float, ...] = (1.0, 2.0, 4.0)

#: Population size recommended for RMIA (``save_preds.py --population N``). The score is a
#: fraction of the N records, so N sets its resolution (1/N = 2e-4, far below the FPRs that
#: are scored) and the noise of each fraction; it costs N extra records per model (on CIFAR-10
#: 300 models x 5000 = 1.5 M CNN evaluations per scenario: minutes on a GPU).
RECOMMENDED_POPULATION = 5000

#: Below this many population records RMIA's score (a fraction of them) is too coarse.
MIN_USEFUL_POPULATION = 100


@dataclass(frozen=True)
class RmiaInputs:
    """What RMIA needs for one phase, computed once and reused over its parameter grid.

    ``log_p`` ``[T, K]``: log Pr(x | target); ``mean_out`` ``[T, K]``: mean Pr(x | shadow)
    over the OUT shadows of x (NaN where none), ``n_out`` their number; ``log_ratio_z``
    ``[T, Q]``: log(Pr(z | target) / Pr(z)) for every population record z.
    """

    log_p: np.ndarray
    mean_out: np.ndarray
    n_out: np.ndarray
    log_ratio_z: np.ndarray


def rmia_inputs(
    shadow_margin: np.ndarray,
    shadow_in: np.ndarray,
    target_margin: np.ndarray,
    target_points: np.ndarray,
    shadow_population: np.ndarray,
    target_population: np.ndarray,
    target_shadow: np.ndarray | None = None,
) -> RmiaInputs:
    """Prepare :class:`RmiaInputs`; see :func:`rmia` for the definitions."""
    y = check_targets(target_margin, target_points)
    sp = check_finite(shadow_population, "shadow_population", ndim=2)
    tpop = check_finite(target_population, "target_population", ndim=2)
    n_shadows, n_targets = np.shape(shadow_margin)[0], y.shape[0]
    if sp.shape[0] != n_shadows or tpop.shape != (n_targets, sp.shape[1]):
        raise InputError(
            f"population margins have shapes {sp.shape} (shadows) and {tpop.shape} (targets); "
            f"expected [{n_shadows}, Q] and [{n_targets}, Q]"
        )
    if sp.shape[1] == 0:
        raise InputError("RMIA needs population records (Q >= 1)")
    p_shadow = transform_margin(check_finite(shadow_margin, "shadow_margin", ndim=2), "prob")
    stats = inout_stats(p_shadow, shadow_in, target_points, target_shadow)
    return RmiaInputs(
        log_p=transform_margin(y, "log_prob"),
        mean_out=stats.mean_out,
        n_out=stats.n_out,
        log_ratio_z=population_log_ratio(sp, tpop, target_shadow),
    )


def rmia_from_inputs(inputs: RmiaInputs, *, a: float = 0.3, gamma: float = 1.0) -> np.ndarray:
    """RMIA confidences ``[T, K]`` from prepared inputs, for one offline ``a`` and ``gamma``."""
    if not 0.0 <= a <= 1.0:
        raise InputError(f"RMIA's offline a must lie in [0, 1], got {a}")
    if not gamma > 0.0 or not np.isfinite(gamma):
        raise InputError(f"RMIA's gamma must be a positive number, got {gamma}")
    mean_out = np.nan_to_num(inputs.mean_out)
    pr_x = 0.5 * ((1.0 + a) * mean_out + (1.0 - a))
    log_ratio_x = inputs.log_p - np.log(np.maximum(pr_x, _TINY))
    fraction = fraction_below(log_ratio_x - np.log(gamma), inputs.log_ratio_z)
    return np.where(inputs.n_out >= 1, fraction, 0.5)


def rmia(
    shadow_margin: np.ndarray,
    shadow_in: np.ndarray,
    target_margin: np.ndarray,
    target_points: np.ndarray,
    shadow_population: np.ndarray,
    target_population: np.ndarray,
    target_shadow: np.ndarray | None = None,
    *,
    a: float = 0.3,
    gamma: float = 1.0,
) -> np.ndarray:
    """Offline RMIA membership confidence ``[T, K]`` in [0, 1].

    With ``Pr(x | theta) = p``, the softmax probability of x's label under model theta::

        Pr(x)     = ((1 + a) * mean_OUT Pr(x | shadow) + (1 - a)) / 2
        Pr(z)     = mean over all shadows of Pr(z | shadow)            (population record z)
        LR(x, z)  = (Pr(x | target) / Pr(x)) / (Pr(z | target) / Pr(z))
        score(x)  = fraction of the Q population records z with LR(x, z) > gamma

    ``Pr(x)`` is the paper's offline approximation (Zarifzadeh et al. 2024, section on the
    offline attack): a challenge point is IN for the target with probability 1/2, so
    ``Pr(x) = (Pr_IN(x) + Pr_OUT(x)) / 2``, and ``Pr_IN(x)`` is approximated from OUT
    models alone by the line ``a * Pr_OUT(x) + (1 - a)``. Only OUT shadows of x enter,
    and never the target's own row. ``gamma = 1`` is the paper's usual choice; a larger
    gamma asks for a clearer win over each z and saturates less at 1.

    Computed in log space (finite for any finite margin) with one sort per target row over
    its K thresholds and Q population ratios, never a ``[T, K, Q]`` array. Points without an
    OUT shadow get 0.5 (no evidence either way).
    """
    inputs = rmia_inputs(
        shadow_margin,
        shadow_in,
        target_margin,
        target_points,
        shadow_population,
        target_population,
        target_shadow,
    )
    return rmia_from_inputs(inputs, a=a, gamma=gamma)


def fraction_below(thresholds: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row, the fraction of ``values`` ``[T, Q]`` strictly below each threshold ``[T, K]``.

    One stable sort of each row's thresholds followed by its values: a value equal to a
    threshold sorts after it, so it is not counted. Memory O(T * (K + Q)).
    """
    t = np.asarray(thresholds, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.ndim != 2 or v.ndim != 2 or t.shape[0] != v.shape[0]:
        raise InputError(f"need [T, K] thresholds and [T, Q] values, got {t.shape} and {v.shape}")
    n_rows, k = t.shape
    if v.shape[1] == 0:
        raise InputError("fraction_below needs at least one value per row")
    order = np.argsort(np.concatenate([t, v], axis=1), axis=1, kind="stable")
    is_value = order >= k
    values_before = np.cumsum(is_value, axis=1)
    rows, position = np.nonzero(~is_value)
    counts = np.empty((n_rows, k), dtype=np.int64)
    counts[rows, order[rows, position]] = values_before[rows, position]
    return counts / v.shape[1]


def has_population(scores: ScenarioScores) -> bool:
    """Whether every phase's population outputs are stored (RMIA needs them)."""
    return (
        len(scores.population) > 0
        and scores.shadow_population is not None
        and all(data.population is not None for data in scores.phases.values())
    )


#: The registry name of RMIA's online form (:mod:`mico.attacks.rmia_online`), which
#: ``--attack rmia --online_attack`` runs.
ONLINE = "rmia_online"


@dataclass(frozen=True)
class RmiaParams(Params):
    """RMIA's offline ``a`` (Pr_IN from Pr_OUT) and its likelihood-ratio threshold ``gamma``."""

    a: float = 0.3
    gamma: float = 1.0


class Rmia(Attack):
    """Offline RMIA; ``a`` and ``gamma`` are chosen by CV on the train phase."""

    name = "rmia"
    summary = (
        "Zarifzadeh et al.'s relative attack (needs save_preds.py --population N, "
        f"e.g. {RECOMMENDED_POPULATION})"
    )

    #: ``--online_attack`` switches RMIA to its online form, as it does LiRA (declared there
    #: first, so its help is LiRA's, which says so).
    cli_params = (CliParam("--online_attack", (("action", "store_true"),)),)

    def from_cli(self, flags: Mapping[str, object]) -> tuple[str, Params | None]:
        """``--online_attack``: the online attack (:mod:`mico.attacks.rmia_online`)."""
        return (ONLINE if flags.get("online_attack") else self.name), None

    needs = frozenset({POPULATION})

    def configs(self) -> list[Config]:
        """Offline ``a`` x ``gamma`` grid of RMIA; the paper's gamma = 1 first."""
        return [
            Config(self.name, f"rmia a={a:.1f} gamma={g:g}", RmiaParams(a, g))
            for g in RMIA_GAMMA
            for a in RMIA_A
        ]

    def prepare(self, inputs: PhaseInputs) -> RmiaInputs:
        """The log ratios every (a, gamma) shares, computed once per phase."""
        return rmia_inputs(*inputs.with_population("RMIA"))

    def predict(self, inputs: PhaseInputs, params: Params, prepared: object) -> np.ndarray:
        assert isinstance(params, RmiaParams) and isinstance(prepared, RmiaInputs)
        return rmia_from_inputs(prepared, a=params.a, gamma=params.gamma)

    def missing(self, scores: ScenarioScores, challenge: str) -> str | None:
        if has_population(scores):
            return None
        return (
            "no population outputs, which --attack rmia needs; run "
            f"`python save_preds.py --challenge {challenge} --population "
            f"{RECOMMENDED_POPULATION}` (only the population records are evaluated; the rest "
            "is cached)"
        )

    def warning(self, scores: ScenarioScores) -> str | None:
        """RMIA's score, a fraction of Q records, can take only Q + 1 values."""
        q = len(scores.population)
        if 0 < q < MIN_USEFUL_POPULATION:
            return (
                f"only {q} population records: RMIA's score takes {q + 1} values, so its "
                "low-FPR metrics mostly measure ties (the bundle has no more non-challenge "
                "records)"
            )
        return None
