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

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mico.errors import InputError

_MASK32 = 0xFFFFFFFF


def mt19937_words(seed: int, count: int) -> np.ndarray:
    """The first ``count`` 32-bit outputs of ``std::mt19937`` seeded with ``seed & 0xFFFFFFFF``.

    numpy's legacy ``RandomState`` seeds MT19937 with the reference ``init_genrand`` for a
    32-bit integer, and ``randint(0, 2**32, dtype=uint32)`` returns the raw words unchanged (the
    full range needs no rejection), so this is the C++ generator at C speed.
    """
    if seed < 0:
        raise InputError(f"seeds are non-negative integers, got {seed}")
    state = np.random.RandomState(int(seed) & _MASK32)
    return state.randint(0, 2**32, size=max(count, 0), dtype=np.uint32)


def _fisher_yates_loop(n: int, words: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    perm = np.arange(n)
    for i in range(words.shape[0]):
        j = i + words[i] % (n - i)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


@functools.cache
def _fisher_yates() -> Callable[[int, np.ndarray], np.ndarray]:
    """The swap loop compiled by numba, imported on the first split (not with the package:
    a script's ``--help`` needs no compiler)."""
    import numba

    return numba.njit(cache=True, nogil=True)(_fisher_yates_loop)


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
    perm = _fisher_yates()(n, words)
    return perm if head is None else perm[:head].copy()


def challenge_indices(dataset_len: int, len_challenge: int, seed_challenge: int) -> np.ndarray:
    """Dataset indices [2m] of a model's challenge points, in challenge order (fast path)."""
    return randperm(dataset_len, seed_challenge, head=2 * len_challenge)


def random_split_indices(n: int, lengths: tuple[int, int], seed: int) -> tuple[np.ndarray, ...]:
    """Positions of ``random_split(range(n), lengths, generator=MT19937(seed))``."""
    if sum(lengths) != n:
        raise InputError(f"split lengths {lengths} do not add up to {n}")
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
            raise InputError("training membership needs seed_training and seed_membership")
        mask = np.zeros(self.dataset_len, dtype=bool)
        mask[self.training] = True
        mask[self.member] = True
        return mask


@dataclass(frozen=True)
class Positions:
    """Each split as positions in its parent, the nesting MICO's ``Subset`` tree uses
    (:class:`mico.compat.ChallengeDataset` builds that tree from them)."""

    challenge: np.ndarray  # into the dataset
    rest: np.ndarray  # into the dataset
    training: np.ndarray | None  # into rest
    evaluation: np.ndarray | None  # into rest
    nonmember: np.ndarray | None  # into challenge
    member: np.ndarray | None  # into challenge


def split_positions(
    dataset_len: int,
    len_training: int,
    len_challenge: int,
    seed_challenge: int,
    seed_training: int | None,
    seed_membership: int | None,
) -> Positions:
    m, n, big_n = len_challenge, len_training, dataset_len
    if m < 1 or n <= m or big_n < n + m:
        raise InputError(
            f"inconsistent sizes: dataset_len={big_n}, len_training={n}, len_challenge={m}"
        )
    challenge, rest = random_split_indices(big_n, (2 * m, big_n - 2 * m), seed_challenge)
    training = evaluation = member = nonmember = None
    if seed_training is not None:
        lengths = (n - m, big_n - n - m)
        training, evaluation = random_split_indices(big_n - 2 * m, lengths, seed_training)
    if seed_membership is not None:
        nonmember, member = random_split_indices(2 * m, (m, m), seed_membership)
    return Positions(challenge, rest, training, evaluation, nonmember, member)


def split_indices(
    dataset_len: int,
    len_training: int,
    len_challenge: int,
    seed_challenge: int,
    seed_training: int | None = None,
    seed_membership: int | None = None,
) -> Splits:
    """Reconstruct MICO's splits of one model as dataset-index arrays (the pipeline's fast path)."""
    pos = split_positions(
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


def read_seed(path: str | Path, raw: bytes | None = None) -> int:
    """Read a MICO ``seed_*`` file: one non-negative decimal integer (int64) and a newline.

    ``raw``: the file's bytes where the caller has read them already (``save_preds.py`` reads
    each seed file once, and digests the same bytes for provenance).
    """
    path = Path(path)
    try:
        data = path.read_bytes() if raw is None else raw
        text = data.decode("ascii", errors="replace").strip()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: seed file missing; is the bundle complete?") from None
    except IsADirectoryError:
        raise InputError(
            f"{path}: a folder where the seed file belongs; restore the file (download_files.py)"
        ) from None
    except OSError as exc:
        raise OSError(f"{path}: cannot read the seed file ({exc.strerror}); check it") from None
    # ASCII digits only: str.isdigit() accepts "²", which int() then refuses without a path.
    if not (text.isascii() and text.isdigit()) or int(text) >= 2**63:
        raise InputError(f"{path}: expected a non-negative int64 seed, got {text[:40]!r}")
    return int(text)
