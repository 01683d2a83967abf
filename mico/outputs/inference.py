"""Batched model outputs on a fixed set of points, reduced to what the attacks need.

Every score the attacks use is a function of one number per (model, point): the true-label logit
margin ``z = log p_y - log(1 - p_y) = logit_y - logsumexp_{j != y} logit_j``.  The softmax
probability is ``sigmoid(z)``, LiRA's logit scaling is ``z`` itself and the cross-entropy loss is
``softplus(-z)``, so storing ``z`` loses nothing the attacks can use, at 1/C of the logits'
size.  It is a difference of log-space quantities, so a confident model (p_y within 1e-16 of 1)
still gets a finite margin where ``log(p / (1 - p))`` from probabilities would be infinite.
The ``logsumexp`` runs in the logits' own precision (float32): in float64 it cost 40% of an
MLP's forward pass, and the logits carry float32 rounding (about 1e-6 of the margin) anyway.
The margin is stored in float64.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from mico.tracks.base import call_model

#: ``--autocast`` choices: reduced-precision forward passes (the margin is still float64).
AUTOCAST: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def true_label_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """float64 [B] margins ``logit_y - logsumexp_{j != y} logit_j`` of logits [B, C]."""
    labels = labels.long().unsqueeze(1)
    true = logits.gather(1, labels).squeeze(1)
    others = logits.scatter(1, labels, float("-inf"))
    return true.double() - torch.logsumexp(others, dim=1).double()


class Counter:
    """Counts records passed through models, so tests and benchmarks can check the total."""

    def __init__(self) -> None:
        self.records = 0


@torch.inference_mode()
def model_outputs(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    keep_logits: bool = False,
    counter: Counter | None = None,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] = call_model,
    autocast: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Margins float64 [N] (and float32 logits [N, C] if asked) of ``model`` on ``(x, y)``.

    ``x`` and ``y`` should already be on the model's device: the points are uploaded once per
    scenario, not once per model.  Results come back on the CPU.  ``forward`` is the track's
    (:attr:`mico.tracks.base.Task.forward`).  ``autocast`` runs the forward pass under
    ``torch.autocast`` in that dtype; its logits are cast to float32 before the margin.
    """

    def context() -> contextlib.AbstractContextManager:
        return (
            torch.autocast(x.device.type, dtype=autocast) if autocast else contextlib.nullcontext()
        )

    margins, logits_out = [], []
    for start in range(0, len(x), batch_size):
        with context():
            logits = forward(model, x[start : start + batch_size]).float()
        margins.append(true_label_margin(logits, y[start : start + batch_size]))
        if keep_logits:
            logits_out.append(logits.float())
    if counter is not None:
        counter.records += len(x)
    margin = torch.cat(margins).cpu() if margins else torch.zeros(0, dtype=torch.float64)
    logits_all = torch.cat(logits_out).cpu() if keep_logits and logits_out else None
    return margin, logits_all
