"""Time the intervals of a whole ``--compare`` table against a naive per-replicate loop.

MICO's shape: 3 scenarios, 25 rows each (the rows of ``--compare`` on a CIFAR-10 or
Purchase-100 bundle), 100 train targets x 200 challenge points, B = 1000 replicates, and for
every row the intervals of TPR@0.1%, TPR@1%, TPR@10% and AUC.  Predictions are synthetic
(member scores shifted, each target by its own offset) with a share of ties, as
cross-validated rows and discrete attacks produce.

Ours: :class:`mico.attacks.audit.ClusterBootstrap` per row (sort once, per-model count tables,
every replicate a vector of draw counts).  Baseline, in the same run: the obvious loop, which
builds each replicate's concatenation of drawn models and calls ``mico.scoring.metrics`` (one
ROC per replicate).  The baseline is timed on ``--naive-rows`` rows and reported per row,
extrapolated to the table: running it on all 75 would take several minutes.

    python -m benchmarks.bench_bootstrap          # the full table
    python -m benchmarks.bench_bootstrap --quick  # 2 rows a scenario, 200 replicates
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

if not __package__:  # run as `python benchmarks/bench_bootstrap.py`: import this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mico import scoring
from mico.attacks.audit import ClusterBootstrap, bootstrap_counts, percentile_interval

LIMITS = (0.001, 0.01, 0.1)


def make_rows(rng: np.random.Generator, rows: int, targets: int, points: int) -> list:
    """``rows`` prediction sets ``[T, K]`` over one solution, some with rounded (tied) scores."""
    solution = np.zeros((targets, points), dtype=np.int8)
    for row in solution:
        row[rng.permutation(points)[: points // 2]] = 1
    made = []
    for i in range(rows):
        offset = rng.normal(0, 0.5, (targets, 1))
        scores = rng.normal(size=(targets, points)) + (0.5 + 0.05 * i) * solution + offset
        confidence = 1 / (1 + np.exp(-scores))
        if i % 3 == 2:  # a third of the rows with ties, as CV quantiles and RMIA produce
            confidence = np.round(confidence, 3)
        made.append(confidence)
    return [solution, made]


def ours(solution: np.ndarray, rows: list[np.ndarray], n_boot: int, seed: int) -> list:
    """Intervals of every row, as ``--compare`` computes them."""
    targets, points = solution.shape
    models = np.repeat(np.arange(targets), points)
    counts = bootstrap_counts(targets, n_boot, seed)
    found = []
    for predictions in rows:
        boot = ClusterBootstrap(predictions.ravel(), solution.ravel(), models)
        point = np.r_[boot.tpr(boot.ones(), LIMITS)[0], boot.auc(boot.ones())]
        reps = np.column_stack([boot.tpr(counts, LIMITS), boot.auc(counts)])
        found.append([percentile_interval(p, reps[:, j], 0.95) for j, p in enumerate(point)])
    return found


def naive(solution: np.ndarray, rows: list[np.ndarray], n_boot: int, seed: int) -> list:
    """The same intervals from one concatenation and one official ROC per replicate."""
    counts = bootstrap_counts(solution.shape[0], n_boot, seed)
    found = []
    for predictions in rows:
        reps = np.empty((n_boot, 4))
        for b, drawn in enumerate(counts):
            picked = np.repeat(np.arange(solution.shape[0]), drawn)
            y, s = solution[picked].ravel(), predictions[picked].ravel()
            m = scoring.metrics(y, s)
            reps[b] = [m["TPR_FPR_10"], m["TPR_FPR_100"], m["TPR_FPR_1000"], m["AUC"]]
        m = scoring.metrics(solution, predictions)
        point = [m["TPR_FPR_10"], m["TPR_FPR_100"], m["TPR_FPR_1000"], m["AUC"]]
        found.append([percentile_interval(p, reps[:, j], 0.95) for j, p in enumerate(point)])
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=3)
    parser.add_argument("--rows", type=int, default=25, help="rows a scenario (default 25)")
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--naive-rows", type=int, default=2, help="rows the baseline runs")
    parser.add_argument("--quick", action="store_true", help="2 rows a scenario, B = 200")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.bootstrap = 2, 200
    rng = np.random.default_rng(0)
    tables = [make_rows(rng, args.rows, args.targets, args.points) for _ in range(args.scenarios)]

    start = time.perf_counter()
    results = [ours(sol, rows, args.bootstrap, s) for s, (sol, rows) in enumerate(tables)]
    ours_total = time.perf_counter() - start
    ours_row = ours_total / (args.scenarios * args.rows)

    naive_rows = min(args.naive_rows, args.rows)
    solution, rows = tables[0]
    start = time.perf_counter()
    baseline = naive(solution, rows[:naive_rows], args.bootstrap, 0)
    naive_row = (time.perf_counter() - start) / naive_rows
    for mine, theirs in zip(results[0][:naive_rows], baseline, strict=True):
        for a, b in zip(mine, theirs, strict=True):  # the same draws give the same intervals
            assert np.allclose(a, b, rtol=1e-12, atol=1e-12), (a, b)

    cells = args.scenarios * args.rows
    print(
        f"{args.scenarios} scenarios x {args.rows} rows, {args.targets} targets x {args.points} "
        f"points, B = {args.bootstrap}: TPR@0.1%/1%/10% and AUC intervals"
    )
    print(f"  ours:  {ours_total:7.2f} s for the table ({ours_row * 1000:.0f} ms a row)")
    print(
        f"  naive: {naive_row:7.2f} s a row (timed on {naive_rows}), about "
        f"{naive_row * cells:.0f} s for the table"
    )
    print(f"  ratio: {naive_row / ours_row:.1f}x (same intervals: checked on {naive_rows} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
