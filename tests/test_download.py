"""download_files.py against the suite's fake hub on 127.0.0.1 (tests/fake_hub.py).

Every case runs the CLI with huggingface_hub pointed at the server (``HF_ENDPOINT``, an empty
``HF_HOME``) and the base data behind ``--base-url``, so nothing leaves the machine; the cases
that need a real process of their own (killed mid-file, a full disk) start one.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tqdm import tqdm

import download_files
import mico.fetch.hub
import mico.fetch.progress
import mico.fetch.urls
import save_preds
from mico.bundle import check_layout
from mico.data import load_purchase100
from mico.fetch import archives as extract
from mico.models import load_model
from mico.tasks import load_task
from tests.fake_hub import library_env, make_tar, make_zip, purchase_text

NAME = "purchase100"
REPO = ("dataset", "szanella/MICO-purchase100")
PUBLISHED_MD5 = {"purchase100.zip": "67eba1f88d112932fe722fef85fb95fd"}
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bundle(hub_bundles) -> dict[str, bytes]:
    return hub_bundles[NAME]


@pytest.fixture
def server(fake_hub):
    return fake_hub


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "root"


def fetch(server, root: Path, *args: str) -> int:
    argv = ["--challenge", NAME, "--root", str(root), "--base-url", f"{server.url}/mirror"]
    return download_files.main([*argv, *args])


def error_line(capsys) -> str:
    """The CLI's error: exactly one line on stderr starting with ``error:``."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, lines
    return lines[0]


def leftovers(folder: Path) -> list[Path]:
    """Partial or temporary files anywhere under ``folder``."""
    ends = (".part", ".tmp", ".link", ".incomplete")
    return [p for p in folder.rglob("*") if p.name.endswith(ends)]


def assert_no_incomplete_final_file(root: Path, bundle: dict[str, bytes]) -> None:
    """Whatever stands under a final name is whole."""
    for path, data in bundle.items():
        final = root / NAME / path
        assert not final.exists() or final.read_bytes() == data, path


def assert_bundle_equals(root: Path, bundle: dict[str, bytes]) -> None:
    for path, data in bundle.items():
        assert (root / NAME / path).read_bytes() == data, path
    assert check_layout(root, load_task(root, NAME)) == []


def transfers(server, path: str) -> list:
    """The GETs that carried a file's body (from the hub, or from the CDN for LFS files)."""
    return [r for r in server.requests_for(path) if r.method == "GET" and r.status in (200, 206)]


# --- the Hugging Face source -----------------------------------------------------------------


def test_full_fetch_gives_a_verified_bundle_and_base_data(server, root, bundle):
    assert fetch(server, root) == 0
    assert_bundle_equals(root, bundle)
    assert not leftovers(root)
    data = load_purchase100(root / "data")
    assert len(data) == 1000 and int(data.y.min()) >= 0 and int(data.y.max()) <= 99
    assert not (root / "data" / "dataset_purchase.tgz").exists()  # deleted once extracted
    load_model(NAME, root / NAME / "purchase100_lo/final/model_3/model.pt")
    assert all(request.authorization is None for request in server.log)
    # Large files came from the CDN (another origin), small ones from the hub itself.
    assert {r.kind for r in transfers(server, "purchase100_lo/final/model_3/model.pt")} == {"cdn"}
    assert not any("/tree/" in r.path for r in server.log)  # named, never listed
    # The next step of the pipeline accepts what was downloaded.
    assert save_preds.main(["--challenge", NAME, "--root", str(root), "-q"]) == 0
    assert (root / "preds" / NAME / "purchase100_lo" / "scores.npz").is_file()


def test_rerun_sends_no_request(server, root):
    assert fetch(server, root) == 0
    before = len(server.log)
    assert fetch(server, root) == 0
    assert server.log[before:] == []


def test_selection_names_its_files_and_lists_nothing(server, root, bundle):
    args = ("--skip-base", "--scenarios", "lo", "--phases", "dev,final", "--models", "1")
    assert fetch(server, root, *args) == 0
    fetched = sorted(
        p.relative_to(root / NAME).as_posix()
        for p in (root / NAME).glob("purchase100_*/*/*/*")
        if p.is_file()
    )
    wanted = [
        "purchase100_lo/dev/model_2/model.pt",
        "purchase100_lo/dev/model_2/seed_challenge",
        "purchase100_lo/final/model_3/model.pt",
        "purchase100_lo/final/model_3/seed_challenge",
    ]
    assert fetched == wanted
    assert {r.name for r in server.log if r.kind == "resolve"} == {*wanted, "bundle.json"}
    assert not any("/tree/" in r.path or "paths-info" in r.path for r in server.log)


def test_token_reaches_the_hub_only(server, root, monkeypatch):
    server.repos[REPO].token = "hf_secret"
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert fetch(server, root) == 0
    hub = [r for r in server.log if r.kind in ("api", "resolve")]
    assert hub and all(r.authorization == "Bearer hf_secret" for r in hub)
    others = [r for r in server.log if r.kind in ("cdn", "file")]
    assert others and all(r.authorization is None for r in others)


def test_stored_token_alone_logs_in(server, root, tmp_path):
    """What ``hf auth login`` leaves: a token file in HF_HOME, no HF_TOKEN."""
    server.repos[REPO].token = "hf_stored"
    home = tmp_path / "logged_in"
    home.mkdir()
    (home / "token").write_text("hf_stored\n")
    with library_env(HF_ENDPOINT=server.url, HF_HOME=str(home)):
        assert fetch(server, root, "--skip-base") == 0
    hub = [r for r in server.log if r.kind in ("api", "resolve")]
    assert hub and all(r.authorization == "Bearer hf_stored" for r in hub)


def test_cut_transfer_is_retried_within_the_run(server, root, bundle):
    """huggingface_hub resumes a cut transfer from its last whole read of 10 MB
    (``DOWNLOAD_CHUNK_SIZE``): a cut within the first one starts the file again."""
    path = "purchase100_hi/train/model_1/model.pt"
    size = len(bundle[path])
    server.cut_once[path] = 5000
    assert fetch(server, root, "--skip-base") == 0
    assert [(r.status, r.sent) for r in transfers(server, path)] == [(200, 5000), (200, size)]
    assert_bundle_equals(root, bundle)


def test_server_ignoring_range_restarts_the_file(server, root, bundle):
    path = "purchase100_inf/train/model_0/solution.csv"
    server.cut_once[path] = 100
    server.ignore_range.add(path)
    assert fetch(server, root, "--skip-base") == 0
    assert [r.status for r in transfers(server, path)] == [200, 200]
    assert_bundle_equals(root, bundle)


def test_server_error_is_retried(server, root, bundle):
    path = "purchase100_lo/dev/model_2/seed_challenge"
    server.fail_once[path] = 503
    assert fetch(server, root, "--skip-base") == 0
    assert [(r.method, r.status) for r in server.requests_for(path)] == [
        ("HEAD", 503),
        ("HEAD", 200),
        ("GET", 200),
    ]
    assert_bundle_equals(root, bundle)


def _fetch_in_child(server, root: Path, home: Path, *args: str, **popen) -> subprocess.Popen:
    """download_files.py in a process of its own, with the library's environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=server.url, HF_HOME=str(home), PYTHONPATH=str(REPO_ROOT))
    argv = ["--challenge", NAME, "--root", str(root), "--skip-base", "-q", *args]
    command = [sys.executable, str(REPO_ROOT / "download_files.py"), *argv]
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, **popen)


def test_killed_mid_file_then_rerun_gives_identical_files(server, root, bundle, tmp_path):
    path = "purchase100_lo/final/model_3/model.pt"
    server.hold[path] = 20_000  # the transfer stops there until released
    child = _fetch_in_child(server, root, tmp_path / "hf_child", "--jobs", "1")
    assert server.held.wait(120), "the child never reached the held file"
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    server.release.set()
    final = root / NAME / path
    assert not final.exists()  # nothing partial under a final name
    assert list((root / NAME / ".cache").rglob("*.incomplete"))  # what the kill left
    done = [p for p in bundle if (root / NAME / p).is_file()]
    assert len(done) > 5
    with library_env(HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "hf_child")):
        before = len(server.log)
        assert fetch(server, root, "--skip-base") == 0
    assert_bundle_equals(root, bundle)
    assert not leftovers(root)  # the killed run's temporary file was removed
    again = {r.name for r in server.log[before:] if r.method == "GET" and r.kind != "api"}
    assert path in again and not again & set(done)  # finished files were not fetched again


def test_offline_mode_serves_what_is_there(server, root, tmp_path, capsys):
    assert fetch(server, root, "--skip-base") == 0
    home = tmp_path / "hf_home"
    with library_env(HF_ENDPOINT=server.url, HF_HOME=str(home), HF_HUB_OFFLINE="1"):
        before = len(server.log)
        assert fetch(server, root, "--skip-base") == 0
        assert server.log[before:] == []
        (root / NAME / "purchase100_hi/dev/model_2/model.pt").unlink()
        assert fetch(server, root, "--skip-base") == 2
        line = error_line(capsys)
        assert "HF_HUB_OFFLINE" in line and "purchase100_hi/dev/model_2/model.pt" in line
        assert fetch(server, tmp_path / "fresh", "--skip-base") == 2
        assert "HF_HUB_OFFLINE" in error_line(capsys)
        assert server.log[before:] == []


def test_offline_rerun_without_bundle_json_sends_nothing(server, root, bundle, tmp_path):
    """The real repositories have no bundle.json (MICO's sizes apply): the pin records that it
    was asked, so a rerun, offline too, does not ask again."""
    model = "purchase100_inf/dev/model_2"
    files = {
        f"purchase100_inf/dev/model_100/{n}": bundle[f"{model}/{n}"]
        for n in ("seed_challenge", "model.pt")
    }
    server.repos[REPO].push(files)
    args = ("--skip-base", "--scenarios", "inf", "--phases", "dev", "--models", "1")
    assert fetch(server, root, *args) == 0
    assert mico.fetch.hub.read_pin(root / NAME).has_config is False
    home = str(tmp_path / "hf_home")
    with library_env(HF_ENDPOINT=server.url, HF_HOME=home, HF_HUB_OFFLINE="1"):
        before = len(server.log)
        assert fetch(server, root, *args) == 0
    assert server.log[before:] == []


def test_revision_is_pinned_and_a_rerun_keeps_to_it(server, root, bundle):
    assert fetch(server, root, "--skip-base") == 0
    repo = server.repos[REPO]
    first = repo.refs["main"]
    pin = mico.fetch.hub.read_pin(root / NAME)
    assert (pin.repo_id, pin.revision, pin.commit) == (REPO[1], "main", first)
    changed = "purchase100_inf/dev/model_2/seed_challenge"
    second = repo.push({**repo.commits[first], changed: b"12345\n"})
    (root / NAME / changed).unlink()
    assert fetch(server, root, "--skip-base") == 0  # pinned: the old file comes back
    assert (root / NAME / changed).read_bytes() == bundle[changed]
    assert not any(r.kind == "api" for r in server.log[1:])  # no second resolution
    other = root.parent / "other"  # a copy pinned by hand to the first commit
    assert fetch(server, other, "--skip-base", "--revision", first) == 0
    assert (other / NAME / changed).read_bytes() == bundle[changed]
    assert fetch(server, root, "--skip-base", "--revision", "main") == 0  # moving on
    assert (root / NAME / changed).read_bytes() == b"12345\n"
    assert mico.fetch.hub.read_pin(root / NAME).commit == second


def test_corrupted_files_are_detected_and_fetched_again(server, root, bundle):
    assert fetch(server, root, "--skip-base") == 0
    weights = root / NAME / "purchase100_hi/train/model_0/model.pt"
    weights.write_bytes(b"\0" * 100 + bundle["purchase100_hi/train/model_0/model.pt"][100:])
    later = time.time() + 60
    os.utime(weights, (later, later))  # changed after the download, as a real corruption
    seed = root / NAME / "purchase100_lo/train/model_1/seed_training"
    stamp = seed.stat()
    seed.write_bytes(b"9" + bundle["purchase100_lo/train/model_1/seed_training"][1:])
    os.utime(seed, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # a flip the time stamp hides
    before = len(server.log)
    assert fetch(server, root, "--skip-base") == 0
    assert weights.read_bytes() == bundle["purchase100_hi/train/model_0/model.pt"]
    assert {r.name for r in server.log[before:] if r.method == "GET"} == {
        "purchase100_hi/train/model_0/model.pt"
    }
    assert seed.read_bytes() != bundle["purchase100_lo/train/model_1/seed_training"]
    assert fetch(server, root, "--skip-base", "--verify") == 0  # hashes everything
    assert_bundle_equals(root, bundle)


@pytest.mark.parametrize(
    ("change", "args", "hint"),
    [
        ("none", ("--repo-id", "nobody/nothing"), "check --repo-id"),
        ("none", ("--revision", "v9"), "revision 'v9' not found"),
        ("private", (), "hf auth login"),
        ("wrong-token", (), "hf auth login"),
        ("gated", (), "accept its terms"),
        ("missing-file", (), "is not in szanella/MICO-purchase100"),
        ("file-403", (), "HTTP 403"),
    ],
)
def test_hub_refusals_are_one_line(server, root, bundle, capsys, monkeypatch, change, args, hint):
    repo = server.repos[REPO]
    path = "purchase100_hi/final/model_3/model.pt"
    if change in ("private", "wrong-token"):
        repo.token = "hf_right"
    if change == "wrong-token":
        monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    repo.gated = change == "gated"
    if change == "missing-file":
        del repo.commits[repo.refs["main"]][path]
    if change == "file-403":
        server.status[path] = 403
    assert fetch(server, root, "--skip-base", *args) == 2
    line = error_line(capsys)
    assert hint in line, line
    assert_no_incomplete_final_file(root, bundle)
    assert not (root / NAME / path).exists()


def test_no_network_is_one_line_with_the_offline_hint(server, root, capsys):
    with library_env(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(root.parent / "hf")):
        assert fetch(server, root, "--skip-base") == 2
    line = error_line(capsys)
    assert "cannot get" in line and "HF_HUB_OFFLINE=1" in line


def test_full_disk_is_one_line_and_keeps_finished_files(server, root, tmp_path):
    """A file-size limit makes every write past it fail as a full disk does (EFBIG)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))

    child = _fetch_in_child(server, root, tmp_path / "hf_child", "--jobs", "1", preexec_fn=limit)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "File too large" in lines[0] and "free space" in lines[0], err
    assert (root / NAME / "purchase100_inf/train/model_0/seed_challenge").is_file()
    assert not list((root / NAME).rglob("model.pt"))


def test_ctrl_c_during_parallel_transfers_stops_every_worker(server, root, bundle, monkeypatch):
    calls = []

    def interrupt(self, count):
        calls.append(count)
        if len(calls) > 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(mico.fetch.progress.Progress, "add", interrupt)
    assert fetch(server, root, "--skip-base") == 130
    assert_no_incomplete_final_file(root, bundle)
    monkeypatch.undo()
    monkeypatch.setattr(mico.fetch.urls, "BACKOFF_START_S", 0.0)
    assert fetch(server, root, "--skip-base") == 0
    assert_bundle_equals(root, bundle)


def test_dry_run_lists_and_sizes_without_writing(server, root, bundle, capsys):
    assert fetch(server, root, "--dry-run") == 0
    out = capsys.readouterr().out
    files = len(bundle) - 1  # bundle.json is read, not listed
    size = sum(len(data) for path, data in bundle.items() if path != "bundle.json")
    assert f"would fetch {files} of {files} bundle files" in out
    assert tqdm.format_sizeof(size, suffix="B", divisor=1024) in out
    assert "purchase100_inf/train/model_0/seed_challenge" in out and "more" in out
    tgz = server.files["/mirror/dataset_purchase.tgz"]
    assert tqdm.format_sizeof(len(tgz), suffix="B", divisor=1024) in out
    assert not root.exists()
    assert not any("/tree/" in r.path for r in server.log)


def test_bundle_without_bundle_json_expects_mico_sizes(server, root, capsys):
    repo = server.repos[REPO]
    del repo.commits[repo.refs["main"]]["bundle.json"]
    assert fetch(server, root, "--dry-run", "--skip-base") == 0
    out = capsys.readouterr().out
    assert "would fetch 2100 of 2100 bundle files" in out and "HTTP 404 for" in out


def test_demo_bundle_is_not_mixed_with_a_download(server, root, capsys):
    (root / NAME).mkdir(parents=True)
    (root / NAME / "bundle.json").write_text('{"demo": "default", "dataset_len": 1000}')
    assert fetch(server, root) == 2
    assert "offline demo bundle" in error_line(capsys)
    assert server.log == []


# --- --url and --archive ---------------------------------------------------------------------


def zipped(bundle: dict[str, bytes]) -> bytes:
    return make_zip({f"{NAME}/{path}": data for path, data in bundle.items()})


def test_url_zip_is_imported_then_removed(server, root, bundle):
    server.files["/files/bundle.zip"] = zipped(bundle)
    assert fetch(server, root, "--skip-base", "--url", f"{server.url}/files/bundle.zip") == 0
    assert_bundle_equals(root, bundle)
    assert not (root / "bundle.zip").exists() and not leftovers(root)
    before = len(server.log)
    assert fetch(server, root, "--skip-base", "--url", f"{server.url}/files/bundle.zip") == 0
    assert server.log[before:] == []


def test_published_zip_name_is_md5_checked(server, root, bundle, capsys):
    data = zipped(bundle)
    server.files["/files/purchase100.zip"] = data
    url = f"{server.url}/files/purchase100.zip?sig=abc"
    assert fetch(server, root, "--skip-base", "--url", url) == 2
    line = error_line(capsys)
    actual = hashlib.md5(data).hexdigest()
    assert PUBLISHED_MD5["purchase100.zip"] in line and actual in line and "sig=abc" not in line
    assert not (root / "purchase100.zip").exists() and not leftovers(root)
    assert not (root / NAME).exists()
    assert fetch(server, root, "--skip-base", "--url", url, "--md5", actual) == 0
    assert_bundle_equals(root, bundle)


def test_expired_link_says_so(server, root, capsys):
    server.status["/files/cifar10.zip"] = 403
    url = f"{server.url}/files/cifar10.zip?se=2022&sig=x"
    assert fetch(server, root, "--skip-base", "--url", url) == 2
    line = error_line(capsys)
    assert "HTTP 403" in line and "expired" in line and "--archive" in line
    assert "sig=x" not in line  # a signature is a credential: never echoed
    assert not root.exists() or not leftovers(root)


@pytest.mark.parametrize(
    ("member", "link"),
    [
        ("../evil", None),
        ("/tmp/evil", None),
        ("purchase100/..\\evil", None),
        ("purchase100/x", "../../evil"),
    ],
)
def test_unsafe_zip_is_refused_before_writing(server, root, tmp_path, bundle, capsys, member, link):
    members = {f"{NAME}/{path}": data for path, data in bundle.items()}
    links = {member: link} if link else None
    if not link:
        members[member] = b"pwned"
    server.files["/files/bundle.zip"] = make_zip(members, links)
    assert fetch(server, root, "--skip-base", "--url", f"{server.url}/files/bundle.zip") == 2
    assert "refusing" in error_line(capsys)
    assert not (root / NAME).exists() and not (tmp_path / "evil").exists()
    assert not (root / "bundle.zip").exists() and not leftovers(root)


@pytest.mark.parametrize("layout", ["root", "challenge", "zip"])
def test_archive_on_disk_is_imported(tmp_path, root, bundle, layout):
    source = tmp_path / "source"
    for path, data in bundle.items():
        (source / NAME / path).parent.mkdir(parents=True, exist_ok=True)
        (source / NAME / path).write_bytes(data)
    archive = {"root": source, "challenge": source / NAME, "zip": tmp_path / "mine.zip"}[layout]
    if layout == "zip":
        archive.write_bytes(zipped(bundle))
    argv = ["--challenge", NAME, "--root", str(root), "--skip-base", "--archive", str(archive)]
    assert download_files.main(argv) == 0
    assert_bundle_equals(root, bundle)
    assert archive.exists()  # the user's own file is never removed


def test_incomplete_archive_lists_what_is_missing(tmp_path, root, bundle, capsys):
    missing = "purchase100_lo/train/model_1/solution.csv"
    archive = tmp_path / "partial.zip"
    archive.write_bytes(zipped({k: v for k, v in bundle.items() if k != missing}))
    argv = ["--challenge", NAME, "--root", str(root), "--skip-base", "--archive", str(archive)]
    assert download_files.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{root / NAME / missing}: missing" in err
    assert "incomplete: 1 problems" in err


# --- plain URLs: resume, Ctrl-C, hostile servers -----------------------------------------------


def test_given_up_transfer_keeps_a_part_file_that_a_rerun_resumes(
    server, root, capsys, monkeypatch
):
    tgz = "/mirror/dataset_purchase.tgz"
    server.cut_once[tgz] = 1000
    monkeypatch.setattr(mico.fetch.urls, "MAX_TRIES", 1)
    assert fetch(server, root, "--skip-bundle") == 2
    assert "giving up" in error_line(capsys)
    monkeypatch.setattr(mico.fetch.urls, "MAX_TRIES", 100)
    data = root / "data"
    assert (data / "dataset_purchase.tgz.part").stat().st_size == 1000
    assert not (data / "dataset_purchase.tgz").exists() and not (data / NAME).exists()
    assert fetch(server, root, "--skip-bundle") == 0
    assert server.requests_for(tgz)[-1].range == "bytes=1000-"
    assert len(load_purchase100(data)) == 1000


def test_ctrl_c_leaves_no_final_file(server, root, monkeypatch):
    def interrupt(self, count=1):
        if count:
            raise KeyboardInterrupt

    tgz = server.files["/mirror/dataset_purchase.tgz"]
    monkeypatch.setattr(mico.fetch.urls.tqdm, "update", interrupt)
    assert fetch(server, root, "--skip-bundle") == 130
    data = root / "data"
    kept = (data / "dataset_purchase.tgz.part").stat().st_size
    assert 0 < kept <= len(tgz)  # what the first read brought was written
    assert not (data / "dataset_purchase.tgz").exists() and not (data / NAME).exists()
    monkeypatch.undo()
    monkeypatch.setattr(mico.fetch.urls, "BACKOFF_START_S", 0.0)
    assert fetch(server, root, "--skip-bundle") == 0
    last = server.requests_for("/mirror/dataset_purchase.tgz")[-1]
    assert (last.range, last.sent) == (f"bytes={kept}-", len(tgz) - kept)
    assert len(load_purchase100(data)) == 1000


@pytest.mark.parametrize("option", ["--url", "--base-url"])
def test_server_cutting_at_half_and_ignoring_range_is_given_up(server, root, capsys, option):
    """Issue 22 J: every transfer cut at the same byte, every resume answered with the whole
    file: the tries after the first bring nothing new and count, so --retries 1 ends it."""
    name = "/files/good.zip" if option == "--url" else "/mirror/dataset_purchase.tgz"
    server.files[name] = server.files["/mirror/dataset_purchase.tgz"]
    server.cut_always[name] = len(server.files[name]) // 2
    server.ignore_range.add(name)
    where = ["--url", f"{server.url}{name}"] if option == "--url" else ["--skip-bundle"]
    started = time.monotonic()
    assert fetch(server, root, *where, "--retries", "1") == 2
    assert time.monotonic() - started < 30
    line = error_line(capsys)
    assert "giving up" in line and "after 3 tries" in line
    assert [(r.range, r.status) for r in server.requests_for(name)][1:] == [
        (f"bytes={len(server.files[name]) // 2}-", 200)
    ] * 2


def test_progress_on_every_try_still_ends(server, root, capsys, monkeypatch):
    """A server that honours resumes but cuts every answer after 100 bytes: each try makes
    progress, so only the overall cap per file ends the run; the .part stays for a rerun."""
    name = "/mirror/dataset_purchase.tgz"
    server.cut_always[name] = 100
    monkeypatch.setattr(mico.fetch.urls, "MAX_TRIES", 7)
    assert fetch(server, root, "--skip-bundle") == 2
    assert "after 7 tries" in error_line(capsys)
    assert len(server.requests_for(name)) == 7
    assert (root / "data" / "dataset_purchase.tgz.part").stat().st_size == 700


# --- base datasets ---------------------------------------------------------------------------


def test_base_md5_mismatch_removes_the_file(server, root, capsys):
    bad = make_tar({"cifar-10-batches-py/data_batch_1": b"not cifar"})
    server.files["/mirror/cifar-10-python.tar.gz"] = bad
    argv = ["--challenge", "cifar10", "--root", str(root), "--skip-bundle"]
    assert download_files.main([*argv, "--base-url", f"{server.url}/mirror/"]) == 2
    line = error_line(capsys)
    assert CIFAR_MD5 in line and hashlib.md5(bad).hexdigest() in line
    data = root / "data"
    assert not (data / "cifar-10-python.tar.gz").exists() and not leftovers(data)
    assert not (data / "cifar10").exists()


@pytest.mark.parametrize(
    ("member", "link"), [("../evil", None), ("dataset_purchase", "/etc/passwd")]
)
def test_unsafe_tarball_is_refused(server, root, tmp_path, capsys, member, link):
    files = {} if link else {"dataset_purchase": purchase_text(10), member: b"pwned"}
    server.files["/mirror/dataset_purchase.tgz"] = make_tar(files, {member: link} if link else None)
    assert fetch(server, root, "--skip-bundle") == 2
    assert "refusing" in error_line(capsys)
    data = root / "data"
    assert not (tmp_path / "evil").exists() and not (data / NAME).exists()
    assert not (data / "dataset_purchase.tgz").exists() and not leftovers(data)


# --- member names ----------------------------------------------------------------------------


@given(
    st.lists(st.sampled_from(["a", "b", "..", ".", "", "/", "\\", "C:", "x..y", "\0"]), max_size=6)
)
def test_accepted_member_names_stay_inside_the_target(pieces):
    name = "".join(pieces)
    try:
        parts = extract.safe_member_parts(name, Path("archive.zip"))
    except ValueError:
        return
    target = os.path.normpath("/target")
    joined = os.path.normpath(os.path.join(target, *parts))
    assert joined == target or joined.startswith(target + os.sep)
    assert ".." not in parts and all("/" not in p and "\\" not in p for p in parts)


def test_a_part_downloaded_on_purpose_runs_and_only_the_whole_is_zipped(server, root, capsys):
    """``--scenarios lo`` leaves two scenarios out by design: the scripts check the bundle
    against the part asked for (and still refuse a stray model), save_zip wants all of it."""
    import run_lira_mia
    import save_zip

    assert fetch(server, root, "--scenarios", "lo") == 0
    part = root / NAME / "selection.json"
    assert part.is_file()
    common = ["--challenge", NAME, "--root", str(root), "-q"]
    assert save_preds.main(common) == 0
    assert run_lira_mia.main(common) == 0
    assert (root / NAME / "purchase100_lo/final/model_3/prediction.csv").is_file()
    capsys.readouterr()
    assert save_zip.main([*common, "--output", str(root / "sub.zip")]) == 2
    assert "downloaded in part" in capsys.readouterr().err
    stray = root / NAME / "purchase100_lo/train/model_999"
    stray.mkdir()
    assert save_preds.main(common) == 2
    assert "unexpected model_999" in capsys.readouterr().err
    stray.rmdir()
    assert fetch(server, root) == 0  # the rest: the bundle is whole, the record goes
    assert not part.exists()
    assert check_layout(root, load_task(root, NAME)) == []
