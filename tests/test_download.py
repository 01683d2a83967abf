"""download_files.py against a real HTTP server on 127.0.0.1 (tests/fake_hub.py).

Every case runs the CLI in-process with ``HF_ENDPOINT`` pointing at the server and the base data
behind ``--base-url``, so nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tqdm import tqdm

import download_files
import mico.fetch.urls
import save_preds
from mico.bundle import check_layout
from mico.data import load_purchase100
from mico.fetch import archives as extract
from mico.models import load_model
from mico.tasks import load_task
from tests.fake_hub import (
    CDN_PREFIX,
    make_tar,
    make_zip,
    purchase_text,
    start_server,
    tiny_bundle,
)
from tests.fake_hub import hub_path as hub

NAME = "purchase100"
PUBLISHED_MD5 = {"purchase100.zip": "67eba1f88d112932fe722fef85fb95fd"}
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"


@pytest.fixture(scope="module")
def bundle() -> dict[str, bytes]:
    return tiny_bundle(NAME)


@pytest.fixture(scope="module")
def purchase_tgz() -> bytes:
    return make_tar({"dataset_purchase": purchase_text()})


@pytest.fixture
def server(monkeypatch, bundle, purchase_tgz):
    state, http = start_server()
    state.files.update({hub(path): data for path, data in bundle.items()})
    state.files["/mirror/dataset_purchase.tgz"] = purchase_tgz
    monkeypatch.setenv("HF_ENDPOINT", state.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(mico.fetch.urls, "BACKOFF_START_S", 0.0)
    yield state
    http.shutdown()
    http.server_close()


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
    return [p for p in folder.rglob("*") if p.name.endswith((".part", ".tmp", ".link"))]


def assert_no_incomplete_final_file(root: Path, bundle: dict[str, bytes]) -> None:
    """Whatever stands under a final name is whole; interrupted files only exist as .part."""
    for path, data in bundle.items():
        final = root / NAME / path
        assert not final.exists() or final.read_bytes() == data, path


def assert_bundle_equals(root: Path, bundle: dict[str, bytes]) -> None:
    for path, data in bundle.items():
        assert (root / NAME / path).read_bytes() == data, path
    assert check_layout(root, load_task(root, NAME)) == []


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
    # The next step of the pipeline accepts what was downloaded.
    assert save_preds.main(["--challenge", NAME, "--root", str(root), "-q"]) == 0
    assert (root / "preds" / NAME / "purchase100_lo" / "scores.npz").is_file()


def test_rerun_transfers_nothing(server, root):
    assert fetch(server, root) == 0
    before = len(server.log)
    assert fetch(server, root) == 0
    assert server.log[before:] == []


def test_token_is_sent_to_the_hub_only(server, root, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert fetch(server, root) == 0
    hub_requests = [r for r in server.log if r.path.startswith(("/datasets/", CDN_PREFIX))]
    assert hub_requests and all(r.authorization == "Bearer hf_secret" for r in hub_requests)
    mirror = server.requests_for("/mirror/dataset_purchase.tgz")
    assert mirror and all(r.authorization is None for r in mirror)


def test_resume_after_a_cut_resends_only_the_rest(server, root, bundle):
    path = "purchase100_hi/train/model_1/model.pt"
    size = len(bundle[path])
    server.cut_once[hub(path)] = 5000
    assert fetch(server, root, "--skip-base") == 0
    transfers = [r for r in server.requests_for(hub(path)) if r.path.startswith(CDN_PREFIX)]
    assert [(r.range, r.sent) for r in transfers] == [(None, 5000), ("bytes=5000-", size - 5000)]
    assert [r.status for r in transfers] == [200, 206]
    assert_bundle_equals(root, bundle)


def test_server_ignoring_range_restarts_the_file(server, root, bundle):
    path = "purchase100_inf/train/model_0/solution.csv"
    server.cut_once[hub(path)] = 100
    server.ignore_range.add(hub(path))
    assert fetch(server, root, "--skip-base") == 0
    assert [r.status for r in server.requests_for(hub(path))] == [200, 200]
    assert_bundle_equals(root, bundle)


def test_server_error_is_retried(server, root, bundle):
    path = "purchase100_lo/dev/model_2/seed_challenge"
    server.fail_once[hub(path)] = 503
    assert fetch(server, root, "--skip-base") == 0
    assert [r.status for r in server.requests_for(hub(path))] == [503, 200]
    assert_bundle_equals(root, bundle)


@pytest.mark.parametrize(
    ("status", "hint"),
    [(401, "set HF_TOKEN"), (403, "accepted the dataset's terms"), (404, "--repo-id")],
)
def test_refusal_names_the_url_and_what_to_try(server, root, bundle, capsys, status, hint):
    path = "purchase100_hi/final/model_3/model.pt"
    if status == 404:
        del server.files[hub(path)]
    else:
        server.status[hub(path)] = status
    assert fetch(server, root, "--skip-base") == 2
    line = error_line(capsys)
    assert f"HTTP {status} for {server.url}{hub(path)}" in line and hint in line
    final = root / NAME / path
    assert not final.exists() and not Path(f"{final}.part").exists()
    assert_no_incomplete_final_file(root, bundle)  # other transfers stopped, kept as .part


def test_cut_without_retries_keeps_only_a_part_file_then_resumes(server, root, capsys):
    tgz = "/mirror/dataset_purchase.tgz"
    server.cut_once[tgz] = 1000
    assert fetch(server, root, "--skip-bundle", "--retries", "0") == 2
    assert "giving up" in error_line(capsys)
    data = root / "data"
    assert (data / "dataset_purchase.tgz.part").stat().st_size == 1000
    assert not (data / "dataset_purchase.tgz").exists() and not (data / NAME).exists()
    assert fetch(server, root, "--skip-bundle") == 0
    assert server.requests_for(tgz)[-1].range == "bytes=1000-"
    assert len(load_purchase100(data)) == 1000


def test_ctrl_c_leaves_no_final_file(server, root, purchase_tgz, monkeypatch):
    def interrupt(self, count):
        raise KeyboardInterrupt

    monkeypatch.setattr(mico.fetch.urls._Progress, "add", interrupt)
    assert fetch(server, root, "--skip-bundle") == 130
    data = root / "data"
    kept = (data / "dataset_purchase.tgz.part").stat().st_size
    assert 0 < kept <= len(purchase_tgz)  # what the first read brought was written
    assert not (data / "dataset_purchase.tgz").exists() and not (data / NAME).exists()
    monkeypatch.undo()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    assert fetch(server, root, "--skip-bundle") == 0
    last = server.requests_for("/mirror/dataset_purchase.tgz")[-1]
    assert (last.range, last.sent) == (f"bytes={kept}-", len(purchase_tgz) - kept)
    assert len(load_purchase100(data)) == 1000


def test_ctrl_c_during_parallel_transfers_stops_every_worker(server, root, bundle, monkeypatch):
    def interrupt(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(mico.fetch.urls._Progress, "file_done", interrupt)
    assert fetch(server, root, "--skip-base") == 130
    assert_no_incomplete_final_file(root, bundle)
    monkeypatch.undo()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    assert fetch(server, root, "--skip-base") == 0
    assert_bundle_equals(root, bundle)


def test_dry_run_lists_and_sizes_without_writing(server, root, bundle, purchase_tgz, capsys):
    assert fetch(server, root, "--dry-run") == 0
    out = capsys.readouterr().out
    files = len(bundle) - 1  # bundle.json is read, not listed
    size = sum(len(data) for path, data in bundle.items() if path != "bundle.json")
    assert f"would fetch {files} of {files} bundle files" in out
    assert tqdm.format_sizeof(size, suffix="B", divisor=1024) in out
    assert "purchase100_inf/train/model_0/seed_challenge" in out and "more" in out
    assert tqdm.format_sizeof(len(purchase_tgz), suffix="B", divisor=1024) in out
    assert not root.exists()
    assert {r.method for r in server.log if r.path != hub("bundle.json")} == {"HEAD"}


def test_bundle_without_bundle_json_expects_mico_sizes(server, root, capsys):
    del server.files[hub("bundle.json")]
    assert fetch(server, root, "--dry-run", "--skip-base") == 0
    assert "would fetch 2100 of 2100 bundle files" in capsys.readouterr().out


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
