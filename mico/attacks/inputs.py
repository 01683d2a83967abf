"""What an attack receives: one validated inputs object per (scenario, phase).

:func:`scenario_inputs` builds a :class:`PhaseInputs` for every phase of a
:class:`~mico.outputs.store.ScenarioScores` once, and checks once what every attack relies on:

* shapes fit together (shadows ``[S, P]``, targets ``[T, K]``, population ``[S, Q]`` and
  ``[T, Q]``, logits ``[S, P, C]`` and ``[T, K, C]``, references ``[T, R, K]``);
* every margin is finite and not absurdly large (:data:`mico.attacks.stats.MAX_ABS_SCORE`);
* a target is never among its own shadows: a target's ``shadow`` row is the train shadow with
  its model number, and no other train shadow row carries that number (a target with no row,
  ``-1``, has none).

Attacks then read the arrays from the object instead of unpacking ``ScenarioScores`` again, and
share work through :meth:`PhaseInputs.shared`: a value computed once per phase under a key
(IN/OUT statistics of a transform, online RMIA's ratios of a temperature) serves every attack
that asks for it, so ``combine`` reuses what ``lira``, ``hardness`` and ``rmia_online``
computed. Every phase's object links to its scenario's train phase (:attr:`PhaseInputs.train`),
where the combiner fits its model.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from mico.attacks.signals import InOutStats, inout_stats, transform_margin
from mico.attacks.stats import check_finite
from mico.errors import InputError
from mico.outputs.store import ScenarioScores

T = TypeVar("T")


@dataclass(eq=False)
class PhaseInputs:
    """One phase's targets and the scenario's shadows, validated (module docstring).

    ``shadow_margin`` float64 ``[S, P]``, ``shadow_in`` bool ``[S, P]``, ``labels`` ``[P]``;
    ``margin`` float64 ``[T, K]``, ``points`` int64 ``[T, K]``, ``shadow`` int64 ``[T]`` (the
    target's own shadow row, -1: none), ``solution`` ``[T, K]`` (train only); optional
    ``shadow_population [S, Q]``, ``population [T, Q]``, ``shadow_logits [S, P, C]``,
    ``logits [T, K, C]``, ``reference_margin``/``reference_in [T, R, K]``. ``scores`` is the
    source, for what an attack reads beyond these.
    """

    phase: str
    scores: ScenarioScores
    shadow_margin: np.ndarray
    shadow_in: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    margin: np.ndarray
    points: np.ndarray
    shadow: np.ndarray
    solution: np.ndarray | None = None
    shadow_population: np.ndarray | None = None
    population: np.ndarray | None = None
    shadow_logits: np.ndarray | None = None
    logits: np.ndarray | None = None
    reference_margin: np.ndarray | None = None
    reference_in: np.ndarray | None = None
    #: The same scenario's train phase (itself on train; None where there is none).
    train: PhaseInputs | None = None
    _shared: dict[Hashable, object] = field(default_factory=dict, repr=False)

    @property
    def target_shadow(self) -> np.ndarray | None:
        """``shadow`` if any target is a shadow (train phase), else None."""
        return self.shadow if np.any(self.shadow >= 0) else None

    @property
    def has_population(self) -> bool:
        """Whether the population outputs are stored (RMIA needs them)."""
        return (
            self.shadow_population is not None
            and self.population is not None
            and self.shadow_population.shape[1] > 0
        )

    def with_population(self, attack: str) -> tuple[np.ndarray, ...]:
        """``(shadow_margin, shadow_in, margin, points, shadow_population, population,
        target_shadow)``: the arguments of the RMIA functions, or an InputError naming
        ``attack`` where no population outputs are stored."""
        if self.shadow_population is None or self.population is None or not self.has_population:
            raise InputError(f"no population outputs: {attack} cannot run")
        return (
            self.shadow_margin,
            self.shadow_in,
            self.margin,
            self.points,
            self.shadow_population,
            self.population,
            self.target_shadow,
        )

    def stats(self, transform: str, *, everyone: bool = False) -> InOutStats:
        """IN/OUT statistics (shared) of the shadows' margins under ``transform`` at the
        targets' points, each target's own row left out; ``everyone``: all shadows as one side
        (its ``*_in`` fields), as the hardness calibration's ``std`` needs."""

        def compute() -> InOutStats:
            scores = transform_margin(self.shadow_margin, transform)
            side = np.ones(scores.shape, dtype=bool) if everyone else self.shadow_in
            return inout_stats(scores, side, self.points, self.target_shadow)

        return self.shared(("stats", transform, everyone), compute)

    def shared(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()``, computed once per phase under ``key`` and then shared by every
        attack that asks (keys name what they hold, e.g. ``("inout", "prob")``)."""
        if key not in self._shared:
            self._shared[key] = compute()
        return self._shared[key]  # type: ignore[return-value]


def scenario_inputs(scores: ScenarioScores) -> dict[str, PhaseInputs]:
    """A validated :class:`PhaseInputs` per phase of ``scores`` (module docstring), each
    linked to the train phase's."""
    shadow_margin = check_finite(scores.shadow_margin, "shadow_margin", ndim=2)
    n_shadows, n_points = shadow_margin.shape
    shadow_in = np.asarray(scores.shadow_in)
    if shadow_in.dtype != np.bool_ or shadow_in.shape != shadow_margin.shape:
        raise InputError(
            f"shadow_in must be a boolean [S, P] array like shadow_margin {shadow_margin.shape}"
        )
    if n_shadows == 0:
        raise InputError("no shadow models: shadow arrays need at least one row")
    shadow_population = _optional(scores.shadow_population, "shadow_population", (n_shadows,))
    shadow_logits = scores.shadow_logits
    if shadow_logits is not None and shadow_logits.shape[:2] != (n_shadows, n_points):
        raise InputError(f"shadow_logits {shadow_logits.shape} do not match [S, P, C]")
    train_rows = _train_rows(scores)
    phases: dict[str, PhaseInputs] = {}
    for phase, data in scores.phases.items():
        margin = check_finite(data.margin, f"{phase}_margin", ndim=2)
        points = np.asarray(data.points)
        if points.shape != margin.shape or not np.issubdtype(points.dtype, np.integer):
            raise InputError(f"{phase}_points must be an integer array of shape {margin.shape}")
        if points.size and (points.min() < 0 or points.max() >= n_points):
            raise InputError(f"{phase}_points must index the {n_points} shadow columns")
        n_targets, k = margin.shape
        shadow = _own_rows(data.shadow, data.ids, train_rows, n_shadows, phase)
        width = None if shadow_population is None else shadow_population.shape[1]
        phases[phase] = PhaseInputs(
            phase=phase,
            scores=scores,
            shadow_margin=shadow_margin,
            shadow_in=shadow_in,
            labels=scores.labels,
            ids=np.asarray(data.ids),
            margin=margin,
            points=points.astype(np.int64, copy=False),
            shadow=shadow,
            solution=data.solution,
            shadow_population=shadow_population,
            population=_optional(data.population, f"{phase}_population", (n_targets, width)),
            shadow_logits=shadow_logits,
            logits=data.logits,
            reference_margin=_optional(data.reference_margin, "reference margins", (n_targets,)),
            reference_in=data.reference_in,
        )
        if data.logits is not None and data.logits.shape[:2] != (n_targets, k):
            raise InputError(f"{phase}_logits {data.logits.shape} do not match [T, K, C]")
        if data.reference_margin is not None and (
            data.reference_in is None or data.reference_in.shape != data.reference_margin.shape
        ):
            raise InputError("reference margins and memberships must both be [T, R, K]")
    train = phases.get("train")
    for inputs in phases.values():
        inputs.train = train
    return phases


def _optional(
    values: np.ndarray | None, name: str, leading: tuple[int | None, ...]
) -> np.ndarray | None:
    """Finite float64 margins whose leading dimensions are ``leading`` (None: any), or None."""
    if values is None:
        return None
    array = check_finite(values, name, ndim=np.ndim(values))
    if array.ndim < len(leading) or any(
        want is not None and have != want for have, want in zip(array.shape, leading, strict=False)
    ):
        raise InputError(f"{name} have shape {array.shape}; expected leading dims {leading}")
    return array


def _train_rows(scores: ScenarioScores) -> dict[int, list[int]]:
    """The shadow rows of each train model number (a bundle's train models, not extra ones)."""
    rows: dict[int, list[int]] = {}
    kinds = scores.kinds()
    for row, (number, kind) in enumerate(zip(scores.shadow_ids.tolist(), kinds, strict=True)):
        if kind == "train":
            rows.setdefault(int(number), []).append(row)
    return rows


def _own_rows(
    shadow: np.ndarray,
    ids: np.ndarray,
    train_rows: dict[int, list[int]],
    n_shadows: int,
    phase: str,
) -> np.ndarray:
    """The targets' own shadow rows ``[T]``, checked: each is the train shadow with the
    target's model number, and no target has a row of its own that is not marked."""
    rows = np.asarray(shadow)
    if rows.shape != np.shape(ids) or not np.issubdtype(rows.dtype, np.integer):
        raise InputError(f"{phase}_shadow must be an integer array with one row per target")
    if rows.size and (rows.min() < -1 or rows.max() >= n_shadows):
        raise InputError(f"{phase}_shadow must hold shadow rows in [-1, {n_shadows})")
    for target, (row, number) in enumerate(
        zip(rows.tolist(), np.asarray(ids).tolist(), strict=True)
    ):
        own = train_rows.get(int(number), [])
        if own != ([row] if row >= 0 else []):
            raise InputError(
                f"{phase} target model_{number} (index {target}) has shadow row {row} but is "
                f"shadow row(s) {own}: a target must never be among its own shadows; rerun "
                "save_preds.py"
            )
    return rows.astype(np.int64, copy=False)
