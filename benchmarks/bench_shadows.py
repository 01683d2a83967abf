"""train_shadows throughput against a bare ``training.train_model`` loop on the same jobs.

For each track it builds a small demo bundle (the preset's data size and epochs, one model per
phase: only the bundle's seeds and recipe matter here), then times, in one process:

* baseline: for each shadow job, ``train_model`` on exactly the job's records, with the job's
  seed, DP target and noise, and nothing else (no design, no accuracy, no files);
* ``mico.train.shadows.run``: the whole step from an empty shadows folder: the design (computed
  again: the jobs above stored one, which is removed first), data loading, training, held-out
  accuracy and the atomic folder writes.

DP noise is calibrated before both (the PRV accountant's result is cached per setting), so
neither side pays for it.  It prints models per minute for each and their ratio (target: at
least 0.9).

    python -m benchmarks.bench_shadows                       # both tracks, CPU
    python -m benchmarks.bench_shadows --device cuda --models 8
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
import time
from pathlib import Path

import torch

import download_files
from mico.bundle.layout import SHADOWS_DIR, data_root
from mico.tracks.devices import resolve_device
from mico.tracks.registry import TASKS, load_task
from mico.train.engine import train_model
from mico.train.farm import with_noise
from mico.train.shadows import ShadowOptions, resolve_recipe, run, scenario_jobs


def bench_track(challenge: str, root: Path, args: argparse.Namespace) -> tuple[float, float, int]:
    """``(bare seconds, train_shadows seconds, models)`` for one track."""
    common = ["--challenge", challenge, "--root", str(root), "-q"]
    demo = ["--demo", args.preset, "--train-models", "1", "--eval-models", "1"]
    assert download_files.main([*common, *demo, "--device", args.device]) == 0
    task = load_task(root, challenge)
    options = ShadowOptions(
        challenge=challenge,
        root=root,
        models=args.models,
        scenarios=tuple(args.scenarios),
        device=args.device,
        workers=1,
    )
    choice = resolve_recipe(root, task, None)
    dataset = task.load_dataset(data_root(root))
    jobs = [
        job
        for scenario in (f"{challenge}_{s}" for s in args.scenarios)
        for job in scenario_jobs(options, task, scenario, choice, dataset.digest)[1]
    ]
    jobs = with_noise(jobs, choice.recipe)  # calibrates every DP target once, for both sides
    shutil.rmtree(root / SHADOWS_DIR)  # the design scenario_jobs stored: run() makes its own
    device = resolve_device(args.device)
    x, y = dataset.x.to(device), dataset.y.to(device)

    start = time.perf_counter()
    for job in jobs:
        rows = torch.from_numpy(job.train_rows).to(device)
        train_model(
            task,
            x[rows],
            y[rows],
            choice.recipe,
            privacy=job.privacy,
            noise_multiplier=job.noise_multiplier,
            seed=job.train_seed,
            device=device,
        )
    if device.type == "cuda":
        torch.cuda.synchronize()
    bare = time.perf_counter() - start

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        assert run(options) == 0
    farm = time.perf_counter() - start
    return bare, farm, len(jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    single = sorted(name for name, task in TASKS.items() if not task.parts)  # train_shadows'
    parser.add_argument(
        "--challenge", nargs="+", default=["cifar10", "purchase100"], choices=single
    )
    parser.add_argument("--preset", default="default", choices=("default", "tiny"))
    parser.add_argument("--models", type=int, default=4, help="shadows per scenario")
    parser.add_argument("--scenarios", nargs="+", default=["inf", "hi"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"{'track':<12} {'models':>6} {'bare/min':>9} {'shadows/min':>12} {'ratio':>6}")
    for challenge in args.challenge:
        with tempfile.TemporaryDirectory() as tmp:
            bare, farm, models = bench_track(challenge, Path(tmp), args)
        print(
            f"{challenge:<12} {models:>6} {60 * models / bare:>9.1f} {60 * models / farm:>12.1f} "
            f"{bare / farm:>6.2f}"
        )


if __name__ == "__main__":
    main()
