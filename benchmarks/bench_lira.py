"""Time mico.attacks.lira against a per-point loop structured like the original 2nd-place code.

Synthetic data with MICO's shape: per scenario, 100 train models that are both the shadow
models and the train-phase targets, plus 100 dev/final targets, each with 200 challenge
points drawn from a 60000-point dataset and a 50000-point training set (CIFAR-10 sizes).

The baseline follows the original ``run_lira_mia.py``: for every target and challenge point
it builds the list of OUT shadow scores by testing the point's dataset index against each
shadow's Python list of training indices, then calls np.mean, np.std and
scipy.stats.norm.cdf. It is timed on a few random targets of one scenario and extrapolated
per point to the full shape; a second loop with O(1) membership lookups shows how much of
the gap the list scans alone account for.

    python benchmarks/bench_lira.py            # full shape (also: python -m benchmarks.bench_lira)
    python benchmarks/bench_lira.py --quick    # small shape, a few seconds
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.stats

if not __package__:  # run as `python benchmarks/bench_lira.py`: import this checkout's mico
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mico.attacks.lira import TRANSFORMS, lira
from mico.attacks.stats import VARIANCES


@dataclass
class Scenario:
    """One synthetic scenario; the first ``n_shadows`` targets are the shadow models."""

    shadow_margin: np.ndarray  # [S, P] float64
    shadow_in: np.ndarray  # [S, P] bool
    target_margin: np.ndarray  # [T, K] float64
    target_points: np.ndarray  # [T, K] int64, columns of shadow_*
    target_shadow: np.ndarray  # [T] int64, -1 for dev/final targets
    point_index: np.ndarray  # [P] dataset index of each column
    training: list[np.ndarray]  # per shadow: its training dataset indices, in split order


def make_scenario(
    rng: np.random.Generator,
    n_shadows: int,
    n_other: int,
    k: int,
    n_dataset: int,
    len_training: int,
) -> Scenario:
    """Draw MICO-like splits and margins: z = difficulty + 2 * member + N(0, 1)."""
    m = k // 2
    n_models = n_shadows + n_other
    challenge = np.empty((n_models, k), dtype=np.int64)
    member = np.zeros((n_models, k), dtype=bool)
    training = []
    for i in range(n_models):
        perm = rng.permutation(n_dataset)
        challenge[i] = perm[:k]
        member[i, rng.permutation(k)[:m]] = True
        if i < n_shadows:
            train = np.concatenate([challenge[i][member[i]], perm[k : k + len_training - m]])
            training.append(rng.permutation(train))

    point_index, columns = np.unique(challenge, return_inverse=True)
    columns = columns.reshape(challenge.shape)
    shadow_in = np.zeros((n_shadows, n_dataset), dtype=bool)
    for s, train in enumerate(training):
        shadow_in[s, train] = True
    shadow_in = shadow_in[:, point_index]

    difficulty = rng.normal(3.0, 2.0, point_index.size)
    shadow_margin = difficulty + 2.0 * shadow_in + rng.normal(size=shadow_in.shape)
    target_margin = difficulty[columns] + 2.0 * member + rng.normal(size=member.shape)
    rows = np.arange(n_shadows)
    target_margin[:n_shadows] = shadow_margin[rows[:, None], columns[:n_shadows]]
    target_shadow = np.concatenate([rows, np.full(n_other, -1)])
    return Scenario(
        shadow_margin, shadow_in, target_margin, columns, target_shadow, point_index, training
    )


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def baseline(sc: Scenario, targets: np.ndarray, scan_lists: bool) -> np.ndarray:
    """Offline LiRA, default flags, one point at a time (the original's structure).

    With ``scan_lists`` membership is ``dataset_index in training_list`` on Python lists of
    ``len_training`` indices, as the original did; otherwise an O(1) lookup in shadow_in.
    """
    margins = sc.shadow_margin.tolist()
    lists = [train.tolist() for train in sc.training] if scan_lists else None
    result = np.empty((targets.size, sc.target_points.shape[1]))
    for row, t in enumerate(targets):
        own = int(sc.target_shadow[t])
        for k, col in enumerate(sc.target_points[t].tolist()):
            index = int(sc.point_index[col])
            out_scores = []
            for s in range(len(margins)):
                if s == own:
                    continue
                is_in = index in lists[s] if scan_lists else bool(sc.shadow_in[s, col])
                if not is_in:
                    out_scores.append(_sigmoid(margins[s][col]))
            if len(out_scores) < 2:  # fallbacks are not the loop's business: not compared
                result[row, k] = np.nan
                continue
            score = _sigmoid(float(sc.target_margin[t, k]))
            mean, std = np.mean(out_scores), np.std(out_scores, ddof=1)
            result[row, k] = scipy.stats.norm.cdf(score, mean, std)
    return result


def run_lira(scenarios: list[Scenario], **flags: object) -> list[np.ndarray]:
    return [
        lira(
            sc.shadow_margin,
            sc.shadow_in,
            sc.target_margin,
            sc.target_points,
            sc.target_shadow,
            **flags,
        )
        for sc in scenarios
    ]


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shape for a smoke run")
    parser.add_argument("--scenarios", type=int, default=3)
    parser.add_argument("--baseline-targets", type=int, default=4, help="targets timed in loops")
    parser.add_argument("--repeat", type=int, default=3, help="vectorised runs, best counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.quick:
        shape = {"n_shadows": 20, "n_other": 20, "k": 50, "n_dataset": 6000, "len_training": 5000}
    else:
        shape = {
            "n_shadows": 100,
            "n_other": 100,
            "k": 200,
            "n_dataset": 60000,
            "len_training": 50000,
        }
    rng = np.random.default_rng(args.seed)
    scenarios = [make_scenario(rng, **shape) for _ in range(args.scenarios)]
    n_targets, k = scenarios[0].target_points.shape
    total_points = args.scenarios * n_targets * k
    print(
        f"shape: {args.scenarios} scenarios x {n_targets} targets x {k} points, "
        f"{shape['n_shadows']} shadow models, "
        f"P = {scenarios[0].shadow_in.shape[1]} unique points in scenario 0 "
        f"({total_points} target points in all)"
    )

    targets = np.sort(rng.choice(n_targets, args.baseline_targets, replace=False))
    vectorised = run_lira(scenarios)[0][targets]
    baseline_points = targets.size * k
    rows = []
    for label, scan in [("original structure, list scans", True), ("O(1) membership", False)]:
        start = time.perf_counter()
        reference = baseline(scenarios[0], targets, scan_lists=scan)
        seconds = time.perf_counter() - start
        per_point = seconds / baseline_points
        rows.append((label, per_point * total_points))
        print(
            f"loop baseline ({label}): {seconds:.2f} s for {baseline_points} points of "
            f"targets {targets.tolist()} = {per_point * 1e3:.3f} ms/point; EXTRAPOLATED to "
            f"{total_points} points: {per_point * total_points:.0f} s; "
            f"max |loop - vectorised| = {np.nanmax(np.abs(reference - vectorised)):.1e} "
            f"over the {np.isfinite(reference).sum()} points with >= 2 OUT models"
        )

    print("\nvectorised mico.attacks.lira, full shape, best of", args.repeat)
    print(f"{'transform':<13} {'variance':<13} {'attack':<8} {'seconds':>8} {'points/s':>11}")
    default_seconds = None
    for transform, variance, online in itertools.product(TRANSFORMS, VARIANCES, [False, True]):
        flags = {"transform": transform, "variance": variance, "online": online}
        seconds = best_time(lambda flags=flags: run_lira(scenarios, **flags), args.repeat)
        if default_seconds is None:
            default_seconds = seconds
        print(
            f"{transform:<13} {variance:<13} "
            f"{'online' if online else 'offline':<8} {seconds:8.3f} {total_points / seconds:11.0f}"
        )

    print("\nspeed-up of the default flags (prob, per-point std, offline):")
    for label, extrapolated in rows:
        print(f"  vs loop baseline ({label}): {extrapolated / default_seconds:,.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
