"""MICO's training recipes: plain SGD/Adam and Opacus DP-SGD, reusable for any MICO model.

MICO trained every target model with one recipe per track (MICO.md section 6)::

                    Purchase-100 (MLP)          CIFAR-10 (CNN)
    optimizer       Adam, lr 1e-3               SGD, lr 0.005 (no DP) / 0.5 (DP)
    batch           512                         32 (no DP) / 512 (DP)
    epochs          30                          50
    schedule        StepLR(5, 0.9)              StepLR(1, 0.96)
    DP-SGD          clip 2.6, Poisson sampling at rate 1 / len(loader), PRV accountant,
                    noise calibrated to (epsilon, 1e-5) with epsilon 10 (hi) or 4 (lo)

The DP numbers are each scenario's (:class:`~mico.tracks.recipes.Privacy`, stated by the track
entry); the recipe holds the rest.

:func:`train_model` runs such a recipe on whole tensors; the offline demo uses it to build its
bundles and the same function can train extra shadow models.

DP-SGD is Opacus' (``PrivacyEngine.make_private``, its ``DPOptimizer`` and PRV accountant), with
three choices made for speed, none of which changes the algorithm:

- the per-sample gradient mode is picked per architecture from measurements on a 2-core CPU:
  ``ghost`` (fast gradient clipping: per-sample gradient *norms* of ``nn.Linear`` layers without
  materialising per-sample gradients, then a second backward pass sums the clipped gradients)
  trains the MLP about 18x faster than ``hooks``, ``ew`` (expanded weights) or ``functorch``;
  for the CNN Opacus has no ghost norm of ``nn.Conv2d``, and ``hooks`` is about 20% faster than
  ``ghost`` (one backward pass instead of two), while ``ew`` and ``functorch`` are slower;
- a logical (Poisson) batch is processed in physical batches of at most :data:`PHYSICAL_BATCH`
  records whose clipped gradients add up before one noisy step (what Opacus'
  ``BatchMemoryManager`` does): the CNN's per-sample gradients of 512 images do not fit any
  cache, and 64 at a time halves the time per image;
- Poisson batches are drawn here as index masks over the tensors (each record independently with
  probability ``q``), the sampling Opacus' ``DPDataLoader`` performs, instead of collating one
  record at a time through a ``DataLoader``.

With these, a DP-SGD step costs about 1.7x a plain one for the CNN and 3x for the (tiny) MLP.
The noise calibration and the final epsilon depend only on ``(q, steps)``, so they are computed
once per setting and cached: the PRV accountant takes seconds per calibration.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from torch import nn

from mico.errors import InputError
from mico.tracks.base import call_model
from mico.tracks.recipes import Privacy, Recipe
from mico.tracks.registry import Task
from mico.train.optimizers import make_optimizer, make_schedule

__all__ = [
    "Privacy",
    "Recipe",
    "TrainResult",
    "accuracy",
    "dp_noise_multiplier",
    "train_model",
]


class TrainResult(NamedTuple):
    """What :func:`train_model` returns.

    ``state_dict`` is on the CPU; a DP model's keys carry Opacus' ``_module.`` prefix, as in
    MICO's ``model.pt`` files.  ``epsilon`` is ``inf`` without DP, otherwise the PRV
    accountant's epsilon at the scenario's delta after ``steps`` steps at ``sample_rate`` with
    ``noise_multiplier``.
    """

    state_dict: dict[str, torch.Tensor]
    epsilon: float
    noise_multiplier: float
    sample_rate: float
    steps: int


def steps_per_epoch(n: int, batch_size: int) -> int:
    """``len(DataLoader(range(n), batch_size))``: the number of steps in an epoch."""
    if n < 1 or batch_size < 1:
        raise InputError(f"need at least one record and batch size >= 1, got {n} and {batch_size}")
    return math.ceil(n / batch_size)


@functools.lru_cache(maxsize=64)
def noise_multiplier_for(
    target_epsilon: float, sample_rate: float, steps: int, delta: float
) -> float:
    """The noise multiplier that reaches ``(target_epsilon, delta)`` after ``steps`` Poisson
    steps at ``sample_rate``, from Opacus' PRV accountant (what ``make_private_with_epsilon``
    computes; cached because it depends on nothing else)."""
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the accountants warn about their alpha/domain grids
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant="prv",
            )
        )


@functools.lru_cache(maxsize=64)
def prv_epsilon(history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    """Epsilon of an Opacus accountant history ``((noise, sample_rate, steps), ...)`` at
    ``delta``, by the PRV accountant (what ``PrivacyEngine.get_epsilon`` returns)."""
    from opacus.accountants import PRVAccountant

    accountant = PRVAccountant()
    accountant.history = list(history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(accountant.get_epsilon(delta=delta))


def dp_noise_multiplier(recipe: Recipe, n: int, privacy: Privacy) -> float:
    """The noise multiplier :func:`train_model` uses for ``n`` records and ``privacy``."""
    per_epoch = steps_per_epoch(n, recipe.hyper(True)[1])
    return noise_multiplier_for(
        float(privacy.epsilon), 1 / per_epoch, per_epoch * recipe.epochs, float(privacy.delta)
    )


def _init_model(task: Task, seed: int) -> nn.Module:
    """The track's model with PyTorch's default initialisation drawn from ``seed``, leaving the
    global random state as it was."""
    with torch.random.fork_rng(devices=[]):  # parameters are created on the CPU
        torch.random.default_generator.manual_seed(seed)
        return task.architecture()


def _shuffled_batches(n: int, batch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """``DataLoader(shuffle=True)`` over ``range(n)``: a fresh permutation, cut into batches."""
    order = torch.randperm(n, generator=generator)
    yield from order.split(batch)


def _poisson_batches(
    n: int, sample_rate: float, steps: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Opacus' Poisson sampling: each step takes every record independently with probability
    ``sample_rate`` (so batch sizes vary and may be zero)."""
    for _ in range(steps):
        yield torch.nonzero(torch.rand(n, generator=generator) < sample_rate).squeeze(1)


def train_model(
    task: Task,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: Recipe,
    *,
    privacy: Privacy | None = None,
    seed: int,
    device: str | torch.device = "cpu",
    noise_multiplier: float | None = None,
    physical_batch_size: int | None = None,
) -> TrainResult:
    """Train a fresh model of ``task`` on ``x`` [n, ...] float32 and ``y`` [n] int64 labels.

    Without ``privacy`` this is plain minibatch training (shuffled batches, the last one
    short).  With it, DP-SGD: Opacus wraps the model (state_dict keys gain ``_module.``), clips
    each example's gradient to ``privacy.max_grad_norm``, adds Gaussian noise calibrated by the
    PRV accountant so that the whole run is ``(privacy.epsilon, privacy.delta)``-DP, and
    samples Poisson batches at rate ``1 / steps_per_epoch``.

    ``noise_multiplier`` may pass in :func:`dp_noise_multiplier` computed beforehand (the
    calibration takes seconds; a caller that trains many models in several processes does it
    once).  Every random choice (initialisation, batches, noise) derives from ``seed``; the
    global random state is left untouched.
    """
    if len(x) != len(y) or len(x) == 0:
        raise InputError(f"need as many labels as records (and some records): {len(x)}, {len(y)}")
    device = torch.device(device)
    x, y = x.to(device), y.to(device)
    n = len(y)
    lr, batch_size = recipe.hyper(privacy is not None)
    per_epoch = steps_per_epoch(n, batch_size)
    steps = per_epoch * recipe.epochs

    model = _init_model(task, seed).to(device)
    optimizer = make_optimizer(recipe, model.parameters(), lr)
    scheduler = make_schedule(recipe, optimizer)
    batches = torch.Generator().manual_seed(seed)
    criterion = nn.CrossEntropyLoss()
    model.train()

    if privacy is None:
        for _ in range(recipe.epochs):
            for index in _shuffled_batches(n, batch_size, batches):
                index = index.to(device)
                optimizer.zero_grad(set_to_none=True)
                criterion(task.forward(model, x[index]), y[index]).backward()
                optimizer.step()
            scheduler.step()
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return TrainResult(state, math.inf, 0.0, 0.0, steps)

    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    if not privacy.epsilon > 0 or not 0 < privacy.delta < 1 or not privacy.max_grad_norm > 0:
        raise InputError(f"DP-SGD needs epsilon > 0, 0 < delta < 1 and clipping > 0: {privacy}")
    sample_rate = 1 / per_epoch
    physical = physical_batch_size or task.physical_batch
    noise = noise_multiplier
    if noise is None:
        noise = dp_noise_multiplier(recipe, n, privacy)
    noise_generator = torch.Generator(device=device).manual_seed(seed + 1)
    # The loader only tells Opacus the dataset size and the sample rate; batches come from
    # _poisson_batches, which samples exactly as the DPDataLoader Opacus would return.
    loader = DataLoader(TensorDataset(torch.arange(n)), batch_size=batch_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "secure RNG turned off": seeded noise is the point here
        engine = PrivacyEngine(accountant="prv")
        mode = task.grad_sample_mode
        private = engine.make_private(
            module=model,
            optimizer=optimizer,
            criterion=criterion,
            data_loader=loader,
            noise_multiplier=noise,
            max_grad_norm=privacy.max_grad_norm,
            poisson_sampling=True,
            noise_generator=noise_generator,
            grad_sample_mode=mode,
        )
        # Ghost clipping also wraps the loss (it runs the second backward pass).
        dp_model, dp_optimizer = private[0], private[1]
        dp_criterion = private[2] if mode == "ghost" else criterion
        for _ in range(recipe.epochs):
            for index in _poisson_batches(n, sample_rate, per_epoch, batches):
                # Physical batches of one logical (Poisson) batch: clipped gradients add up,
                # and only the last one adds noise and steps (Opacus' BatchMemoryManager).
                index = index.to(device)
                chunks = index.split(physical) if physical and len(index) > physical else (index,)
                for number, chunk in enumerate(chunks, start=1):
                    dp_optimizer.zero_grad(set_to_none=True)
                    dp_criterion(task.forward(dp_model, x[chunk]), y[chunk]).backward()
                    dp_optimizer.signal_skip_step(do_skip=number < len(chunks))
                    dp_optimizer.step()
            scheduler.step()
    history = tuple((float(s), float(q), int(k)) for s, q, k in engine.accountant.history)
    epsilon = prv_epsilon(history, privacy.delta)
    state = {k: v.detach().cpu().clone() for k, v in dp_model.state_dict().items()}
    return TrainResult(state, epsilon, noise, sample_rate, steps)


@torch.inference_mode()
def accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 128,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] = call_model,
) -> float:
    """Top-1 accuracy of ``model`` on ``x`` [n, ...], ``y`` [n], evaluated in batches
    (``forward``: the track's, see :attr:`mico.tracks.base.Task.forward`).

    Every trained model pays for this pass (its held-out ``accuracy``), so it is tuned: image
    batches [B, C, H, W] go through in channels-last layout, which oneDNN's CPU convolutions
    take directly (contiguous NCHW input made MICO's CNN 2.5-3x slower on a 2-core CPU), and
    128 records a batch keep the CNN's activations near the caches (1024 at once cost 25% more
    per image).  The float32 arithmetic is the same; only the order of the sums may differ.
    """
    if len(y) == 0:
        raise InputError("accuracy of an empty set")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(y), batch_size):
        batch = x[start : start + batch_size].to(device)
        if batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        logits = forward(model, batch)
        correct += int((logits.argmax(1).cpu() == y[start : start + batch_size].cpu()).sum())
    model.train(was_training)
    return correct / len(y)
