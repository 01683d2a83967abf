"""What a bundle's answers and claims are: dev/final ground truth, and the epsilon claimed.

MICO never released the dev/final answers; the offline demo writes them beside the bundle
(same layout, ``solution.csv`` per model) so that ``run_lira_mia.py --truth DIR`` can score
those phases too.  Ground truth from another bundle, or a solution that its seeds contradict,
would be scored silently; :func:`check_truth` refuses both.  :func:`claimed_epsilon` is
what ``--audit`` compares its lower bounds with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mico.bundle.layout import EPSILON_FILE, SEED_FILES, model_dir
from mico.bundle.records import read_solution
from mico.bundle.splits import random_split_indices, read_seed
from mico.errors import InputError
from mico.outputs.plan import check_solution
from mico.tracks.registry import Task


def truth_solutions(
    truth: Path, task: Task, scenario: str, phase: str, ids: np.ndarray, root: Path
) -> np.ndarray:
    """Ground truth ``[T, K]`` of one phase's models from a ``--truth`` folder, each checked
    to be the truth of the bundle's model (:func:`check_truth`)."""
    length = task.at(scenario).num_challenges
    solutions = []
    for model in ids:
        folder = model_dir(truth, task.challenge, scenario, phase, int(model))
        solution = read_solution(folder, length)
        check_truth(folder, model_dir(root, task.challenge, scenario, phase, int(model)), solution)
        solutions.append(solution)
    return np.stack(solutions)


def check_truth(truth: Path, model: Path, solution: np.ndarray) -> None:
    """Refuse ground truth that is not the bundle model's: its ``seed_challenge`` must be the
    model's (another bundle's ground truth would be scored silently otherwise), and where it
    holds ``seed_membership`` its ``solution.csv`` must be the membership that seed gives."""
    seed = truth / SEED_FILES[0]
    if not seed.is_file():
        raise FileNotFoundError(
            f"{seed}: missing; --truth needs each model's seed_challenge beside its "
            "solution.csv, to tell that it is this bundle's ground truth"
        )
    if read_seed(seed) != read_seed(model / SEED_FILES[0]):
        raise InputError(
            f"{truth}: its seed_challenge is not the one of {model}: --truth holds another "
            "bundle's ground truth; pass the one made with this bundle"
        )
    membership = truth / SEED_FILES[2]
    if membership.is_file():
        m = len(solution) // 2
        derived = np.zeros(2 * m, dtype=np.int8)
        derived[random_split_indices(2 * m, (m, m), read_seed(membership))[1]] = 1
        check_solution(truth, derived)


def claimed_epsilon(root: Path, task: Task, scenario: str) -> float | None:
    """The epsilon a scenario's models claim at MICO's delta (None: trained without DP).

    A demo bundle (and any bundle whose model folders record the epsilon their training
    reached, as ``epsilon`` files) claims the largest recorded value; otherwise the track's
    target epsilon for the scenario.
    """
    target = task.dp_epsilon(scenario)
    if target is None:
        return None
    recorded = [
        float(path.read_text())
        for phase in ("train", "dev", "final")
        for path in sorted((root / task.challenge / scenario / phase).glob(f"*/{EPSILON_FILE}"))
    ]
    return max(recorded) if recorded else target
