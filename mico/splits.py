"""MICO's split reconstruction, exact and without torchcsprng.

MICO derives each model's data from three seeds with ``torch.utils.data.random_split`` driven by
torchcsprng's Mersenne-Twister generator (abandoned; it pins torch 1.8.1).  That generator is the
standard 32-bit MT19937 seeded with the low 32 bits of the seed, and its ``randperm(n)`` is a
forward Fisher-Yates shuffle that draws one 32-bit word per step (MICO.md section 4)::

    dataset (N) --seed_challenge--> challenge (2m) + rest (N - 2m)
    rest        --seed_training---> training (n - m) + evaluation (N - n - m)
    challenge   --seed_membership-> nonmember (m) + member (m)

A model trains on ``member + training``.  ``member`` holds positions *inside* ``challenge`` and
``training`` positions inside ``rest``: the 2nd-place code compared those positions with dataset
indices, which is why its IN/OUT sets were wrong.  :func:`split_indices` maps everything back to
dataset indices; :class:`ChallengeDataset` keeps MICO's nested ``Subset`` API.

Exactness is established against ``shared/fixtures/mico_splits.json`` (made by an independent C++
``std::mt19937`` implementation) and against a pure-Python MT19937 in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numba
import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

_MASK32 = 0xFFFFFFFF

#: MICO's ``m``: members (and non-members) among a model's challenge points, the default of
#: :meth:`ChallengeDataset.from_path`.
LEN_CHALLENGE = 100

C = TypeVar("C", bound="ChallengeDataset")


def mt19937_words(seed: int, count: int) -> np.ndarray:
    """The first ``count`` 32-bit outputs of ``std::mt19937`` seeded with ``seed & 0xFFFFFFFF``.

    numpy's legacy ``RandomState`` seeds MT19937 with the reference ``init_genrand`` for a
    32-bit integer, and ``randint(0, 2**32, dtype=uint32)`` returns the raw words unchanged (the
    full range needs no rejection), so this is the C++ generator at C speed.
    """
    if seed < 0:
        raise ValueError(f"seeds are non-negative integers, got {seed}")
    state = np.random.RandomState(int(seed) & _MASK32)
    return state.randint(0, 2**32, size=max(count, 0), dtype=np.uint32)


@numba.njit(cache=True, nogil=True)
def _fisher_yates(n: int, words: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    perm = np.arange(n)
    for i in range(words.shape[0]):
        j = i + words[i] % (n - i)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def randperm(n: int, seed: int, head: int | None = None) -> np.ndarray:
    """torchcsprng's ``randperm(n)`` for an MT19937 generator seeded with ``seed``.

    Step ``i`` swaps ``r[i]`` with ``r[i + u_i % (n - i)]``, so ``r[i]`` is final after step
    ``i``: with ``head`` only the first ``head`` entries are computed (the challenge points of a
    dev/final model need 200 steps, not 197k).  The swaps depend on each other, so they run as
    one compiled loop (numba): about 2 ms for n = 197324, where the same loop over Python ints
    took 30-55 ms and was the slowest part of ``save_preds.py`` on a GPU.
    """
    if n <= 1:
        return np.arange(max(n, 0), dtype=np.int64)[:head]
    steps = n - 1 if head is None else min(head, n - 1)
    words = mt19937_words(seed, steps).astype(np.int64)
    perm = _fisher_yates(n, words)
    return perm if head is None else perm[:head].copy()


def challenge_indices(dataset_len: int, len_challenge: int, seed_challenge: int) -> np.ndarray:
    """Dataset indices [2m] of a model's challenge points, in challenge order (fast path)."""
    return randperm(dataset_len, seed_challenge, head=2 * len_challenge)


def random_split_indices(n: int, lengths: tuple[int, int], seed: int) -> tuple[np.ndarray, ...]:
    """Positions of ``random_split(range(n), lengths, generator=MT19937(seed))``."""
    if sum(lengths) != n:
        raise ValueError(f"split lengths {lengths} do not add up to {n}")
    perm = randperm(n, seed)
    return perm[: lengths[0]], perm[lengths[0] :]


@dataclass(frozen=True)
class Splits:
    """One model's MICO splits as dataset indices (int64 arrays), in MICO's order.

    ``challenge`` [2m] is the challenge order used by ``solution.csv`` and ``prediction.csv``;
    ``solution`` [2m] (int8, 1 = member) and the training/member arrays are ``None`` when the
    corresponding seed is unknown (``dev``/``final`` models only publish ``seed_challenge``).
    """

    dataset_len: int
    challenge: np.ndarray
    rest: np.ndarray
    training: np.ndarray | None = None
    evaluation: np.ndarray | None = None
    member: np.ndarray | None = None
    nonmember: np.ndarray | None = None
    solution: np.ndarray | None = None

    def training_mask(self) -> np.ndarray:
        """Boolean [dataset_len]: True for every dataset index the model trained on."""
        if self.training is None or self.member is None:
            raise ValueError("training membership needs seed_training and seed_membership")
        mask = np.zeros(self.dataset_len, dtype=bool)
        mask[self.training] = True
        mask[self.member] = True
        return mask


@dataclass(frozen=True)
class _Positions:
    """Each split as positions in its parent, the nesting MICO's ``Subset`` tree uses."""

    challenge: np.ndarray  # into the dataset
    rest: np.ndarray  # into the dataset
    training: np.ndarray | None  # into rest
    evaluation: np.ndarray | None  # into rest
    nonmember: np.ndarray | None  # into challenge
    member: np.ndarray | None  # into challenge


def _split_positions(
    dataset_len: int,
    len_training: int,
    len_challenge: int,
    seed_challenge: int,
    seed_training: int | None,
    seed_membership: int | None,
) -> _Positions:
    m, n, big_n = len_challenge, len_training, dataset_len
    if m < 1 or n <= m or big_n < n + m:
        raise ValueError(
            f"inconsistent sizes: dataset_len={big_n}, len_training={n}, len_challenge={m}"
        )
    challenge, rest = random_split_indices(big_n, (2 * m, big_n - 2 * m), seed_challenge)
    training = evaluation = member = nonmember = None
    if seed_training is not None:
        lengths = (n - m, big_n - n - m)
        training, evaluation = random_split_indices(big_n - 2 * m, lengths, seed_training)
    if seed_membership is not None:
        nonmember, member = random_split_indices(2 * m, (m, m), seed_membership)
    return _Positions(challenge, rest, training, evaluation, nonmember, member)


def split_indices(
    dataset_len: int,
    len_training: int,
    len_challenge: int,
    seed_challenge: int,
    seed_training: int | None = None,
    seed_membership: int | None = None,
) -> Splits:
    """Reconstruct MICO's splits of one model as dataset-index arrays (the pipeline's fast path)."""
    pos = _split_positions(
        dataset_len, len_training, len_challenge, seed_challenge, seed_training, seed_membership
    )
    training = evaluation = member = nonmember = solution = None
    if pos.training is not None and pos.evaluation is not None:
        training, evaluation = pos.rest[pos.training], pos.rest[pos.evaluation]
    if pos.member is not None and pos.nonmember is not None:
        member, nonmember = pos.challenge[pos.member], pos.challenge[pos.nonmember]
        solution = np.zeros(2 * len_challenge, dtype=np.int8)
        solution[pos.member] = 1
    return Splits(
        dataset_len, pos.challenge, pos.rest, training, evaluation, member, nonmember, solution
    )


def read_seed(path: str | Path) -> int:
    """Read a MICO ``seed_*`` file: one non-negative decimal integer (int64) and a newline."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("ascii", errors="replace").strip()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: seed file missing; is the bundle complete?") from None
    except IsADirectoryError:
        raise ValueError(
            f"{path}: a folder where the seed file belongs; restore the file (download_files.py)"
        ) from None
    except OSError as exc:
        raise OSError(f"{path}: cannot read the seed file ({exc.strerror}); check it") from None
    # ASCII digits only: str.isdigit() accepts "²", which int() then refuses without a path.
    if not (text.isascii() and text.isdigit()) or int(text) >= 2**63:
        raise ValueError(f"{path}: expected a non-negative int64 seed, got {text[:40]!r}")
    return int(text)


class ChallengeDataset:
    """Drop-in for ``mico_competition.ChallengeDataset``: MICO's nested ``Subset`` tree.

    ``challenge``/``rest`` are subsets of ``dataset``, ``training``/``evaluation`` subsets of
    ``rest`` and ``nonmember``/``member`` subsets of ``challenge``, exactly as MICO builds them,
    so code written against the competition package sees the same objects.  Seeds that are
    ``None`` leave the subsets that depend on them as ``None``.
    """

    def __init__(
        self,
        dataset: Dataset,
        len_training: int,
        len_challenge: int,
        seed_challenge: int,
        seed_training: int | None = None,
        seed_membership: int | None = None,
    ) -> None:
        self.dataset = dataset
        self.len_training = len_training
        self.len_challenge = len_challenge
        self.len_dataset = len(dataset)  # type: ignore[arg-type]
        pos = _split_positions(
            self.len_dataset,
            len_training,
            len_challenge,
            seed_challenge,
            seed_training,
            seed_membership,
        )
        self.challenge = Subset(dataset, pos.challenge.tolist())
        self.rest = Subset(dataset, pos.rest.tolist())
        self.training = self.evaluation = self.member = self.nonmember = None
        if pos.training is not None and pos.evaluation is not None:
            self.training = Subset(self.rest, pos.training.tolist())
            self.evaluation = Subset(self.rest, pos.evaluation.tolist())
        if pos.member is not None and pos.nonmember is not None:
            self.nonmember = Subset(self.challenge, pos.nonmember.tolist())
            self.member = Subset(self.challenge, pos.member.tolist())

    @classmethod
    def from_path(
        cls: type[C],
        path: str | Path,
        dataset: Dataset,
        len_training: int,
        len_challenge: int = LEN_CHALLENGE,
    ) -> C:
        """Build from a model folder; ``seed_training``/``seed_membership`` may be absent.

        A classmethod, as MICO's is, so a subclass gets instances of itself.
        """
        path = Path(path)
        seeds = {}
        for name in ("seed_training", "seed_membership"):
            seeds[name] = read_seed(path / name) if (path / name).exists() else None
        return cls(
            dataset,
            len_training,
            len_challenge,
            read_seed(path / "seed_challenge"),
            seeds["seed_training"],
            seeds["seed_membership"],
        )

    def get_challenges(self) -> Subset:
        """The 2m challenge points in challenge order."""
        return self.challenge

    def get_solutions(self) -> list[int]:
        """1 for each challenge point that is a member, in challenge order."""
        if self.member is None:
            raise ValueError("solutions need seed_membership (only train models publish it)")
        members = set(self.member.indices)
        return [int(k in members) for k in range(len(self.challenge))]

    def get_train_dataset(self) -> Dataset:
        """What the model trained on: members first, then the rest of its training set."""
        if self.member is None or self.training is None:
            raise ValueError("the training set needs seed_training and seed_membership")
        return ConcatDataset([self.member, self.training])

    def get_eval_dataset(self) -> Dataset:
        """Points of ``rest`` the model never saw."""
        if self.evaluation is None:
            raise ValueError("the evaluation set needs seed_training")
        return self.evaluation


def subset_dataset_indices(subset: Subset) -> torch.Tensor:
    """Dataset indices of a (possibly nested) ``Subset``, resolving each level of nesting."""
    indices = torch.as_tensor(subset.indices, dtype=torch.long)
    parent = subset.dataset
    while isinstance(parent, Subset):
        indices = torch.as_tensor(parent.indices, dtype=torch.long)[indices]
        parent = parent.dataset
    return indices
