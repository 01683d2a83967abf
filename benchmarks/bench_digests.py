"""What the content digests of issue 22 add to ``save_preds.py``, measured in the same run.

Two parts:

* ``--root R`` (a demo built with ``download_files.py --challenge C --demo --root R``): runs
  ``python save_preds.py`` on it twice, as a user does (a process each, imports included),
  cold (no caches) and warm (every model from its cache), and times apart, in this process,
  what the digests cost in each: the parsed base dataset's digest (every run) and the weight
  files' digests (hashed on a cold run; one ``stat`` and a store lookup on a warm one).  Prints
  each cost and its share of the ``save_preds.py`` run it belongs to.
* ``--mico-sized``: ``--models`` files of ``--size-mb`` random bytes (MICO's CIFAR-10 bundle:
  300 models of 3.9 MB), hashed with :func:`mico.digests.hash_file` against a plain read of the
  same files (the baseline: the bytes must be read anyway), then the warm check.  The files were
  just written, so both read from the page cache; a cold disk adds its read time to both.

    python -m benchmarks.bench_digests --challenge purchase100 --root R
    python -m benchmarks.bench_digests --mico-sized [--models 300 --size-mb 3.9]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mico.digests import DigestStore, file_digest, hash_file, stamp
from mico.layout import challenge_dir, data_root, model_dirs
from mico.tasks import PHASES, load_task


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def weight_files(root: Path, challenge: str) -> list[Path]:
    """Every weight file of the bundle's models (what save_preds hashes)."""
    task = load_task(root, challenge)
    files = []
    for scenario in task.scenarios:
        part = task.at(scenario)
        for phase in PHASES:
            for folder in model_dirs(challenge_dir(root, challenge) / scenario, phase):
                files.extend(folder / name for name in part.model_files)
    return files


def warm_check(files: list[Path], store: DigestStore) -> None:
    """What a rerun does per weight file: one stat, one store lookup."""
    for path in files:
        assert store.lookup(str(path.resolve()), stamp(path)) is not None


def bench_demo(challenge: str, root: Path) -> None:
    task = load_task(root, challenge)
    script = Path(__file__).resolve().parent.parent / "save_preds.py"
    with tempfile.TemporaryDirectory() as scratch:
        argv = [sys.executable, str(script), "--challenge", challenge, "--root", str(root)]
        argv += ["--preds-dir", scratch, "-q"]
        run = subprocess.DEVNULL
        cold = timed(lambda: subprocess.run(argv, check=True, stdout=run, stderr=run))
        warm = timed(lambda: subprocess.run(argv, check=True, stdout=run, stderr=run))
        dataset = task.load_dataset(data_root(root))  # a fresh object: its digest not yet made
        data = timed(lambda: dataset.digest)
        files = weight_files(root, challenge)
        size = sum(path.stat().st_size for path in files)
        hashing = timed(lambda: [hash_file(path) for path in files])
        store = DigestStore(Path(scratch) / "bench_digests.json")
        for path in files:
            file_digest(path, store)
        store.save()
        reread = DigestStore(store.path)
        lookups = timed(lambda: warm_check(files, reread))
    print(
        f"{challenge} demo in {root}: {len(files)} weight files, {size / 1e6:.1f} MB; "
        f"dataset {len(dataset)} records, {dataset.x.numpy().nbytes / 1e6:.1f} MB"
    )
    print(f"{'':<26}{'save_preds (s)':>15}{'digests (s)':>13}{'share':>8}")
    for name, total, cost in (
        ("cold (no caches)", cold, data + hashing),
        ("warm (all cached)", warm, data + lookups),
    ):
        print(f"{name:<26}{total:>15.2f}{cost:>13.4f}{cost / total:>8.2%}")
    print(
        f"  of which: dataset digest {data:.4f} s (every run), weights hashed {hashing:.4f} s "
        f"(cold), stat + lookup {lookups:.4f} s (warm)"
    )


def bench_mico_sized(models: int, size_mb: float) -> None:
    size = int(size_mb * 1e6)
    with tempfile.TemporaryDirectory() as scratch:
        files = []
        for index in range(models):
            path = Path(scratch) / f"model_{index}.pt"
            path.write_bytes(os.urandom(size))
            files.append(path)

        def read_all() -> None:
            for path in files:
                with open(path, "rb") as handle:
                    while handle.read(1 << 22):
                        pass

        read = timed(read_all)
        hashing = timed(lambda: [hash_file(path) for path in files])
        store = DigestStore(Path(scratch) / "digests.json")
        for path in files:
            file_digest(path, store)
        store.save()
        reread = DigestStore(store.path)
        lookups = timed(lambda: warm_check(files, reread))
    total = models * size / 1e9
    print(f"{models} files of {size_mb} MB ({total:.2f} GB), page cache:")
    print(
        f"  plain read {read:.2f} s; SHA-256 {hashing:.2f} s ({total / hashing:.2f} GB/s), "
        f"{hashing / read:.2f}x the read; warm check {lookups * 1e3:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--challenge", default="purchase100")
    parser.add_argument("--root", type=Path, help="a demo root (download_files.py --demo)")
    parser.add_argument("--mico-sized", action="store_true", help="hash MICO-sized weights")
    parser.add_argument("--models", type=int, default=300)
    parser.add_argument("--size-mb", type=float, default=3.9)
    args = parser.parse_args()
    if args.root is None and not args.mico_sized:
        parser.error("give --root (a demo) and/or --mico-sized")
    if args.root is not None:
        bench_demo(args.challenge, args.root)
    if args.mico_sized:
        bench_mico_sized(args.models, args.size_mb)


if __name__ == "__main__":
    main()
