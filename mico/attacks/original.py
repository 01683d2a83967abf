"""``run_lira_mia.py --original``: exactly what the published 2nd-place scripts compute.

Everything else in this project fixes the published ``run_lira_mia.py`` (docs/exactness.md,
"What differs from the original 2nd-place code"); this module restores it, defects included,
for a user who wants the numbers the published code gives. Read from the published code:

* **OUT models of a challenge point** are the train models ``m`` whose list
  ``member.indices + training.indices`` does not contain the point's dataset index. Those are
  MICO ``Subset`` indices: positions inside ``challenge`` (0..2m-1) and inside ``rest``, not
  dataset indices, so the OUT sets are essentially random. In the train phase the target itself
  is one of the candidates. IN models (online) are the complement.
* ``LEN_TRAINING = 50000`` for both tracks, so on the real Purchase-100 bundle ``training`` is
  the first 49900 positions of the true 149900 (``random_split`` of ``rest`` draws one
  permutation whatever the lengths). A bundle whose ``bundle.json`` sets ``len_training`` (the
  offline demo) uses that instead, and says so: there is no published value for it.
* **Arithmetic**: logits are the models' float32 outputs and ``scipy.special.softmax`` of
  float32 stays float32. Default score = p_y (float32). ``--logit_scaling`` =
  ``log(p / (1 - p + 1e-29))`` from that float32 p, so it saturates at 66.77 once p rounds to
  1.0f (a margin of about 16.6). ``--stable_logit_scaling``: ``exp`` in float32 of
  ``logits - max``, cast to float64, normalised, then ``log(p_y + 1e-45) - log(sum p - p_y +
  1e-45)``. Means and stds are numpy's over each point's OUT scores (ddof=0, in the scores'
  dtype). Offline: ``norm.cdf(score, mean, std + 1e-30)``.
* ``--global_variance``: one std per target, ``np.std`` (ddof=0) of the concatenation of all OUT
  scores of its points (the spread between the points' means included), each point keeping its
  own mean.
* **Online** (prob only: the original refused scaling with ``--online_attack``): the ratio
  ``pdf(score; mean_in, std_in) / pdf(score; mean_out, std_out)``, a point's IN statistics
  replaced by its OUT ones when it has no IN model. The original wrote the raw ratio r, which
  is not in [0, 1]; this writes ``r / (1 + r)``, which keeps its order (``r = inf`` gives 1).

Where the original crashes or reads a stale value, documented fallbacks (each warned about):

* a point with no OUT model (``softmax`` of an empty array raises): confidence 0.5, and the
  point adds nothing to the pooled std;
* online with ``--global_variance``, a point with no IN model: the original reuses the previous
  point's target score (or crashes at the first point); this uses the point's own score, as the
  per-point online attack does;
* both densities 0 (``0 / 0``): 0.5.

Inputs: ``scores.npz`` (points, labels, model ids, and the float32 logits ``save_preds.py
--save-logits`` stores: every shadow on every challenge point, every dev/final target on its
own), plus the train models' seeds for the OUT lists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import softmax
from scipy.stats import norm

from mico.attacks.lira import TRANSFORMS, LiraParams
from mico.bundle.config import read_bundle_config
from mico.bundle.layout import model_dir
from mico.bundle.records import read_seeds
from mico.bundle.splits import random_split_indices
from mico.errors import InputError
from mico.outputs.store import ScenarioScores
from mico.tracks.registry import Task

log = logging.getLogger(__name__)

#: The published scripts' ``LEN_TRAINING``, for both tracks.
ORIGINAL_LEN_TRAINING = 50_000

#: The variances the original knows: per point, or ``--global_variance`` (``pooled``).
ORIGINAL_VARIANCES: tuple[str, ...] = ("per-point", "pooled")


def check_original_params(params: LiraParams) -> None:
    """Refuse what the published script did not run, in one line."""
    if params.transform not in TRANSFORMS:
        raise InputError(f"unknown transform {params.transform!r}")
    if params.variance not in ORIGINAL_VARIANCES:
        raise InputError(
            f"--original knows --global_variance or per-point stds, not --variance "
            f"{params.variance}"
        )
    if params.online and params.transform != "prob":
        raise InputError(
            "--original --online_attack runs with probabilities only: the published script "
            "raised NotImplementedError for online with logit scaling"
        )


def original_len_training(root: Path, challenge: str) -> tuple[int, bool]:
    """``LEN_TRAINING`` as the published scripts used it: 50000, or ``bundle.json``'s
    ``len_training`` where the bundle sets one. Returns the value and whether it came from
    ``bundle.json``."""
    config = read_bundle_config(root, challenge)
    if config is None or config.sizes.len_training is None:
        return ORIGINAL_LEN_TRAINING, False
    return config.sizes.len_training, True


def original_lists(task: Task, seeds: list[dict[str, int | None]], len_training: int) -> np.ndarray:
    """Boolean ``[S, dataset_len]``: True where the original's list ``member.indices +
    training.indices`` of train model s holds the value (positions, not dataset indices)."""
    m, n, big_n = task.len_challenge, len_training, task.dataset_len
    if big_n < n + m:
        raise InputError(
            f"--original: LEN_TRAINING={n} does not fit a dataset of {big_n} records; "
            "set len_training in bundle.json"
        )
    lists = np.zeros((len(seeds), big_n), dtype=bool)
    for row, seed in enumerate(seeds):
        if seed["seed_training"] is None or seed["seed_membership"] is None:
            raise InputError(
                "--original: every train model needs seed_training and seed_membership"
            )
        member = random_split_indices(2 * m, (m, m), seed["seed_membership"])[1]
        training = random_split_indices(
            big_n - 2 * m, (n - m, big_n - n - m), seed["seed_training"]
        )[0]
        lists[row, member] = True
        lists[row, training] = True
    return lists


def original_score(logits: np.ndarray, labels: np.ndarray, transform: str) -> np.ndarray:
    """The original's per-model score of float32 ``logits`` ``[..., C]`` at ``labels`` ``[...]``:
    float32 for ``prob``/``logit``, float64 for ``stable_logit`` (module docstring)."""
    logits = np.asarray(logits, dtype=np.float32)
    take = np.broadcast_to(np.asarray(labels)[..., None], (*logits.shape[:-1], 1))
    if transform == "stable_logit":
        shifted = logits - np.max(logits, axis=-1, keepdims=True)
        p = np.array(np.exp(shifted), dtype=np.float64)
        p = p / np.sum(p, axis=-1, keepdims=True)
        true = np.take_along_axis(p, take, axis=-1)[..., 0]
        wrong = np.sum(p, axis=-1) - true
        return np.log(true + 1e-45) - np.log(wrong + 1e-45)
    p = np.take_along_axis(softmax(logits, axis=-1), take, axis=-1)[..., 0]
    if transform == "logit":
        return np.log(p / (1 - p + np.float32(1e-29)))
    return p


@dataclass
class OriginalInputs:
    """One scenario as the original saw it: per-model scores and OUT lists.

    ``shadow_score`` ``[S, P]`` each train model's score on every challenge point (columns of
    ``scores.points``); ``target_score`` ``{phase: [T, K]}`` each target's on its own points;
    ``lists`` ``[S, dataset_len]`` the original's membership lists (:func:`original_lists`).
    """

    scores: ScenarioScores
    shadow_score: np.ndarray
    target_score: dict[str, np.ndarray]
    lists: np.ndarray


def load_original_inputs(
    scores: ScenarioScores,
    preds_scenario: Path,
    root: Path,
    task: Task,
    scenario: str,
    transform: str,
    len_training: int,
) -> OriginalInputs:
    """The logits ``save_preds.py --save-logits`` stored in ``scores.npz`` (``scores``, checked
    against the bundle when it was loaded) and the train models' seeds."""
    missing = scores.shadow_logits is None or any(
        data.logits is None for phase, data in scores.phases.items() if phase != "train"
    )
    if missing:
        raise InputError(
            f"{preds_scenario}: scores.npz holds no logits, which --original needs: run "
            f"`python save_preds.py --challenge {task.challenge} --save-logits`"
        )
    shadow_score = original_score(scores.shadow_logits, scores.labels, transform)
    target_score = {}
    for phase, data in scores.phases.items():
        if phase == "train":
            target_score[phase] = shadow_score[data.shadow[:, None], data.points]
        else:
            target_score[phase] = original_score(data.logits, scores.labels[data.points], transform)
    seeds = [
        read_seeds(model_dir(root, task.challenge, scenario, "train", int(i)))
        for i in scores.shadow_ids
    ]
    return OriginalInputs(
        scores, shadow_score, target_score, original_lists(task, seeds, len_training)
    )


def original_predictions(inputs: OriginalInputs, params: LiraParams) -> dict[str, np.ndarray]:
    """``{phase: [T, K]}`` confidences in [0, 1], as the published script computes them."""
    check_original_params(params)
    scores = inputs.scores
    result = {}
    for phase, data in scores.phases.items():
        values = np.empty(data.points.shape, dtype=np.float64)
        no_out = 0
        for t in range(len(data.ids)):
            values[t], missing = _target(
                inputs, data.points[t], inputs.target_score[phase][t], params
            )
            no_out += missing
        if no_out:
            log.warning(
                "%s: %d challenge points have no OUT model (the original crashes); they get 0.5",
                phase,
                no_out,
            )
        result[phase] = values
    return result


def _target(
    inputs: OriginalInputs, cols: np.ndarray, target: np.ndarray, params: LiraParams
) -> tuple[np.ndarray, int]:
    """One target's confidences ``[K]``, looping over its points as the original does."""
    dataset_index = inputs.scores.points[cols]
    outside = ~inputs.lists[:, dataset_index]  # [S, K]: OUT models of each point
    k = len(cols)
    result = np.full(k, 0.5)
    kept, means, outs = [], [], []
    means_in, ins, stds_in, stds_out = [], [], [], []
    for i in range(k):
        preds_out = inputs.shadow_score[outside[:, i], cols[i]]
        if preds_out.size == 0:
            continue
        kept.append(i)
        means.append(np.mean(preds_out))
        stds_out.append(np.std(preds_out))
        outs.append(preds_out)
        if params.online:
            preds_in = inputs.shadow_score[~outside[:, i], cols[i]]
            if preds_in.size == 0:
                means_in.append(means[-1])
                stds_in.append(stds_out[-1])
                ins.append(preds_in)
            else:
                means_in.append(np.mean(preds_in))
                stds_in.append(np.std(preds_in))
                ins.append(preds_in)
    if not kept:
        return result, k
    score = target[kept]
    mean = np.array(means)
    if params.variance == "pooled":
        std_out = np.std(np.concatenate(outs))
        std_in = np.std(np.concatenate(ins)) if params.online else None
    else:
        std_out = np.array(stds_out)
        std_in = np.array(stds_in) if params.online else None
    if not params.online:
        result[kept] = norm.cdf(score, mean, std_out + 1e-30)
        return result, k - len(kept)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = norm.pdf(score, np.array(means_in), std_in + 1e-30) / norm.pdf(
            score, mean, std_out + 1e-30
        )
        confidence = np.where(np.isinf(ratio), 1.0, ratio / (1.0 + ratio))
    result[kept] = np.where(np.isnan(confidence), 0.5, confidence)
    return result, k - len(kept)
