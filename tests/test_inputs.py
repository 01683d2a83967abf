"""The per-phase inputs every attack receives: validated once, and shared between attacks."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import mico.attacks.rmia_online as rmia_online_module
from mico.attacks.compare import Predictor
from mico.attacks.inputs import scenario_inputs
from mico.attacks.registry import ATTACKS
from mico.errors import InputError
from tests.test_attacks import synthetic_scores


def scores_of(seed: int = 0):
    return synthetic_scores(np.random.default_rng(seed))[0]


def test_one_object_per_phase_linked_to_train():
    scores = scores_of()
    inputs = scenario_inputs(scores)
    assert set(inputs) == set(scores.phases)
    for phase, data in inputs.items():
        assert data.phase == phase and data.train is inputs["train"]
        assert data.margin.dtype == np.float64 and data.points.dtype == np.int64
        np.testing.assert_array_equal(data.margin, scores.phases[phase].margin)
    assert inputs["train"].target_shadow is not None and inputs["dev"].target_shadow is None
    assert inputs["dev"].has_population


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda s: s.phases["dev"].margin.__setitem__((0, 0), np.nan), "dev_margin holds NaN"),
        (lambda s: setattr(s, "shadow_margin", s.shadow_margin[:, :-1]), "shadow_in must be"),
        (lambda s: s.phases["dev"].points.__setitem__((0, 0), 10**6), "must index the"),
        (lambda s: setattr(s.phases["dev"], "population", np.zeros((2, 3))), "population have"),
        # A train target whose own row is not marked: it would be its own shadow.
        (lambda s: s.phases["train"].shadow.__setitem__(2, -1), "never be among its own"),
        # ... or marked as another model's row.
        (lambda s: s.phases["train"].shadow.__setitem__(2, 3), "never be among its own"),
        (lambda s: s.phases["train"].shadow.__setitem__(2, 99), "shadow rows in"),
    ],
)
def test_damaged_inputs_are_one_input_error(damage, message):
    scores = copy.deepcopy(scores_of())
    damage(scores)
    with pytest.raises(InputError, match=message):
        scenario_inputs(scores)


def test_a_target_without_its_row_among_the_shadows_is_fine():
    """select_shadows/shadow_rows drop a target's row and mark it -1: nothing to leave out."""
    scores = scores_of()
    kept = scores.shadow_rows(np.arange(1, len(scores.shadow_ids)))
    inputs = scenario_inputs(kept)
    assert inputs["train"].shadow[0] == -1 and (inputs["train"].shadow[1:] >= 0).all()


def test_combine_reuses_what_rmia_online_and_lira_prepared(monkeypatch):
    """One --compare pass over online RMIA and the combiner computes online RMIA's ratios once
    per temperature and phase (the combiner reads tau = 1's), and LiRA's statistics once per
    transform and phase."""
    calls: list[float] = []
    real = rmia_online_module.online_inputs

    def counting(*args, **kwargs):
        calls.append(kwargs["tau"])
        return real(*args, **kwargs)

    monkeypatch.setattr(rmia_online_module, "online_inputs", counting)
    predictor = Predictor(scores_of(1))
    configs = [*ATTACKS["rmia_online"].configs(), *ATTACKS["combine"].configs()]
    for phase in ("train", "dev", "final"):
        for config in configs:
            predictor.predict(config, phase)
    taus = sorted({c.params.tau for c in ATTACKS["rmia_online"].configs()})  # type: ignore[attr-defined]
    assert sorted(calls) == sorted(taus * 3)
    inputs = predictor._inputs
    assert inputs is not None
    stats = inputs["train"].stats("prob")
    assert inputs["train"].stats("prob") is stats  # shared, not recomputed
