"""The offline demo's models: every seed, split and ground-truth file of a demo bundle.

Every seed derives from ``--seed``, the scenario's random stream
(:data:`mico.train.farm.SEED_STREAMS`) and the model's id, so a
demo is reproducible and resumable (:mod:`mico.train.demo` builds what this plans).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mico.bundle.fileio import write_text_atomic
from mico.bundle.layout import SEED_FILES, SOLUTION_FILE, model_dir, model_ids
from mico.bundle.records import solution_line
from mico.bundle.splits import split_indices
from mico.tracks.registry import PHASES
from mico.train.farm import ModelJob, seed_stream

if TYPE_CHECKING:
    from mico.train.demo import DemoConfig


def model_seeds(seed: int, stream: int, model_id: int) -> tuple[int, int, int, int]:
    """``(seed_challenge, seed_training, seed_membership, train_seed)`` of one model.

    The three split seeds are uniform non-negative int64 values like MICO's (nearly all above
    2**32, whose low 32 bits alone seed the split generator); ``train_seed`` drives
    initialisation, batches and DP noise.
    """
    rng = np.random.default_rng([seed, 0x5EED, stream, model_id])
    split = rng.integers(0, 2**63 - 1, size=3, dtype=np.int64, endpoint=True)
    return int(split[0]), int(split[1]), int(split[2]), int(rng.integers(0, 2**62))


def plan_models(config: DemoConfig, root: Path, reference: Path) -> list[ModelJob]:
    """Every model of the bundle in bundle order (scenario, phase, id), and the hidden ground
    truth of the dev/final ones written under ``reference`` (cheap, idempotent: the seeds alone
    determine it)."""
    task = config.task
    jobs = []
    for suffix, scenario in zip(task.scenario_suffixes, task.scenarios, strict=True):
        privacy = task.scenario_privacy(scenario)
        stream = seed_stream(suffix)  # keyed by name: reordering scenarios changes no seed
        for phase in PHASES:
            for model in model_ids(task.models_per_phase, phase):
                seeds = model_seeds(config.seed, stream, model)
                splits = split_indices(
                    task.dataset_len, task.len_training, task.len_challenge, *seeds[:3]
                )
                assert splits.member is not None and splits.training is not None
                assert splits.evaluation is not None and splits.solution is not None
                texts = dict(zip(SEED_FILES, (f"{seed}\n" for seed in seeds[:3]), strict=True))
                texts[SOLUTION_FILE] = solution_line(splits.solution)
                if phase != "train":
                    truth = model_dir(reference, task.challenge, scenario, phase, model)
                    _write_reference(truth, texts)
                    texts = {name: texts[name] for name in task.eval_seeds}
                jobs.append(
                    ModelJob(
                        folder=model_dir(root, task.challenge, scenario, phase, model),
                        label=f"{scenario}/{phase}/model_{model}",
                        # MICO trains on ConcatDataset([member, training]).
                        train_rows=np.concatenate([splits.member, splits.training]),
                        eval_rows=splits.evaluation,
                        privacy=privacy,
                        train_seed=seeds[3],
                        files=tuple((name, text.encode()) for name, text in texts.items()),
                    )
                )
    return jobs


def _write_reference(folder: Path, texts: dict[str, str]) -> None:
    if (folder / SOLUTION_FILE).is_file():
        return
    for name, text in texts.items():
        write_text_atomic(folder / name, text)
