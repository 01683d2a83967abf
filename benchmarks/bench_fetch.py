"""Time both transfer paths against baselines measured in the same run, on a local server.

1. Plain URL (a base-data tarball, a ``--url`` zip): :class:`mico.fetch.urls.Fetcher` against
   ``pooch.retrieve`` with an md5 (when pooch is importable): seconds for a whole file, then
   the bytes the server sends to finish a transfer cut at half (the kept ``.part`` resumes;
   pooch deletes its temporary file and a rerun starts again).
2. Hub bundle files: :func:`mico.fetch.hub.fetch_files` (huggingface_hub: a HEAD and a GET per
   file, metadata written beside) against bare threaded GETs of the same resolve URLs with
   ``requests`` (what the hand-written client did), both with 8 workers.

The server is the suite's fake hub (``tests/fake_hub.py``) on 127.0.0.1, so the numbers are
the clients' own cost, not a network's.

    python -m benchmarks.bench_fetch [--mb 64] [--files 400]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

import mico.fetch.urls
from mico.fetch import hub
from tests.fake_hub import library_env, start_server


def _plain(state, data: bytes, scratch: Path) -> None:
    url, md5 = f"{state.url}/file.bin", hashlib.md5(data).hexdigest()
    state.files["/file.bin"] = data
    mico.fetch.urls.BACKOFF_START_S = 0.0
    with mico.fetch.urls.Fetcher(retries=5, quiet=True) as fetcher:
        start = time.perf_counter()
        fetcher.download(url, scratch / "ours.bin", kind="url", md5=md5, desc="")
        ours = time.perf_counter() - start
        sent = state.bytes_sent()
        state.cut_once["/file.bin"] = len(data) // 2
        fetcher.download(url, scratch / "ours_cut.bin", kind="url", md5=md5, desc="")
        ours_cut = state.bytes_sent() - sent
    print(f"plain URL, {len(data) >> 20} MiB: mico.fetch.urls {ours:.2f} s")
    if importlib.util.find_spec("pooch") is None:
        print("  pooch not installed, no comparison")
        print(f"  to finish a transfer cut at half: {ours_cut / len(data):.2f} x the file")
        return
    import pooch

    pooch.get_logger().setLevel("WARNING")
    start = time.perf_counter()
    pooch.retrieve(url, f"md5:{md5}", fname="pooch.bin", path=scratch, progressbar=False)
    theirs = time.perf_counter() - start
    print(f"  pooch {pooch.__version__} {theirs:.2f} s (ratio to ours {theirs / ours:.2f})")
    sent = state.bytes_sent()
    state.cut_once["/file.bin"] = len(data) // 2
    try:
        pooch.retrieve(url, f"md5:{md5}", fname="pooch_cut.bin", path=scratch, progressbar=False)
    except Exception as exc:  # pooch does not retry: the user reruns
        print(f"  pooch after the cut: {type(exc).__name__}; rerun")
        pooch.retrieve(url, f"md5:{md5}", fname="pooch_cut.bin", path=scratch, progressbar=False)
    theirs_cut = state.bytes_sent() - sent
    print(
        f"  bytes sent to finish a transfer cut at half: mico.fetch.urls "
        f"{ours_cut / len(data):.2f} x the file, pooch {theirs_cut / len(data):.2f} x"
    )


def _hub(state, count: int, scratch: Path) -> None:
    rng = np.random.default_rng(0)
    files = {}
    for i in range(count // 2):
        files[f"s/m_{i}/seed_challenge"] = f"{rng.integers(0, 2**62)}\n".encode()
        files[f"s/m_{i}/model.pt"] = rng.bytes(64 << 10)
    repo = state.add_repo("bench/bundle", files)
    commit = repo.refs["main"]
    paths = sorted(files)
    session = requests.Session()

    def get(path: str) -> None:
        url = f"{state.url}/datasets/bench/bundle/resolve/{commit}/{path}"
        target = scratch / "bare" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(session.get(url, timeout=60).content)

    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(get, paths))
    bare = time.perf_counter() - start
    with library_env(HF_ENDPOINT=state.url, HF_HOME=str(scratch / "hf_home")):
        start = time.perf_counter()
        target = hub.HubRepo("bench/bundle")
        hub.fetch_files(target, commit, scratch / "hub", paths, jobs=8, quiet=True, desc="")
        ours = time.perf_counter() - start
        start = time.perf_counter()
        hub.fetch_files(target, commit, scratch / "hub", paths, jobs=8, quiet=True, desc="")
        rerun = time.perf_counter() - start
    size = sum(map(len, files.values())) >> 20
    print(
        f"hub, {len(paths)} files ({size} MiB): huggingface_hub {ours:.2f} s, bare GETs "
        f"{bare:.2f} s (ratio {ours / bare:.2f}); rerun with everything there {rerun:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=64, help="plain-URL file size (MiB)")
    parser.add_argument("--files", type=int, default=400, help="hub files")
    args = parser.parse_args()
    running = start_server()
    try:
        with tempfile.TemporaryDirectory() as folder:
            scratch = Path(folder)
            _plain(running.state, os.urandom(args.mb << 20), scratch)
            _hub(running.state, args.files, scratch)
    finally:
        running.stop()


if __name__ == "__main__":
    main()
