"""Training recipes: the hyper-parameters a model is trained with, and MICO's DP settings.

A leaf module (dataclasses and constants only) so that each track's registry entry can carry
its recipe without importing the training engine (:mod:`mico.train.engine`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

#: Per-sample gradient clipping bound of every MICO DP model.
MAX_GRAD_NORM = 2.6

#: The delta of MICO's (epsilon, delta) guarantees.
DELTA = 1e-5

#: Target epsilon per scenario suffix; ``None`` trains without DP.  MICO's ``train_*_ddp.sh``
#: are byte-identical to ``train_*_lo.sh``: the DP distinguisher's models are ``lo`` models.
SCENARIO_EPSILON: dict[str, float | None] = {"inf": None, "hi": 10.0, "lo": 4.0, "ddp": 4.0}


@dataclass(frozen=True)
class Recipe:
    """One track's training hyper-parameters; ``dp_*`` override them for DP-SGD.

    ``lr_step``/``lr_gamma`` describe ``StepLR``, stepped once per epoch.  An epoch is
    ``ceil(n / batch_size)`` optimizer steps, with or without DP (Opacus' Poisson loader keeps the
    length of the loader it replaces).
    """

    optimizer: Literal["adam", "sgd"]
    lr: float
    batch_size: int
    epochs: int
    lr_step: int
    lr_gamma: float
    dp_lr: float | None = None
    dp_batch_size: int | None = None
    #: DP-SGD's per-sample clipping bound (MICO's text track clips at 0.1).
    max_grad_norm: float = MAX_GRAD_NORM

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
