"""save_preds throughput against bare batched inference of the same models on the same points.

Builds one synthetic scenario at MICO's shape (random-weight models: throughput does not depend
on the weights; seeds drawn like MICO's), then times

* baseline: for each model, load it and run ``model(x[batch])`` over exactly the records
  save_preds evaluates (the unique challenge points for every shadow, own points for targets);
* ``mico.outputs.predict.save_scenario``: the whole step, split reconstruction, IN/OUT masks,
  margins, caching and the ``scores.npz`` included.

It checks that save_preds evaluates exactly unique points x shadows + targets x 2m records, and
prints both times and the throughput ratio (target: at least 0.85).

    python -m benchmarks.bench_save_preds --challenge purchase100            # full MICO shape
    python -m benchmarks.bench_save_preds --challenge cifar10 --device cuda
    python -m benchmarks.bench_save_preds --challenge cifar10 --shadows 4 --targets 4   # CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mico.bundle.records import write_solution
from mico.bundle.splits import challenge_indices, split_indices
from mico.outputs.inference import model_outputs
from mico.outputs.predict import PredictOptions, save_scenario
from mico.tracks.data import TensorPairDataset
from mico.tracks.devices import resolve_device
from mico.tracks.models import build_model, load_model
from mico.tracks.registry import get_task


def _synthetic_dataset(challenge: str, n: int, rng: np.random.Generator) -> TensorPairDataset:
    if challenge == "purchase100":
        x = torch.from_numpy((rng.random((n, 600), dtype=np.float32) < 0.05).astype(np.float32))
        y = torch.from_numpy(rng.integers(0, 100, n))
    else:
        x = torch.from_numpy(rng.standard_normal((n, 3, 32, 32), dtype=np.float32))
        y = torch.from_numpy(rng.integers(0, 10, n))
    return TensorPairDataset(x, y)


def _write_bundle(scenario: Path, task, shadows: int, targets: int, rng) -> None:
    """Model folders with MICO-like seeds (some above 2**32) and random-weight models."""
    seeds = rng.integers(0, 2**63 - 1, size=(shadows + targets, 3))
    for k in range(shadows + targets):
        phase = "train" if k < shadows else ("dev" if k < shadows + targets // 2 else "final")
        folder = scenario / phase / f"model_{k}"
        folder.mkdir(parents=True)
        (folder / "seed_challenge").write_text(f"{seeds[k, 0]}\n")
        if phase == "train":
            (folder / "seed_training").write_text(f"{seeds[k, 1]}\n")
            (folder / "seed_membership").write_text(f"{seeds[k, 2]}\n")
            splits = split_indices(
                task.dataset_len, task.len_training, task.len_challenge, *map(int, seeds[k])
            )
            write_solution(folder / "solution.csv", splits.solution)
        torch.manual_seed(k)
        torch.save(build_model(task).state_dict(), folder / "model.pt")


def _bare(scenario: Path, task, dataset, options: PredictOptions) -> tuple[float, int]:
    """Load each model and run it over the same records, nothing else (splits precomputed)."""
    shadows = sorted((scenario / "train").iterdir(), key=lambda p: int(p.name[6:]))
    targets = [p for phase in ("dev", "final") for p in sorted((scenario / phase).iterdir())]
    own = {
        p: challenge_indices(
            task.dataset_len, task.len_challenge, int((p / "seed_challenge").read_text())
        )
        for p in shadows + targets
    }
    points = np.unique(np.concatenate(list(own.values())))
    device = options.device
    start = time.perf_counter()
    x = dataset.x[points].to(device)
    records = 0
    for folder in shadows + targets:
        model = load_model(task, folder / "model.pt", device)
        xs = dataset.x[torch.from_numpy(own[folder])].to(device) if folder in targets else x
        with torch.inference_mode():
            for b in range(0, len(xs), options.batch_size):
                model(xs[b : b + options.batch_size])
        records += len(xs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--challenge", choices=["purchase100", "cifar10"], default="purchase100")
    parser.add_argument("--shadows", type=int, default=100)
    parser.add_argument("--targets", type=int, default=100, help="dev + final targets")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=4096)
    args = parser.parse_args()
    task = get_task(args.challenge)
    task = dataclasses.replace(
        task, models_per_phase=(("train", args.shadows), ("dev", 0), ("final", 0))
    )
    rng = np.random.default_rng(0)
    dataset = _synthetic_dataset(args.challenge, task.dataset_len, rng)
    options = PredictOptions(device=resolve_device(args.device), batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / task.name / task.scenarios[0]  # <root>/<challenge>/<scenario>
        _write_bundle(scenario, task, args.shadows, args.targets, rng)
        # Warm-up (kernel selection, allocator) on one model, outside both timings.
        warm = load_model(task, scenario / "train" / "model_0" / "model.pt", options.device)
        model_outputs(
            warm, dataset.x[:512].to(options.device), dataset.y[:512].to(options.device), 256
        )
        bare_s, bare_records = _bare(scenario, task, dataset, options)
        start = time.perf_counter()
        scores, records = save_scenario(scenario, Path(tmp) / "preds", task, dataset, options)
        ours_s = time.perf_counter() - start
    shadows, unique = scores.shadow_margin.shape
    expected = shadows * unique + args.targets * task.num_challenges
    if records != expected or bare_records != expected:
        raise SystemExit(f"record counts differ: {records}, {bare_records}, expected {expected}")
    print(
        f"{args.challenge} on {options.device}: {shadows} shadows x {unique} unique points "
        f"+ {args.targets} targets x {task.num_challenges} = {records} records"
    )
    print(f"  bare batched inference : {bare_s:8.2f} s  {bare_records / bare_s:12,.0f} records/s")
    print(f"  save_preds (all of it) : {ours_s:8.2f} s  {records / ours_s:12,.0f} records/s")
    print(f"  throughput ratio       : {bare_s / ours_s:8.2f}   (target >= 0.85)")


if __name__ == "__main__":
    main()
