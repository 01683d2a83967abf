"""Training recipes and DP guarantees: how a model is trained, and what a scenario promises.

A leaf module (dataclasses only) so that each track's registry entry can carry its recipe and
its scenarios' :class:`Privacy` without importing the training engine
(:mod:`mico.train.engine`).  Neither has a project-wide default: the track entry states both,
and every stage that trains, calibrates or audits a scenario asks the track.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Privacy:
    """A DP scenario's guarantee and how DP-SGD reaches it: ``(epsilon, delta)``, and the
    per-sample gradient clipping bound.  A scenario trained without DP has none (``None``)."""

    epsilon: float
    delta: float
    max_grad_norm: float


#: A track's scenarios by suffix (``inf``, ``hi``, ...), each with its guarantee or None.
ScenarioPrivacy = tuple[tuple[str, "Privacy | None"], ...]


@dataclass(frozen=True)
class Recipe:
    """One track's training hyper-parameters; ``dp_*`` override them for DP-SGD.

    ``optimizer`` and ``schedule`` name entries of :mod:`mico.train.optimizers`' registry;
    ``lr_step``/``lr_gamma`` parameterise the ``step`` schedule (``StepLR``, stepped once per
    epoch).  An epoch is
    ``ceil(n / batch_size)`` optimizer steps, with or without DP (Opacus' Poisson loader keeps the
    length of the loader it replaces).
    """

    optimizer: str
    lr: float
    batch_size: int
    epochs: int
    lr_step: int
    lr_gamma: float
    dp_lr: float | None = None
    dp_batch_size: int | None = None
    schedule: str = "step"

    def hyper(self, dp: bool) -> tuple[float, int]:
        """``(lr, batch_size)`` for a plain or a DP model."""
        if dp:
            lr = self.dp_lr if self.dp_lr is not None else self.lr
            batch = self.dp_batch_size if self.dp_batch_size is not None else self.batch_size
            return lr, batch
        return self.lr, self.batch_size

    def replace(self, **changes: object) -> Recipe:
        """A copy with some fields changed (e.g. fewer epochs for a demo)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_json(self, max_grad_norm: float | None) -> dict[str, object]:
        """The recipe as ``recipe.json`` and ``bundle.json`` record it.

        The format predates per-scenario clipping and the optimizer registry, and a demo
        resumes only if it writes what it wrote before: the clipping bound the models were
        trained with stays inside the recipe, as ``max_grad_norm`` (None: the scenarios
        differ), and a field added since (:data:`ADDED_FIELDS`) appears only when it differs
        from its default, which is what older versions did.
        """
        fields = dataclasses.asdict(self)
        for name, default in ADDED_FIELDS.items():
            if fields[name] == default:
                del fields[name]
        return {**fields, "max_grad_norm": max_grad_norm}


#: Recipe fields added after ``recipe.json``/``bundle.json`` were first written, with the
#: default that stands for what older versions did (and did not record).
ADDED_FIELDS: dict[str, object] = {"schedule": "step"}
