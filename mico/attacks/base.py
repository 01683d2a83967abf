"""What an attack is: typed parameters, configurations, and the :class:`Attack` interface.

An attack turns one scenario's stored model outputs (:class:`mico.outputs.store.ScenarioScores`)
into membership confidences ``[T, K]`` in [0, 1] for every target of a phase, higher meaning
"member". Only their order within a phase matters to the official metrics (which pool all
targets of a scenario and phase), so a monotone map of a score into [0, 1] over the whole phase
loses nothing.

Each attack declares

* its candidate configurations (:meth:`Attack.configs`, default first): a fixed one is run as
  is; with several, the choice is made on the train phase by cross-validation
  (:mod:`mico.attacks.selection`);
* how it runs on a scenario's stored outputs (:meth:`Attack.prepare` once per phase for work
  shared by all its configurations, then :meth:`Attack.predict` per configuration);
* what it needs beyond the shadows' margins (:meth:`Attack.missing`: e.g. population outputs)
  and what makes its results weak (:meth:`Attack.warning`).

A new attack is one module defining a subclass and one entry in :mod:`mico.attacks.registry`;
``run_lira_mia.py --attack``, ``--compare`` and the README tables iterate the registry.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mico.errors import InputError
from mico.outputs.store import ScenarioScores


@dataclass(frozen=True)
class Params:
    """Base of every attack's parameters: a frozen dataclass, so compared and hashed by value.

    An attack without parameters uses ``Params()`` itself.
    """

    def as_dict(self) -> dict[str, object]:
        """The parameters by field name (for logs and keyword calls)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class Config:
    """One fully specified attack: registry name, typed parameters, display label.

    The label names the configuration in ``--compare`` tables and logs, and must be unique
    across the registry.
    """

    attack: str
    label: str
    params: Params = Params()


class Attack(ABC):
    """One membership-inference attack on stored shadow outputs (see the module docstring).

    Subclasses set :attr:`name` (the ``--attack`` value) and :attr:`summary` (one line for the
    help and the README), and implement :meth:`configs` and :meth:`predict`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    #: Whether ``--compare`` shows every configuration as a row of its own (besides the row
    #: that chooses among them by cross-validation, when there are several).
    show_each: ClassVar[bool] = False
    #: Whether it reads per-target reference models (:mod:`mico.train.references`), which
    #: ``run_lira_mia.py`` then builds or reuses before running it.
    needs_references: ClassVar[bool] = False
    #: ``run_lira_mia.py`` flags (argparse ``dest`` names) with which a user fixes this
    #: attack's parameters; the script refuses them with any attack that does not declare them.
    cli_flags: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def configs(self) -> list[Config]:
        """Candidate configurations, the default first (ties in a CV choice go to it)."""

    def prepare(self, scores: ScenarioScores, phase: str) -> object:
        """Work shared by every configuration on one phase, computed once; None by default."""
        return None

    @abstractmethod
    def predict(
        self, scores: ScenarioScores, phase: str, params: Params, prepared: object
    ) -> np.ndarray:
        """Confidences ``[T, K]`` in [0, 1] of every target of ``phase`` under ``params``.

        ``prepared`` is what :meth:`prepare` returned for the same scores and phase. A train
        target's own shadow row (``scores.phases[phase].shadow``) must never enter its own
        statistics.
        """

    def missing(self, scores: ScenarioScores, challenge: str) -> str | None:
        """Why the stored outputs cannot serve this attack and what to run, or None."""
        return None

    def warning(self, scores: ScenarioScores) -> str | None:
        """A caveat about this attack's results on these outputs, or None."""
        return None

    def from_cli(self, flags: Mapping[str, object]) -> tuple[str, Params | None]:
        """The attack to run and its fixed parameters (None: chosen by CV), given the
        :attr:`cli_flags` the user set (``{dest: value}``, empty when none was)."""
        return self.name, None

    def config(self, params: Params) -> Config:
        """The candidate configuration with these parameters."""
        for candidate in self.configs():
            if candidate.params == params:
                return candidate
        raise InputError(f"{self.name}: no configuration with parameters {params}")
