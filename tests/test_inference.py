"""The stored margin: exact against float64 math, finite where probabilities saturate."""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import logsumexp

from mico.outputs.inference import Counter, model_outputs, true_label_margin
from mico.tracks.models import MLP


def test_margin_matches_float64_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=8, size=(500, 100)).astype(np.float32)
    labels = rng.integers(0, 100, size=500)
    ours = true_label_margin(torch.from_numpy(logits), torch.from_numpy(labels)).numpy()
    lg = logits.astype(np.float64)
    others = lg.copy()
    others[np.arange(500), labels] = -np.inf
    expected = lg[np.arange(500), labels] - logsumexp(others, axis=1)
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, expected, atol=2e-5)
    # p_y = sigmoid(margin): the softmax probability of the true label.
    p = np.exp(lg - logsumexp(lg, axis=1, keepdims=True))[np.arange(500), labels]
    np.testing.assert_allclose(1 / (1 + np.exp(-ours)), p, rtol=1e-4)


def test_margin_stays_finite_for_confident_models():
    logits = torch.tensor([[60.0, 0.0, -3.0], [0.0, 0.0, 0.0]])
    margin = true_label_margin(logits, torch.tensor([0, 1]))
    assert margin[0].item() > 59.9  # p_y rounds to 1 in float64, the margin does not
    assert abs(margin[1].item() - (0 - np.log(2))) < 1e-6


def test_model_outputs_batches_and_counts():
    torch.manual_seed(0)
    model = MLP().eval()
    x, y = torch.randn(103, 600), torch.randint(0, 100, (103,))
    counter = Counter()
    margin, logits = model_outputs(model, x, y, 10, keep_logits=True, counter=counter)
    with torch.no_grad():
        full = model(x)
    torch.testing.assert_close(logits, full)
    torch.testing.assert_close(margin, true_label_margin(full, y))
    assert counter.records == 103 and margin.shape == (103,)
