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

:class:`OriginalLira` is how the runner meets it: a variant of ``lira`` in the registry
(:data:`mico.attacks.registry.VARIANTS`), picked by its own flag ``--original`` and reading the
LiRA flags, which always uses the train models alone as shadows and reads their seeds from the
bundle (:meth:`OriginalLira.read_bundle`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import softmax
from scipy.stats import norm

from mico.attacks.base import LOGITS, Attack, CliParam, Config, Params
from mico.attacks.inputs import PhaseInputs
from mico.attacks.lira import TRANSFORMS, Lira, LiraParams, lira_label
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


def original_inputs(scores: ScenarioScores, lists: np.ndarray, transform: str) -> OriginalInputs:
    """The original's per-model scores under ``transform``, from the float32 logits
    ``save_preds.py --save-logits`` stored in ``scores.npz``, and the OUT ``lists``."""
    assert scores.shadow_logits is not None
    shadow_score = original_score(scores.shadow_logits, scores.labels, transform)
    target_score = {}
    for phase, data in scores.phases.items():
        if phase == "train":
            target_score[phase] = shadow_score[data.shadow[:, None], data.points]
        else:
            assert data.logits is not None
            target_score[phase] = original_score(data.logits, scores.labels[data.points], transform)
    return OriginalInputs(scores, shadow_score, target_score, lists)


@dataclass
class OriginalScores(ScenarioScores):
    """A scenario's stored outputs with what ``--original`` reads from the bundle besides: the
    train models' OUT ``lists`` (:func:`original_lists`), and the per-model scores under each
    transform, computed once and shared by every phase."""

    lists: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))
    by_transform: dict[str, OriginalInputs] = field(default_factory=dict)

    def inputs(self, transform: str) -> OriginalInputs:
        if transform not in self.by_transform:
            self.by_transform[transform] = original_inputs(self, self.lists, transform)
        return self.by_transform[transform]


class OriginalLira(Attack):
    """``--original``: the 2nd-place LiRA as published, a variant of ``lira`` (module
    docstring). It reads the LiRA flags and its own ``--original``."""

    name = "original"
    summary = "the 2nd place's LiRA exactly as published, defects included"
    variant_of = "lira"
    switch = "original"
    shadows = "train"  # the published code had the train models alone
    needs = frozenset({LOGITS})
    cli_title = "the published 2nd-place LiRA (with --attack lira and the LiRA flags above)"
    cli_params = (
        *Lira.cli_params,
        CliParam(
            "--original",
            (
                ("action", "store_true"),
                (
                    "help",
                    "what the published 2nd-place scripts compute, defects included "
                    "(docs/exactness.md); needs save_preds.py --save-logits",
                ),
            ),
        ),
    )

    def from_cli(self, flags: Mapping[str, object]) -> tuple[str, Params | None]:
        """The LiRA flags' configuration, run the published way."""
        return self.name, Lira().from_cli(flags)[1]

    def configs(self) -> list[Config]:
        """Every flag combination the published script ran, offline ones first."""
        return [
            self._config(LiraParams(transform, variance, online))
            for online in (False, True)
            for transform in TRANSFORMS
            for variance in ORIGINAL_VARIANCES
            if transform == "prob" or not online
        ]

    def config(self, params: Params) -> Config:
        """The configuration with these LiRA flags, refusing what the original did not run in
        its own words (:func:`check_original_params`)."""
        if not isinstance(params, LiraParams):
            raise InputError("--original reproduces the published LiRA: use it with --attack lira")
        check_original_params(params)
        return self._config(params)

    def _config(self, params: LiraParams) -> Config:
        return Config(self.name, f"{lira_label(params)}, as the published 2nd-place code", params)

    def missing(self, scores: ScenarioScores, challenge: str) -> str | None:
        """The stored logits of every shadow and dev/final target, or what to run."""
        if scores.shadow_logits is None or any(
            data.logits is None for phase, data in scores.phases.items() if phase != "train"
        ):
            return (
                "scores.npz holds no logits, which --original needs: run "
                f"`python save_preds.py --challenge {challenge} --save-logits`"
            )
        return None

    def check_bundle(self, root: Path, task: Task) -> None:
        """Refuse a track the published code never ran on; say where ``LEN_TRAINING`` is not
        the published value."""
        if task.parts:
            raise InputError(
                f"--original reproduces the 2nd place's code, which never ran on "
                f"{task.challenge}: drop --original"
            )
        len_training, from_bundle = original_len_training(root, task.challenge)
        if from_bundle:
            log.warning(
                "--original: LEN_TRAINING = %d from bundle.json's len_training (the published "
                "scripts hard-code %d, which does not fit this bundle)",
                len_training,
                ORIGINAL_LEN_TRAINING,
            )

    def read_bundle(
        self, scores: ScenarioScores, root: Path, task: Task, scenario: str
    ) -> ScenarioScores:
        """The train models' seeds, turned into the original's OUT lists."""
        seeds = [
            read_seeds(model_dir(root, task.challenge, scenario, "train", int(i)))
            for i in scores.shadow_ids
        ]
        len_training = original_len_training(root, task.challenge)[0]
        fields = {f.name: getattr(scores, f.name) for f in dataclasses.fields(scores)}
        return OriginalScores(**fields, lists=original_lists(task, seeds, len_training))

    def predict(self, inputs: PhaseInputs, params: Params, prepared: object) -> np.ndarray:
        scores = inputs.scores
        assert isinstance(scores, OriginalScores) and isinstance(params, LiraParams)
        return original_phase(scores.inputs(params.transform), inputs.phase, params)


def original_predictions(inputs: OriginalInputs, params: LiraParams) -> dict[str, np.ndarray]:
    """``{phase: [T, K]}`` confidences in [0, 1], as the published script computes them."""
    check_original_params(params)
    return {phase: original_phase(inputs, phase, params) for phase in inputs.scores.phases}


def original_phase(inputs: OriginalInputs, phase: str, params: LiraParams) -> np.ndarray:
    """One phase's confidences ``[T, K]`` (:func:`original_predictions`)."""
    data = inputs.scores.phases[phase]
    values = np.empty(data.points.shape, dtype=np.float64)
    no_out = 0
    for t in range(len(data.ids)):
        values[t], missing = _target(inputs, data.points[t], inputs.target_score[phase][t], params)
        no_out += missing
    if no_out:
        log.warning(
            "%s: %d challenge points have no OUT model (the original crashes); they get 0.5",
            phase,
            no_out,
        )
    return values


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
