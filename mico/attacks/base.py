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
* how it runs on a scenario's stored outputs, received as one validated
  :class:`~mico.attacks.inputs.PhaseInputs` per phase (:meth:`Attack.prepare` once per phase
  for work shared by all its configurations, then :meth:`Attack.predict` per configuration);
* what it needs beyond the shadows' margins (:attr:`Attack.needs`: population outputs, full
  logits, per-target models of its own), which ``save_preds.py`` and ``run_lira_mia.py`` read
  instead of its name (:meth:`Attack.missing` says what to run when a need is not stored);
* the ``run_lira_mia.py`` flags that fix its parameters (:attr:`Attack.cli_params`, read by
  :meth:`Attack.from_cli`), which the script adds to its parser;
* what makes its results weak (:meth:`Attack.warning`);
* for a *variant* (:attr:`Attack.variant_of`: another code path of a registered attack, chosen by
  a flag of its own, such as ``--original``), the shadow rows it always uses
  (:attr:`Attack.shadows`), what it refuses or says about a bundle (:meth:`Attack.check_bundle`)
  and what it reads from the bundle beyond ``scores.npz`` (:meth:`Attack.read_bundle`).

A new attack is one module defining a subclass and one entry in :mod:`mico.attacks.registry`;
``run_lira_mia.py --attack``, ``--compare`` and the docs' tables iterate the registry.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from mico.attacks.inputs import PhaseInputs
from mico.errors import InputError
from mico.outputs.store import ScenarioScores

if TYPE_CHECKING:
    from mico.tracks.registry import Task


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


#: What an attack may need beyond the margins (:attr:`Attack.needs`): outputs on population
#: records (``save_preds.py --population N``), every model's full logits (``save_preds.py
#: --save-logits``), models of its own trained per target (``run_lira_mia.py``'s reference stage).
POPULATION = "population"
LOGITS = "logits"
OWN_MODELS = "own models"
#: The ``save_preds.py`` flag that stores each stored input.
STORED_BY: dict[str, str] = {POPULATION: "--population N", LOGITS: "--save-logits"}


@dataclass(frozen=True)
class CliParam:
    """One ``run_lira_mia.py`` flag an attack reads: ``parser.add_argument(flag, **options)``.

    Flags that share a non-empty ``exclusive`` are mutually exclusive; a flag several attacks
    declare (LiRA's and RMIA's ``--online_attack``) is added once, from the first declaration.
    """

    flag: str
    options: tuple[tuple[str, object], ...] = ()
    exclusive: str = ""

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def kwargs(self) -> dict[str, object]:
        return dict(self.options)


class Attack(ABC):
    """One membership-inference attack on stored shadow outputs (see the module docstring).

    Subclasses set :attr:`name` (the ``--attack`` value) and :attr:`summary` (one line for the
    help and docs/attacks.md), and implement :meth:`configs` and :meth:`predict`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    #: Whether ``--compare`` shows every configuration as a row of its own (besides the row
    #: that chooses among them by cross-validation, when there are several).
    show_each: ClassVar[bool] = False
    #: What it reads beyond the shadows' margins (:data:`POPULATION`, :data:`LOGITS`,
    #: :data:`OWN_MODELS`): ``save_preds.py`` and ``run_lira_mia.py`` read this, never the name.
    needs: ClassVar[frozenset[str]] = frozenset()
    #: The ``run_lira_mia.py`` flags with which a user fixes its parameters (the script adds
    #: them to its parser and refuses them with any attack that does not declare them).
    cli_params: ClassVar[tuple[CliParam, ...]] = ()
    #: The title of its flags in ``run_lira_mia.py --help``.
    cli_title: ClassVar[str] = ""
    #: A variant names the registered attack it is a variant of, and the ``dest`` of the flag
    #: (one of its :attr:`cli_params`) that picks it instead of that attack; it is neither an
    #: ``--attack`` choice nor a ``--compare`` row (:data:`mico.attacks.registry.VARIANTS`).
    variant_of: ClassVar[str] = ""
    switch: ClassVar[str] = ""
    #: The ``--shadows`` choice it always uses (None: the user's).
    shadows: ClassVar[str | None] = None

    @property
    def spelled(self) -> str:
        """How a user asks for it: ``--attack NAME``, or a variant's flag."""
        if self.variant_of:
            return next(p.flag for p in self.cli_params if p.dest == self.switch)
        return f"--attack {self.name}"

    @property
    def needs_references(self) -> bool:
        """Whether ``run_lira_mia.py`` must build or reuse its per-target reference models
        (:mod:`mico.train.per_target`) before running it."""
        return OWN_MODELS in self.needs

    @property
    def cli_flags(self) -> tuple[str, ...]:
        """The argparse ``dest`` names of :attr:`cli_params`."""
        return tuple(param.dest for param in self.cli_params)

    @abstractmethod
    def configs(self) -> list[Config]:
        """Candidate configurations, the default first (ties in a CV choice go to it)."""

    def prepare(self, inputs: PhaseInputs) -> object:
        """Work shared by every configuration on one phase, computed once; None by default.
        Work other attacks may share goes through :meth:`PhaseInputs.shared`."""
        return None

    @abstractmethod
    def predict(self, inputs: PhaseInputs, params: Params, prepared: object) -> np.ndarray:
        """Confidences ``[T, K]`` in [0, 1] of every target of ``inputs.phase`` under ``params``.

        ``inputs`` is the phase's validated inputs (:func:`mico.attacks.inputs.scenario_inputs`),
        ``prepared`` what :meth:`prepare` returned for them. A train target's own shadow row
        (``inputs.shadow``) must never enter its own statistics.
        """

    def missing(self, scores: ScenarioScores, challenge: str) -> str | None:
        """Why the stored outputs cannot serve this attack and what to run, or None: by
        default, the first of the stored inputs it :attr:`needs` that ``scores`` lacks."""
        stored = {
            POPULATION: len(scores.population) > 0
            and scores.shadow_population is not None
            and all(data.population is not None for data in scores.phases.values()),
            LOGITS: scores.shadow_logits is not None
            and all(data.logits is not None for data in scores.phases.values()),
        }
        for need in sorted(self.needs & set(stored)):
            if not stored[need]:
                return (
                    f"no {need} outputs, which --attack {self.name} needs; run "
                    f"`python save_preds.py --challenge {challenge} {STORED_BY[need]}`"
                )
        return None

    def warning(self, scores: ScenarioScores) -> str | None:
        """A caveat about this attack's results on these outputs, or None."""
        return None

    def check_bundle(self, root: Path, task: Task) -> None:
        """Refuse a bundle it cannot run on, or log what it does differently there; called
        once per run before any work.  Nothing by default."""
        return None

    def read_bundle(
        self, scores: ScenarioScores, root: Path, task: Task, scenario: str
    ) -> ScenarioScores:
        """``scores`` with whatever else it reads from the bundle (files beside the models),
        for :meth:`prepare` and :meth:`predict`; once per scenario.  ``scores`` by default."""
        return scores

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
