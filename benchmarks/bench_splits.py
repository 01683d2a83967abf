"""Time MICO split reconstruction at Purchase-100 size (N = 197324), against a naive baseline.

The baseline is a straightforward pure-Python implementation (MT19937 in Python, element-wise
Fisher-Yates), the kind of code one writes without numpy's C generator; both produce identical
splits, which this script checks before timing.

    python -m benchmarks.bench_splits [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mico.bundle.splits import split_indices
from mico.tracks.registry import get_task
from tests.reference import mt19937_reference


def _python_randperm(n: int, seed: int) -> list[int]:
    words = mt19937_reference(seed, n - 1)
    perm = list(range(n))
    for i in range(n - 1):
        j = i + words[i] % (n - i)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def _python_splits(big_n: int, n: int, m: int, seeds: tuple[int, int, int]) -> list[int]:
    perm = _python_randperm(big_n, seeds[0])
    challenge, rest = perm[: 2 * m], perm[2 * m :]
    training = [rest[i] for i in _python_randperm(big_n - 2 * m, seeds[1])[: n - m]]
    member = [challenge[i] for i in _python_randperm(2 * m, seeds[2])[m:]]
    return challenge + member + training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    task = get_task("purchase100")
    rng = np.random.default_rng(0)
    seeds = tuple(int(s) for s in rng.integers(0, 2**63 - 1, size=3))
    sizes = (task.dataset_len, task.len_training, task.len_challenge)

    start = time.perf_counter()
    reference = _python_splits(*sizes, seeds)
    baseline = time.perf_counter() - start

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        s = split_indices(*sizes, *seeds)
        times.append(time.perf_counter() - start)
    ours = np.concatenate([s.challenge, s.member, s.training]).tolist()
    if ours != reference:
        raise SystemExit("mismatch between split_indices and the pure-Python reference")
    best = min(times)
    print(f"purchase100 splits (N={task.dataset_len}, all three seeds), identical results")
    print(f"  pure-Python baseline : {baseline:8.3f} s")
    median = np.median(times)
    print(
        f"  split_indices        : {best:8.3f} s   (best of {args.repeats}; median {median:.3f} s)"
    )
    print(f"  speed-up             : {baseline / best:8.1f}x")
    print(f"  target < 0.2 s       : {'met' if best < 0.2 else 'MISSED'}")


if __name__ == "__main__":
    main()
