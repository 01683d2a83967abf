"""Hostile input and faults (issue #11): one line, non-zero exit, nothing lost, nothing unsafe.

As in ``tests/test_download.py``: real files, the real scripts in-process, and real processes
and signals where a kill or an interrupt is involved.  Each test names the issue item it covers.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import torch

import download_files
import run_lira_mia
import save_preds
import save_zip
from mico.bundle.fileio import atomic_write
from mico.tracks.data import load_cifar10, load_purchase100
from mico.tracks.models import build_model, load_model
from mico.tracks.registry import get_task
from tests.fake_hub import purchase_text, tiny_bundle

REPO = Path(__file__).resolve().parent.parent
NAME = "purchase100"
SCRIPTS = {
    "download_files": download_files.main,
    "save_preds": save_preds.main,
    "run_lira_mia": run_lira_mia.main,
    "save_zip": save_zip.main,
}


def error_line(capsys: pytest.CaptureFixture) -> str:
    """The CLI's error: exactly one line on stderr starting with ``error:``, no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((".part", ".tmp", ".link"))]


@pytest.fixture(scope="module")
def predicted(tiny_purchase: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny purchase100 demo with every prediction.csv written; read-only."""
    root = Path(shutil.copytree(tiny_purchase, tmp_path_factory.mktemp("predicted") / "root"))
    argv = ["--challenge", NAME, "--root", str(root), "-q", "--global_variance"]
    assert run_lira_mia.main(argv) == 0
    return root


def zip_to(root: Path, output: Path) -> int:
    return save_zip.main(["--challenge", NAME, "--root", str(root), "-q", "--output", str(output)])


def predictions_in(data: bytes) -> int:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        return sum(name.endswith("prediction.csv") for name in archive.namelist())


def make_device(path: Path, minor: int) -> Path:
    """A character device node of the kernel's memory driver: 3 = null, 7 = full."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    return path


# --- item 1: the Purchase-100 cache follows the text's content, not its time stamp ----------


def test_stale_purchase_cache_is_rebuilt_when_the_text_changes(tmp_path):
    folder = tmp_path / "data" / NAME
    folder.mkdir(parents=True)
    text = folder / "dataset_purchase"
    old, new = purchase_text(rows=40, seed=1), purchase_text(rows=40, seed=2)
    text.write_bytes(old)
    load_purchase100(tmp_path / "data")  # builds the cache
    # Replace the text as `cp -p` would: different content with an older time stamp.
    source = tmp_path / "new_text"
    source.write_bytes(new)
    os.utime(source, (1_000_000, 1_000_000))
    shutil.copy2(source, text)
    expected = [int(line.split(b",")[0]) - 1 for line in new.splitlines()]
    assert load_purchase100(tmp_path / "data").y.tolist() == expected
    # A truncated text fails; restoring the good one (older again) works at once.
    text.write_bytes(new[: len(new) // 2].rsplit(b"\n", 1)[0] + b"\n")
    assert len(load_purchase100(tmp_path / "data")) < 40
    shutil.copy2(source, text)
    assert load_purchase100(tmp_path / "data").y.tolist() == expected
    assert sorted(p.name for p in folder.iterdir()) == ["dataset_purchase", "dataset_purchase.npz"]


# --- item 3: outputs that are links, devices or FIFOs ------------------------------------------


def test_output_symlink_replaces_its_target_and_stays_a_link(predicted, tmp_path):
    target = tmp_path / "real" / "submission.zip"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "link.zip"
    link.symlink_to(target)
    assert zip_to(predicted, link) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert predictions_in(target.read_bytes()) == 6


def test_output_fifo_and_device_are_written_through_not_replaced(predicted, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert zip_to(predicted, fifo) == 0
    reader.join(timeout=60)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert predictions_in(received[0]) == 6
    null = make_device(tmp_path / "null", 3)
    assert zip_to(predicted, null) == 0
    assert stat.S_ISCHR(null.lstat().st_mode) and not leftovers(tmp_path)


def test_output_onto_a_folder_is_refused_in_one_line(predicted, tmp_path, capsys):
    assert zip_to(predicted, tmp_path) == 2
    assert str(tmp_path) in error_line(capsys) and tmp_path.is_dir()


# --- item 6: a corrupt zip payload -------------------------------------------------------------


def corrupt_zip(files: dict[str, bytes], compression: int) -> bytes:
    """A zip of ``files`` whose last member's payload has one byte flipped."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    data = bytearray(buffer.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.infolist()[-1]
    header = 30 + len(info.filename.encode()) + len(info.extra)
    # Stored: a wrong CRC; deflated: a broken stream (zlib.error), from its first byte.
    middle = info.compress_size // 2 if compression == zipfile.ZIP_STORED else 0
    data[info.header_offset + header + middle] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_corrupt_zip_payload_imports_nothing(tmp_path, capsys, compression):
    bundle = {f"{NAME}/{path}": data for path, data in tiny_bundle(NAME).items()}
    archive = tmp_path / "bundle.zip"
    archive.write_bytes(corrupt_zip(bundle, compression))
    root = tmp_path / "root"
    argv = ["--challenge", NAME, "--root", str(root), "--skip-base", "--archive", str(archive)]
    assert download_files.main(argv) == 2
    assert "not a valid zip" in error_line(capsys)
    assert not (root / NAME).exists() or not any(p.is_file() for p in (root / NAME).rglob("*"))
    assert archive.exists()  # the user's own file is never removed


def test_corrupt_downloaded_zip_is_deleted(fake_hub, hub_bundles, tmp_path, capsys):
    bundle = {f"{NAME}/{path}": data for path, data in hub_bundles[NAME].items()}
    data = corrupt_zip(bundle, zipfile.ZIP_DEFLATED)
    fake_hub.files["/files/bundle.zip"] = data
    root = tmp_path / "root"
    argv = ["--challenge", NAME, "--root", str(root), "--skip-base"]
    url = ["--url", f"{fake_hub.url}/files/bundle.zip", "--md5", hashlib.md5(data).hexdigest()]
    assert download_files.main([*argv, *url]) == 2
    assert "not a valid zip" in error_line(capsys)
    assert not (root / "bundle.zip").exists() and not leftovers(root)


# --- item 7: CIFAR-10 batches are data, not code ------------------------------------------------


class _RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


def test_crafted_cifar_batch_runs_nothing(tiny_copy, tmp_path, capsys):
    root = tiny_copy("cifar10")
    batch = root / "data" / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    marker = tmp_path / "ran"
    batch.write_bytes(pickle.dumps({b"data": _RunsCommand(f"touch {marker}"), b"labels": []}))
    argv = ["--challenge", "cifar10", "--root", str(root), "-q", "--preds-dir", str(tmp_path)]
    assert save_preds.main(argv) == 2
    line = error_line(capsys)
    assert str(batch) in line and "system" in line
    assert not marker.exists()


def test_cifar_batch_naming_an_unknown_module_is_one_line(tiny_copy):
    root = tiny_copy("cifar10")
    folder = root / "data" / "cifar10" / "cifar-10-batches-py"
    good = (folder / "data_batch_1").read_bytes()
    # The real batches are Python 2 pickles naming numpy.core (numpy 1); both names load.
    (folder / "data_batch_1").write_bytes(good.replace(b"numpy._core", b"numpy.core"))
    assert len(load_cifar10(root / "data")) == get_task("cifar10").demo.presets["tiny"].dataset_len
    (folder / "data_batch_2").write_bytes(b"\x80\x02cnosuchmodule\nthing\nq\x00)\x81q\x01.")
    with pytest.raises(ValueError, match=r"data_batch_2: not a CIFAR-10 .*nosuchmodule"):
        load_cifar10(root / "data")


# --- item 8: models_per_phase --------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(
    "value", [None, [4, 1, 1], {"train": -1, "dev": 1, "final": 1}, 4.7, "four"]
)
def test_bad_models_per_phase_is_one_line_in_every_script(tmp_path, capsys, script, value):
    config = tmp_path / NAME / "bundle.json"
    config.parent.mkdir(parents=True)
    if isinstance(value, (float, str)):
        value = {"train": value, "dev": 1, "final": 1}
    config.write_text(json.dumps({"models_per_phase": value}))
    argv = ["--challenge", NAME, "--root", str(tmp_path), "-q"]
    extra = {"download_files": ["--skip-base", "--archive", str(tmp_path / "none.zip")]}
    assert SCRIPTS[script]([*argv, *extra.get(script, [])]) == 2
    line = error_line(capsys)
    assert str(config) in line and "models_per_phase" in line


# --- item 10: errors that name their path --------------------------------------------------------


@pytest.mark.parametrize("content", [b"\xff\xfe12\n", "²\n".encode(), "١٢\n".encode()])
def test_seed_that_is_not_ascii_digits_names_its_file(tiny_copy, tmp_path, capsys, content):
    root = tiny_copy(NAME)
    seed = root / NAME / f"{NAME}_inf" / "dev" / "model_4" / "seed_challenge"
    seed.write_bytes(content)
    assert save_preds.main(["--challenge", NAME, "--root", str(root), "-q"]) == 2
    assert str(seed) in error_line(capsys)


def test_non_text_prediction_names_its_file(predicted, tmp_path, capsys):
    root = Path(shutil.copytree(predicted, tmp_path / "root"))
    prediction = root / NAME / f"{NAME}_hi" / "final" / "model_5" / "prediction.csv"
    prediction.write_bytes(b"\xff" + prediction.read_bytes()[1:])
    assert zip_to(root, tmp_path / "out.zip") == 2
    assert f"{prediction}: not a text prediction file" in capsys.readouterr().err
    assert not (tmp_path / "out.zip").exists()


def test_full_disk_names_the_file(predicted, tmp_path, capsys):
    full = make_device(tmp_path / "full", 7)
    assert zip_to(predicted, full) == 2
    line = error_line(capsys)
    assert str(full) in line and "No space left" in line


def test_all_zero_reference_names_its_file(predicted, tmp_path, capsys):
    reference = Path(shutil.copytree(predicted / "reference", tmp_path / "reference"))
    solution = reference / NAME / f"{NAME}_lo" / "dev" / "model_4" / "solution.csv"
    solution.write_text(",".join(["0"] * 200) + "\r\n")
    argv = ["--challenge", NAME, "--root", str(predicted), "-q", "--no-write"]
    assert run_lira_mia.main([*argv, "--reference", str(reference)]) == 2
    assert str(solution) in error_line(capsys)


def test_state_dict_mismatch_shows_its_detail(tmp_path):
    state = build_model(NAME).state_dict()
    state["extra.weight"] = state.pop("mlp.0.weight")
    torch.save(state, tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"Missing key.*mlp\.0\.weight.*extra\.weight"):
        load_model(NAME, tmp_path / "model.pt")


#: Imported first by the child (``sitecustomize``): the first time anything imports
#: ``{module}``, the process sends itself a real SIGINT, as a user's Ctrl-C would.
_INTERRUPT_AT = """
import os, signal, sys

class _Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "{module}":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, _Interrupt())
"""


@pytest.mark.slow
@pytest.mark.parametrize("module", ["numpy", "torch"])
@pytest.mark.parametrize("script", SCRIPTS)
def test_ctrl_c_during_start_up_prints_no_traceback(tmp_path, script, module):
    """numpy: the scripts' own imports (before argparse); torch: the work's imports, which
    save_preds.py makes once the arguments are checked (the others never need torch here)."""
    (tmp_path / "sitecustomize.py").write_text(_INTERRUPT_AT.format(module=module))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    done = subprocess.run(
        [sys.executable, REPO / f"{script}.py", "--challenge", NAME, "--root", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        # A shell's background job (CI started with `&`) ignores SIGINT, and the child would
        # inherit that: a user's Ctrl-C reaches a process whose SIGINT is the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr
    if module == "torch" and script != "save_preds":
        assert done.returncode == 2  # no torch on the way to the bundle's one-line error
    else:
        assert done.returncode == 130 and "interrupted" in done.stderr


# --- item 11: the umask --------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_get_the_umask_like_a_plain_open(predicted, tmp_path, umask):
    previous = os.umask(umask)
    try:
        assert zip_to(predicted, tmp_path / "out.zip") == 0
        text = tmp_path / "data" / NAME / "dataset_purchase"
        text.parent.mkdir(parents=True)
        text.write_bytes(purchase_text(rows=20))
        load_purchase100(tmp_path / "data")
        kept = tmp_path / "kept.txt"
        kept.write_text("x")
        kept.chmod(0o604)
        with atomic_write(kept, "w") as handle:
            handle.write("y")
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "out.zip").stat().st_mode) == expected
    assert stat.S_IMODE((text.with_name("dataset_purchase.npz")).stat().st_mode) == expected
    assert stat.S_IMODE(kept.stat().st_mode) == 0o604  # replacing keeps the file's mode


# --- item 12: temporaries left by a killed run --------------------------------------------------

#: A real writer that stops inside ``atomic_write`` (after writing) until it is killed.
_WRITER = """
import sys, time
from mico.bundle.fileio import atomic_write
with atomic_write(sys.argv[1]) as handle:
    handle.write(b"partial")
    handle.flush()
    print("writing", flush=True)
    time.sleep(600)
"""


def _start_writer(path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
    return writer


@pytest.mark.slow
def test_temporaries_of_killed_runs_are_removed_by_the_next_run(predicted, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    killed = _start_writer(out / "a.zip")
    alive = _start_writer(out / "b.zip")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=60)
        assert len(leftovers(out)) == 2
        # The next run writing into that folder (a real process) removes the dead one only.
        done = subprocess.run(
            [
                sys.executable,
                REPO / "save_zip.py",
                "--challenge",
                NAME,
                "--root",
                str(predicted),
                "-q",
                "--output",
                str(out / "c.zip"),
            ],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        remaining = [p.name for p in leftovers(out)]
        assert len(remaining) == 1 and remaining[0].startswith(".b.zip.")
        assert f".{alive.pid}." in remaining[0]
    finally:
        alive.kill()
        alive.wait(timeout=60)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["c.zip"]
