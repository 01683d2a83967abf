"""Which records each extra shadow model trains on: a balanced keep matrix over the pool.

LiRA estimates, per challenge point, the distribution of a model's score when the point is IN
and when it is OUT; with MICO's own train models a point has only about a fifth of them OUT.
Extra shadows fix that when each point is IN for a fixed fraction ``p`` of them, balanced
exactly as in Carlini et al.'s keep matrix: every point IN for ``floor(N*p)`` or
``ceil(N*p)`` of ``N`` shadows.

- **Pool**: the union of the challenge points of every model of the scenario (train, dev,
  final), the only points an attack is asked about.
- **Size**: each shadow trains on ``len_training`` records, as a target does: ``k`` pool points
  plus ``len_training - k`` of the ``M`` non-pool records, drawn at random.  ``p = k / P`` is
  1/2 where ``P / 2`` pool points and the non-pool records can fill a training set; otherwise
  it is the feasible value nearest 1/2 (on CIFAR-10 and the demos the non-pool records are too
  few, so ``k = len_training - M``, the smallest feasible ``p``).
- **Balance**: every shadow holds exactly ``k`` pool points, and column counts are levelled by
  water-filling; rows are filled point by point into the least-loaded shadows (random ties),
  which keeps both row and column sums exact.
- **Growth**: ``--models`` may grow later.  Existing shadows never change; the new block takes,
  per point, what brings its count to ``floor``/``ceil(N_new*p)`` (points with the fewest INs
  first), so the whole design stays balanced; a block of fewer than ``1 / min(p, 1 - p)``
  models can leave a point one off.

Everything derives from ``seed`` and the block's place, so a run is reproducible; the design is
stored (``design.npz``, with the digest of the base dataset it was made for) and a rerun with
another seed, another pool or other base data is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mico.fileio import save_npz_atomic
from mico.layout import SEED_FILES, model_dirs
from mico.splits import challenge_indices, read_seed
from mico.tasks import PHASES, Task

#: Stream tags of the design's random generators (any constants, fixed forever).
_POOL_TAG, _FILL_TAG, _EVAL_TAG = 0x9001, 0xF111, 0xE7A1


def scenario_pool(scenario_dir: Path, task: Task) -> np.ndarray:
    """Sorted unique dataset indices of every challenge point of every model of a scenario."""
    points = [
        challenge_indices(task.dataset_len, task.len_challenge, read_seed(folder / SEED_FILES[0]))
        for phase in PHASES
        for folder in model_dirs(scenario_dir, phase)
    ]
    if not points:
        raise FileNotFoundError(f"{scenario_dir}: no models found; is the bundle complete?")
    return np.unique(np.concatenate(points))


def pool_size_per_shadow(pool: int, dataset_len: int, len_training: int) -> int:
    """``k``, the pool points of each shadow: ``pool / 2`` where feasible, else the nearest
    feasible value (a training set needs ``len_training - k <= dataset_len - pool`` fillers)."""
    outside = dataset_len - pool
    low, high = max(0, len_training - outside), min(pool, len_training)
    if low > high:
        raise ValueError(
            f"no shadow design fits: {pool} pool points, {outside} other records and "
            f"len_training={len_training}; check bundle.json"
        )
    return int(min(max(round(pool / 2), low), high))


def level_counts(old: np.ndarray, added: int, total: int, rng: np.random.Generator) -> np.ndarray:
    """Per point, how many of ``added`` new shadows take it, ``total`` in all.

    Water-filling: each point's final count ``old + d`` (``0 <= d <= added``) is raised to a
    common level ``L`` and ``total - S(L)`` random points that can get one more reach ``L + 1``,
    so counts end at ``floor``/``ceil`` of the mean whenever the block is large enough.
    """
    old = old.astype(np.int64)

    def filled(level: int) -> int:
        return int(np.clip(level - old, 0, added).sum())

    low, high = int(old.min()), int(old.max()) + added
    while low < high:  # largest level with filled(level) <= total
        mid = (low + high + 1) // 2
        low, high = (mid, high) if filled(mid) <= total else (low, mid - 1)
    extra = np.clip(low - old, 0, added)
    rest = total - int(extra.sum())
    can_rise = np.flatnonzero((old <= low) & (old + added >= low + 1))
    extra[rng.choice(can_rise, rest, replace=False)] += 1
    return extra


def fill_rows(counts: np.ndarray, rows: int, rng: np.random.Generator) -> np.ndarray:
    """A ``[rows, P]`` bool matrix with column sums ``counts`` and row sums within one of each
    other: points in random order, each into its ``counts[i]`` least-loaded rows (random ties)."""
    keep = np.zeros((rows, len(counts)), dtype=bool)
    load = np.zeros(rows, dtype=np.float64)
    for point in rng.permutation(len(counts)):
        count = int(counts[point])
        if count == 0:
            continue
        order = load + rng.random(rows) * 0.5  # loads are integers: the noise only breaks ties
        chosen = np.argpartition(order, count - 1)[:count] if count < rows else np.arange(rows)
        keep[chosen, point] = True
        load[chosen] += 1
    return keep


@dataclass(frozen=True)
class Design:
    """The stored design of a scenario's extra shadows: ``keep`` [N, P] over ``pool`` [P]."""

    seed: int
    scenario_index: int
    pool: np.ndarray
    keep: np.ndarray
    dataset_len: int
    len_training: int
    #: Digest of the parsed base dataset the shadows train on (``TensorPairDataset.digest``).
    data: str = ""

    @property
    def models(self) -> int:
        return len(self.keep)

    @property
    def fraction(self) -> float:
        """``p``: the share of shadows each pool point is IN for."""
        return float(self.keep[0].sum() / len(self.pool)) if self.models else 0.0

    def members(self, shadow: int) -> np.ndarray:
        """Sorted dataset indices shadow ``shadow`` trains on: its pool points, then fillers
        drawn from the non-pool records by the shadow's own generator."""
        inside = self.pool[self.keep[shadow]]
        outside = np.setdiff1d(np.arange(self.dataset_len), self.pool, assume_unique=True)
        rng = np.random.default_rng([self.seed, _FILL_TAG, self.scenario_index, shadow])
        fillers = rng.choice(outside, self.len_training - len(inside), replace=False)
        return np.sort(np.concatenate([inside, fillers]))

    def held_out(self, shadow: int, members: np.ndarray) -> np.ndarray:
        """The records shadow ``shadow`` did not train on, in random order (for ``accuracy``)."""
        rest = np.setdiff1d(np.arange(self.dataset_len), members, assume_unique=True)
        rng = np.random.default_rng([self.seed, _EVAL_TAG, self.scenario_index, shadow])
        return rng.permutation(rest)

    def save(self, path: Path) -> None:
        save_npz_atomic(
            path,
            seed=np.int64(self.seed),
            scenario_index=np.int64(self.scenario_index),
            pool=self.pool,
            keep=np.packbits(self.keep, axis=1),
            dataset_len=np.int64(self.dataset_len),
            len_training=np.int64(self.len_training),
            data=np.str_(self.data),
        )


def load_design(path: Path) -> Design:
    """A stored design (plain arrays, no pickles)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            pool = data["pool"]
            keep = np.unpackbits(data["keep"], axis=1, count=len(pool)).astype(bool)
            return Design(
                seed=int(data["seed"]),
                scenario_index=int(data["scenario_index"]),
                pool=pool,
                keep=keep,
                dataset_len=int(data["dataset_len"]),
                len_training=int(data["len_training"]),
                data=str(data["data"]) if "data" in data.files else "",
            )
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: not a shadow design ({exc}); delete it and rerun") from None


def extend_design(
    stored: Design | None,
    pool: np.ndarray,
    task: Task,
    models: int,
    seed: int,
    scenario_index: int,
    data: str = "",
) -> Design:
    """The design of ``models`` shadows: ``stored`` (if any) with a balanced block appended.

    ``stored`` must have been made with this seed, pool, training-set size and base data
    (``data``, the dataset's digest): its shadows may already be trained, and mixing designs
    would break the balance, or train shadows on other records, silently.
    """
    if stored is not None:
        if stored.data != data:
            raise ValueError(
                "the stored shadow design was made for other base data (or by an older "
                "train_shadows.py that did not record it); delete that scenario's shadows "
                "folder, or point --data-dir at the data it was made for"
            )
        same = (
            stored.seed == seed
            and stored.scenario_index == scenario_index
            and stored.len_training == task.len_training
            and stored.dataset_len == task.dataset_len
            and np.array_equal(stored.pool, pool)
        )
        if not same:
            raise ValueError(
                f"the stored shadow design was made with --seed {stored.seed} (or another "
                "bundle); rerun with that seed, or delete that scenario's shadows folder"
            )
        if stored.models >= models:
            return stored
    old = stored.keep if stored is not None else np.zeros((0, len(pool)), dtype=bool)
    k = pool_size_per_shadow(len(pool), task.dataset_len, task.len_training)
    added = models - len(old)
    rng = np.random.default_rng([seed, _POOL_TAG, scenario_index, len(old), models])
    counts = level_counts(old.sum(axis=0), added, added * k, rng)
    block = fill_rows(counts, added, rng)
    return Design(
        seed=seed,
        scenario_index=scenario_index,
        pool=pool,
        keep=np.concatenate([old, block]),
        dataset_len=task.dataset_len,
        len_training=task.len_training,
        data=data,
    )
