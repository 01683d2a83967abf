"""Shared test fixtures: the split reference cases and the tiny demos, each built once.

Everything a test reads lives inside the repository (``tests/fixtures``, ``tests/golden``), so
a clone with nothing beside it passes the suite.

One fake Hugging Face hub (``tests/fake_hub.py``) serves every download test: :func:`fake_hub`.

The tiny demo of each track (bundle, reference and ``save_preds.py`` outputs with population
records) is built once per run: about 8 s (purchase100) and 20 s (cifar10) on one core.  The
suite runs on two pytest-xdist workers (``pyproject.toml``), and a session fixture is per
worker, so the demos are built under a file lock in the run's shared temporary folder: the
first worker that needs one builds it, the other reads it (:data:`FIRST` schedules the modules
so that the other is busy meanwhile).  Tests must treat it as read-only; a test that writes
into a bundle takes its own copy with :func:`tiny_copy`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from filelock import FileLock

if "PYTEST_XDIST_WORKER" in os.environ:
    # Two workers on two cores: each keeps to one BLAS/OpenMP thread (torch's intra-op pool
    # included), instead of two workers of two threads fighting over the cores (7 min 24 s ->
    # 5 min 46 s). Set before the imports below, which load torch.
    for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_variable, "1")

import download_files
import mico.fetch.urls
import save_preds
from tests.fake_hub import (
    FakeHub,
    library_env,
    make_tar,
    purchase_text,
    serve_bundle,
    start_server,
    tiny_bundle,
)

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures"
GOLDEN = TESTS / "golden"

#: Population records evaluated in the tiny demos (about 30 of the cifar10 bundle's 150 records lie
#: outside its challenge points; 7, as when it had no more).
TINY_POPULATION = {"purchase100": 100, "cifar10": 7}

#: The session fixture holding each track's tiny demo.
TINY_FIXTURE = {"purchase100": "tiny_purchase", "cifar10": "tiny_cifar"}


@pytest.fixture(autouse=True)
def _script_logging_ends_with_the_test() -> Iterator[None]:
    """Remove the stderr handler a script's ``setup_logging`` left on the root logger.

    It is bound to the ``sys.stderr`` of its test, which under ``capsys`` is closed afterwards;
    a later test that logs through the library without a script (``run_models`` directly) would
    then print "--- Logging error ---" tracebacks into its own captured stderr.  Which test runs
    before which depends on how the workers share the files, so each test cleans up after itself.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def split_cases() -> list[dict]:
    """Reference splits made by an independent C++ std::mt19937 implementation."""
    return json.loads((FIXTURES / "mico_splits.json").read_text())


def build_tiny(root: Path, challenge: str) -> Path:
    """``download_files.py --demo tiny`` then ``save_preds.py --population`` into ``root``."""
    args = ["--challenge", challenge, "--root", str(root), "-q"]
    assert download_files.main([*args, "--demo", "tiny"]) == 0
    assert save_preds.main([*args, "--population", str(TINY_POPULATION[challenge])]) == 0
    return root


def built_once(tmp_path_factory: pytest.TempPathFactory, challenge: str) -> Path:
    """The tiny demo of ``challenge``, built by the first worker of the run that asks for it.

    Without xdist this is a plain session fixture's folder.  Under xdist every worker's base
    temporary folder sits in one folder of the run; the demo is built there under a lock and
    marked done only once complete, so a worker never reads a half-built demo and a demo left
    by a crashed build is built again.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return build_tiny(tmp_path_factory.mktemp(f"tiny_{challenge}"), challenge)
    shared = tmp_path_factory.getbasetemp().parent
    root, done = shared / f"tiny_{challenge}", shared / f"tiny_{challenge}.done"
    with FileLock(shared / f"tiny_{challenge}.lock"):
        if not done.is_file():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            build_tiny(root, challenge)
            done.touch()
    return root


@pytest.fixture(scope="session")
def tiny_purchase(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny purchase100 demo with its outputs; read-only (copy it to write)."""
    return built_once(tmp_path_factory, "purchase100")


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny cifar10 demo with its outputs; read-only (copy it to write)."""
    return built_once(tmp_path_factory, "cifar10")


@pytest.fixture
def tiny_copy(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], Path]:
    """``tiny_copy(challenge)``: a private copy of that track's tiny demo root."""

    def copy(challenge: str) -> Path:
        source = request.getfixturevalue(TINY_FIXTURE[challenge])
        return Path(shutil.copytree(source, tmp_path / f"copy_{challenge}", symlinks=True))

    return copy


@pytest.fixture(scope="session")
def hub_bundles() -> dict[str, dict[str, bytes]]:
    """The purchase100 and cifar10 tiny bundles the fake hub serves, built once."""
    return {name: tiny_bundle(name) for name in ("purchase100", "cifar10")}


@pytest.fixture(scope="session")
def purchase_tgz() -> bytes:
    """A small ``dataset_purchase.tgz`` (1000 rows), built once (about a second)."""
    return make_tar({"dataset_purchase": purchase_text()})


@pytest.fixture
def fake_hub(
    hub_bundles: dict[str, dict[str, bytes]],
    purchase_tgz: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[FakeHub]:
    """The suite's fake hub on 127.0.0.1, and huggingface_hub pointed at it.

    It serves ``szanella/MICO-purchase100`` and ``szanella/MICO-CIFAR10`` (tiny bundles) and
    Purchase-100's tarball under ``/mirror``; SST-2's and DDP's layouts are added by their test
    modules from their demos (:func:`tests.fake_hub.serve_bundle`).  The library runs as a fresh
    process would with ``HF_ENDPOINT`` set to the server, an empty ``HF_HOME`` of the test's own
    (no stored token, an empty cache) and no ``HF_TOKEN``; plain-URL retries do not wait.
    """
    running = start_server()
    state = running.state
    for name, files in hub_bundles.items():
        serve_bundle(state, files, name)
    state.files["/mirror/dataset_purchase.tgz"] = purchase_tgz
    monkeypatch.setattr(mico.fetch.urls, "BACKOFF_START_S", 0.0)
    try:
        with library_env(HF_ENDPOINT=state.url, HF_HOME=str(tmp_path / "hf_home")):
            yield state
    finally:
        running.stop()


#: The modules sent out first, in this order, as a schedule for the two workers: the longest
#: first (each worker takes the next module when it runs dry, so the run ends on short ones).
#: One worker builds the DDP demo with its per-target models (the module about 50 s) while the
#: other builds the two tiny demos through the golden tests (about 22 s, the module 35 s); every
#: module after them finds the tiny demos built, and no worker waits on the other's build.  The
#: rest follow by their measured time (one idle run: attacks 40 s, shadows 34 s, audit 24 s,
#: sst2 20 s, download 19 s, budget 17 s, audit_cli 16 s, bayes 14 s), then the short modules
#: in collection order.
#: ``--no-loadscope-reorder`` (``pyproject.toml``) keeps xdist from sorting files by test count.
FIRST = (
    "test_ddp.py",
    "test_golden.py",
    "test_attacks.py",
    "test_shadows.py",
    "test_audit.py",
    "test_sst2.py",
    "test_download.py",
    "test_budget.py",
    "test_audit_cli.py",
    "test_bayes.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Send out :data:`FIRST` first; the other modules follow in collection order (stable sort:
    the tests of a module keep their order)."""
    items.sort(key=lambda item: _rank(item.path.name))


def _rank(name: str) -> int:
    return FIRST.index(name) if name in FIRST else len(FIRST)
