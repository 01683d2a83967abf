"""The optimizers and learning-rate schedules a :class:`~mico.tracks.recipes.Recipe` names.

A recipe stays plain data (in a track entry, ``recipe.json`` and ``bundle.json``): it names its
optimizer (``"adam"``) and schedule (``"step"``), and this registry makes the torch objects.
A new one is one entry, e.g.::

    OPTIMIZERS["adamw"] = lambda params, lr: torch.optim.AdamW(params, lr=lr)

after which a recipe naming it is accepted by ``train_shadows.py --recipe``, trained by the
model farm and recorded like MICO's own.  Worker processes (the local pool, Ray) import this
module afresh: an entry added at run time by a script is seen by in-process training only,
an entry written here by every worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from mico.errors import InputError
from mico.tracks.recipes import Recipe

#: ``(parameters, lr) -> optimizer``.
OptimizerFactory = Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer]

#: ``(optimizer, recipe) -> scheduler``, stepped once per epoch.
ScheduleFactory = Callable[[torch.optim.Optimizer, Recipe], torch.optim.lr_scheduler.LRScheduler]


def _step(optimizer: torch.optim.Optimizer, recipe: Recipe) -> torch.optim.lr_scheduler.StepLR:
    return torch.optim.lr_scheduler.StepLR(optimizer, recipe.lr_step, recipe.lr_gamma)


#: Optimizers by name.  MICO's: Adam (Purchase-100; SST-2's AdamW has weight decay 0) and
#: SGD without momentum (CIFAR-10).
OPTIMIZERS: dict[str, OptimizerFactory] = {
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0),
}

#: Schedules by name.  MICO's: ``step``, ``StepLR(lr_step, lr_gamma)`` once per epoch (SST-2's
#: constant rate is ``lr_gamma`` 1).
SCHEDULES: dict[str, ScheduleFactory] = {"step": _step}


def check_recipe_names(recipe: Recipe, where: str) -> None:
    """Refuse a recipe whose optimizer or schedule is not registered, naming the choices."""
    for kind, name, registry in (
        ("optimizer", recipe.optimizer, OPTIMIZERS),
        ("schedule", recipe.schedule, SCHEDULES),
    ):
        if name not in registry:
            raise InputError(
                f"{where}: unknown {kind} {name!r}; choose from {', '.join(sorted(registry))} "
                "(or register one in mico/train/optimizers.py)"
            )


def make_optimizer(
    recipe: Recipe, params: Iterable[nn.Parameter], lr: float
) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``params`` at rate ``lr`` (the plain or the DP rate)."""
    check_recipe_names(recipe, "recipe")
    return OPTIMIZERS[recipe.optimizer](params, lr)


def make_schedule(
    recipe: Recipe, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    """The recipe's learning-rate schedule of ``optimizer``, stepped once per epoch."""
    check_recipe_names(recipe, "recipe")
    return SCHEDULES[recipe.schedule](optimizer, recipe)
