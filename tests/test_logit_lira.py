"""Tests of mico.attacks.logit_lira: full-logit signals against per-vector loops, the attack
against LiRA on those signals, and its one-line refusal without stored logits."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import run_lira_mia
from mico.attacks.compare import compare_scenario
from mico.attacks.inputs import scenario_inputs
from mico.attacks.lira import lira
from mico.attacks.logit_lira import SIGNALS, LogitLira, LogitLiraParams, logit_signal
from mico.attacks.registry import ATTACKS
from tests.test_attacks import (
    CHALLENGE,
    FAST,
    available,
    synthetic_scores,
    write_synthetic_root,
)


def naive_signal(vector, label, signal):
    true = float(vector[label])
    others = [float(v) for j, v in enumerate(vector) if j != label]
    if signal == "true_logit":
        return true
    if signal == "centred":
        return true - sum(float(v) for v in vector) / len(vector)
    return true - max(others)


@settings(max_examples=40, deadline=None)
@given(
    logits=arrays(
        np.float32,
        st.tuples(st.integers(1, 4), st.integers(2, 7)),
        elements=st.floats(-50, 50, width=32),
    ),
    seed=st.integers(0, 1000),
)
def test_signals_match_per_vector_loops(logits, seed):
    labels = np.random.default_rng(seed).integers(0, logits.shape[1], logits.shape[0])
    for signal in SIGNALS:
        got = logit_signal(logits, labels, signal)
        want = [naive_signal(v, y, signal) for v, y in zip(logits, labels, strict=True)]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)


def test_signal_refuses_bad_input():
    with pytest.raises(ValueError, match="unknown signal"):
        logit_signal(np.zeros((2, 3)), np.zeros(2, dtype=int), "entropy")
    with pytest.raises(ValueError, match=r"\[\.\.\., C\]"):
        logit_signal(np.zeros((2, 3)), np.zeros(3, dtype=int), "hinge")
    with pytest.raises(ValueError, match="NaN"):
        logit_signal(np.full((1, 3), np.nan), np.zeros(1, dtype=int), "hinge")


def test_attack_is_lira_on_the_signal():
    """Every configuration equals LiRA (identity transform) on the signal of the stored
    logits, computed here per vector, with the target's own row left out."""
    scores, _ = synthetic_scores(np.random.default_rng(4))
    attack = LogitLira()
    for phase in ("train", "dev"):
        data = scores.phases[phase]
        inputs = scenario_inputs(scores)[phase]
        prepared = attack.prepare(inputs)
        for config in attack.configs():
            params = config.params
            assert isinstance(params, LogitLiraParams)
            shadow = np.array(
                [
                    [
                        naive_signal(v, int(y), params.signal)
                        for v, y in zip(row, scores.labels, strict=True)
                    ]
                    for row in scores.shadow_logits
                ]
            )
            target = np.array(
                [
                    [
                        naive_signal(v, int(scores.labels[p]), params.signal)
                        for v, p in zip(rv, rp, strict=True)
                    ]
                    for rv, rp in zip(data.logits, data.points, strict=True)
                ]
            )
            want = lira(
                shadow,
                scores.shadow_in,
                target,
                data.points,
                data.shadow_or_none,
                transform="stable_logit",
                variance=params.variance,
                online=params.online,
            )
            got = attack.predict(inputs, params, prepared)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9, err_msg=config.label)
    assert len({c.label for c in attack.configs()}) == 12


def test_left_out_of_compare_without_logits_and_refused_alone(tmp_path, capsys):
    scores, _ = synthetic_scores(np.random.default_rng(4), logits=False)
    reason = ATTACKS["logit_lira"].missing(scores, CHALLENGE)
    assert reason is not None and f"save_preds.py --challenge {CHALLENGE} --save-logits" in reason
    assert (
        "logit_lira (CV)" not in compare_scenario(scores, available(scores), uncertainty=FAST).rows
    )
    with pytest.raises(ValueError, match="--save-logits"):
        LogitLira().predict(scenario_inputs(scores)["train"], LogitLiraParams(), None)

    root = write_synthetic_root(tmp_path / "r")
    args = ["--challenge", CHALLENGE, "--root", str(root), "-q", "--attack", "logit_lira"]
    assert run_lira_mia.main([*args, "--no-write"]) == 0
    assert "CV estimate" in capsys.readouterr().out
    for path in (root / "preds" / CHALLENGE).glob("*/scores.npz"):
        with np.load(path) as data:
            kept = {k: data[k] for k in data.files if "logits" not in k}
        path.unlink()
        np.savez(path, **kept)
    assert run_lira_mia.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--save-logits" in err and "\n" not in err
    assert not list(root.glob(f"{CHALLENGE}/*/*/model_*/prediction.csv"))
