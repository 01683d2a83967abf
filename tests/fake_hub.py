"""A real HTTP server on 127.0.0.1 that answers what huggingface_hub calls, plus a plain file
host, and tiny bundles in each track's hub layout: the one fake hub of the suite.

The endpoints and headers are those huggingface_hub 2.4 uses (read in its ``file_download.py``,
``hf_api.py`` and ``utils/_http.py``)::

    GET  /api/{type}s/{repo}/revision/{rev}        repo_info, resolve_revision: {"id", "sha"}
    GET  /api/{type}s/{repo}/tree/{rev}[/{dir}]    list_repo_tree (?recursive=): never called
                                                   by this project's downloads; tests check it
    POST /api/{type}s/{repo}/paths-info/{rev}      get_paths_info (form ``paths``): the named
                                                   paths' size, git blob id, LFS sha256
    HEAD|GET /[datasets/]{repo}/resolve/{rev}/{path}
        every answer carries X-Repo-Commit and ETag (the git blob id); an LFS file answers
        302 to the CDN with X-Linked-Etag (its SHA-256) and X-Linked-Size, as the hub does
    GET  {cdn}/{commit}/{path}                     the CDN: another origin (a second port), so
                                                   the library must not send the token there
    GET  /{anything else}                          plain files (``--url``, ``--base-url``)

Errors come with the hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``, ``GatedRepo``).  No Xet headers are sent, so the library uses plain HTTP.
File bodies honour ``Range`` (206/416).  Faults on demand, keyed by a file's path in its
repository (or a plain file's URL path): a status always or once, a cut after N bytes once or
always, ``Range`` ignored, a transfer held mid-file until released.  Every request is logged with
its ``Range`` and ``Authorization`` headers and the body bytes sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import os
import re
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import huggingface_hub.constants
import numpy as np
import torch

from mico.bundle.layout import SEED_FILES
from mico.bundle.splits import split_indices
from mico.tracks.models import CNN, MLP
from mico.tracks.registry import SCENARIO_SUFFIXES, get_task
from mico.tracks.sources import RemoteFile

TINY_CONFIG = {
    "dataset_len": 1000,
    "len_training": 600,
    "len_challenge": 50,
    "models_per_phase": {"train": 2, "dev": 1, "final": 1},
}
#: Extensions stored with LFS (the hub's default .gitattributes): redirected to the CDN.
LFS_SUFFIXES = (".pt", ".bin", ".parquet", ".tgz", ".gz", ".zip")


def commit_id(seed: str) -> str:
    """A 40-hex commit hash, stable per ``seed``."""
    return hashlib.sha1(seed.encode()).hexdigest()


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class Repo:
    """One repository: its commits (each a whole file set), refs, and who may read it."""

    repo_type: str
    repo_id: str
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    #: A token the repository requires (a private repository); ``None``: public.
    token: str | None = None
    gated: bool = False

    def push(self, files: dict[str, bytes], branch: str = "main") -> str:
        """A new commit holding ``files`` on ``branch``; returns its hash."""
        sha = commit_id(f"{self.repo_id}:{len(self.commits)}:{sorted(files)[:3]}")
        self.commits[sha] = dict(files)
        self.refs[branch] = sha
        return sha

    def commit(self, revision: str) -> str | None:
        if revision in self.commits:
            return revision
        return self.refs.get(revision)


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None
    #: ``api``, ``resolve``, ``cdn`` or ``file``; ``name``: the file's path in its repository.
    kind: str = ""
    name: str = ""
    status: int = 0
    sent: int = 0


@dataclass
class FakeHub:
    """Shared state of the handler threads: configure the fields, then read :attr:`log`."""

    repos: dict[tuple[str, str], Repo] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    fail_once: dict[str, int] = field(default_factory=dict)
    cut_once: dict[str, int] = field(default_factory=dict)
    cut_always: dict[str, int] = field(default_factory=dict)
    ignore_range: set[str] = field(default_factory=set)
    hold: dict[str, int] = field(default_factory=dict)
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    log: list[Request] = field(default_factory=list)
    url: str = ""
    cdn_url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_repo(
        self, repo_id: str, files: dict[str, bytes], repo_type: str = "dataset", **options
    ) -> Repo:
        """Serve ``files`` as the ``main`` branch of a new repository."""
        repo = Repo(repo_type, repo_id, **options)
        repo.push(files)
        self.repos[repo_type, repo_id] = repo
        return repo

    def requests_for(self, name: str) -> list[Request]:
        """Requests that concern one file (its path in its repository, or a URL path)."""
        with self.lock:
            return [r for r in self.log if name in (r.name, r.path)]

    def bytes_sent(self) -> int:
        with self.lock:
            return sum(r.sent for r in self.log)


_API = re.compile(r"/api/(model|dataset)s/([^/]+/[^/]+)/(revision|tree|paths-info)/([^/]+)(/.*)?")
_RESOLVE = re.compile(r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)")
_CDN = re.compile(r"/cdn/([0-9a-f]{40})/(dataset|model)/([^/]+/[^/]+)/(.+)")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers; every reply has a length
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._reply()

    def do_HEAD(self) -> None:
        self._reply()

    def do_POST(self) -> None:
        self._reply()

    @property
    def state(self) -> FakeHub:
        return self.server.state

    def _send(self, record: Request, status: int, headers: dict[str, str], body: bytes) -> None:
        record.status = status
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            record.sent = len(body) if status in (200, 206) and record.kind != "api" else 0

    def _error(self, record: Request, status: int, code: str = "", commit: str = "") -> None:
        headers = {"X-Error-Code": code} if code else {}
        if commit:
            headers["X-Repo-Commit"] = commit
        if code == "" and status == 401:
            headers["X-Error-Message"] = "Invalid credentials in Authorization header"
        self._send(record, status, headers, f"{code or 'HTTP'} {status}\n".encode())

    def _reply(self) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        record = Request(
            self.command, path, self.headers.get("Range"), self.headers.get("Authorization")
        )
        with self.state.lock:
            self.state.log.append(record)
        if self.server.is_cdn:
            return self._cdn(record, path)
        if match := _API.fullmatch(path):
            record.kind = "api"
            return self._api(record, match, parse_qs(parts.query))
        if match := _RESOLVE.fullmatch(path):
            record.kind = "resolve"
            repo_type = "dataset" if match[1] else "model"
            return self._resolve(record, repo_type, match[2], match[3], match[4])
        record.kind, record.name = "file", path
        data = self.state.files.get(path)
        if self._fault(record, path):
            return
        if data is None:
            return self._error(record, 404)
        self._body(record, path, data, {})

    def _repo(self, record: Request, repo_type: str, repo_id: str) -> Repo | None:
        """The repository if it exists and this request may read it; else the hub's refusal."""
        repo = self.state.repos.get((repo_type, repo_id))
        auth = self.headers.get("Authorization")
        if repo is None or (repo.token is not None and auth is None):
            self._error(record, 401, "RepoNotFound")
            return None
        if repo.token is not None and auth != f"Bearer {repo.token}":
            self._error(record, 401)
            return None
        if repo.gated:
            self._error(record, 403, "GatedRepo")
            return None
        return repo

    def _api(self, record: Request, match: re.Match, query: dict) -> None:
        repo_type, repo_id, what, revision, rest = match.groups()
        repo = self._repo(record, repo_type, repo_id)
        if repo is None:
            return
        commit = repo.commit(unquote(revision))
        if commit is None:
            return self._error(record, 404, "RevisionNotFound")
        files = repo.commits[commit]
        if what == "revision":
            body = {"id": repo_id, "sha": commit, "private": repo.token is not None}
        elif what == "tree":
            folder = (rest or "").strip("/")
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            body = [_entry(p, d) for p, d in sorted(files.items()) if _listed(p, folder, recursive)]
        else:
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            body = [_entry(p, files[p]) for p in form.get("paths", []) if p in files]
        self._send(record, 200, {"Content-Type": "application/json"}, json.dumps(body).encode())

    def _resolve(
        self, record: Request, repo_type: str, repo_id: str, revision: str, name: str
    ) -> None:
        record.name = name
        repo = self._repo(record, repo_type, repo_id)
        if repo is None:
            return
        commit = repo.commit(revision)
        if commit is None:
            return self._error(record, 404, "RevisionNotFound")
        data = repo.commits[commit].get(name)
        if data is None:
            return self._error(record, 404, "EntryNotFound", commit)
        if self._fault(record, name):
            return
        headers = {"X-Repo-Commit": commit, "ETag": f'"{git_blob_id(data)}"'}
        if name.endswith(LFS_SUFFIXES):
            headers["X-Linked-Etag"] = f'"{hashlib.sha256(data).hexdigest()}"'
            headers["X-Linked-Size"] = str(len(data))
            headers["Location"] = f"{self.state.cdn_url}/cdn/{commit}/{repo_type}/{repo_id}/{name}"
            return self._send(record, 302, headers, b"")
        self._body(record, name, data, headers)

    def _cdn(self, record: Request, path: str) -> None:
        record.kind = "cdn"
        match = _CDN.fullmatch(path)
        repo = match and self.state.repos.get((match[2], match[3]))
        data = repo and repo.commits.get(match[1], {}).get(match[4])
        if data is None:
            return self._error(record, 404)
        record.name = match[4]
        self._body(record, match[4], data, {"ETag": f'"{hashlib.sha256(data).hexdigest()}"'})

    def _fault(self, record: Request, name: str) -> bool:
        """Answer a configured error status (and return True), else do nothing."""
        with self.state.lock:
            status = self.state.status.get(name) or self.state.fail_once.pop(name, None)
        if status:
            self._error(record, status)
        return bool(status)

    def _body(self, record: Request, name: str, data: bytes, headers: dict[str, str]) -> None:
        """The file, or the part a ``Range`` asks for, with the configured cuts and holds."""
        state, start, status = self.state, 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and name not in state.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                headers["Content-Range"] = f"bytes */{len(data)}"
                return self._send(record, 416, headers, b"")
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        with state.lock:
            cut = state.cut_once.pop(name, None) if self.command == "GET" else None
            cut = state.cut_always.get(name, cut) if self.command == "GET" else None
            hold = state.hold.pop(name, None) if self.command == "GET" else None
        if cut is None and hold is None:
            return self._send(record, status, headers, body)
        # Promise the whole body, send part of it, then drop the connection (or wait).
        record.status = status
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        first = body[: cut if cut is not None else hold]
        self.wfile.write(first)
        self.wfile.flush()
        record.sent = len(first)
        if hold is not None:
            state.held.set()
            state.release.wait(30)
            self.wfile.write(body[hold:])
            record.sent = len(body)
        self.close_connection = True


def _entry(path: str, data: bytes) -> dict:
    """A tree / paths-info entry as the hub sends it."""
    entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_id(data)}
    if path.endswith(LFS_SUFFIXES):
        sha = hashlib.sha256(data).hexdigest()
        entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
    return entry


def _listed(path: str, folder: str, recursive: bool) -> bool:
    if folder and not path.startswith(folder + "/"):
        return False
    rest = path[len(folder) + 1 :] if folder else path
    return recursive or "/" not in rest


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: FakeHub
    is_cdn = False

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up (killed processes, stopped workers) are expected."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _serve(state: FakeHub, is_cdn: bool) -> _Server:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state, server.is_cdn = state, is_cdn
    # A short poll so that shutdown() at the end of each test returns at once.
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    return server


@dataclass
class Running:
    """The hub and its CDN, listening; :meth:`stop` ends both."""

    state: FakeHub
    servers: tuple[_Server, ...]

    def stop(self) -> None:
        self.state.release.set()
        for server in self.servers:
            server.shutdown()
            server.server_close()


def start_server() -> Running:
    """Serve a fresh :class:`FakeHub` on 127.0.0.1 (any free ports): the hub and its CDN."""
    state = FakeHub()
    hub, cdn = _serve(state, False), _serve(state, True)
    state.url = f"http://127.0.0.1:{hub.server_address[1]}"
    state.cdn_url = f"http://127.0.0.1:{cdn.server_address[1]}"
    return Running(state, (hub, cdn))


# --- content ---------------------------------------------------------------------------------


def _weights(network: torch.nn.Module, rng: np.random.Generator) -> bytes:
    state = {
        key: torch.from_numpy(rng.standard_normal(tuple(value.shape)).astype(np.float32))
        for key, value in network.state_dict().items()
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def tiny_bundle(name: str = "purchase100", seed: int = 0) -> dict[str, bytes]:
    """A complete purchase100 or cifar10 bundle in MICO's layout, paths relative to
    ``<name>/``, with bundle.json.

    Seeds are large int64s like MICO's, solutions come from the real split reconstruction and
    every model.pt is a state_dict of the track's network (random weights), so the pipeline's
    later stages accept the bundle.
    """
    rng = np.random.default_rng(seed)
    counts = TINY_CONFIG["models_per_phase"]
    files = {"bundle.json": json.dumps(TINY_CONFIG).encode()}
    network = {"purchase100": MLP, "cifar10": CNN}[name]()
    for suffix in SCENARIO_SUFFIXES:
        model = 0
        for phase, count in counts.items():
            for _ in range(count):
                folder = f"{name}_{suffix}/{phase}/model_{model}"
                seeds = {key: int(rng.integers(0, 2**63 - 1)) for key in SEED_FILES}
                names = SEED_FILES if phase == "train" else SEED_FILES[:1]
                for key in names:
                    files[f"{folder}/{key}"] = f"{seeds[key]}\n".encode()
                if phase == "train":
                    splits = split_indices(
                        TINY_CONFIG["dataset_len"],
                        TINY_CONFIG["len_training"],
                        TINY_CONFIG["len_challenge"],
                        *seeds.values(),
                    )
                    line = ",".join(str(int(v)) for v in splits.solution) + "\r\n"
                    files[f"{folder}/solution.csv"] = line.encode()
                files[f"{folder}/model.pt"] = _weights(network, rng)
                model += 1
    return files


def bundle_folder_files(root: Path, challenge: str) -> dict[str, bytes]:
    """A bundle on disk (a demo) as its hub repository holds it (paths relative to the
    challenge folder): ``bundle.json``, seeds, solutions and model files."""
    folder = root / challenge
    keep = ("model.pt", "solution.csv", "config.json", "pytorch_model.bin")

    def published(path: Path) -> bool:
        in_model = path.parent.name.startswith("model_")
        return in_model and (path.name in keep or path.name.startswith("seed_"))

    files = {"bundle.json": (folder / "bundle.json").read_bytes()}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and published(path):
            files[path.relative_to(folder).as_posix()] = path.read_bytes()
    return files


def serve_bundle(state: FakeHub, files: dict[str, bytes], challenge: str) -> Repo:
    """Serve a bundle (paths relative to the challenge folder) as its track's repository,
    under the track's folder in it (SST-2's and DDP's sit in ``sst2/`` and ``ddp/``)."""
    source = get_task(challenge).source
    return state.add_repo(source.repo_id, {source.repo_prefix + p: d for p, d in files.items()})


#: What huggingface_hub reads from the environment (once, at import).
LIBRARY_ENV = (
    "HF_ENDPOINT",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_TOKEN",
    "HF_TOKEN_PATH",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)


@contextlib.contextmanager
def library_env(**env: str) -> Iterator[None]:
    """Run huggingface_hub in this process as a fresh process would run with ``env``: its
    variables set (the others of :data:`LIBRARY_ENV` unset), then its ``constants`` module
    reloaded, since the library reads them once, at import.  Everything is restored after."""
    saved = {key: os.environ.get(key) for key in LIBRARY_ENV}
    try:
        for key in LIBRARY_ENV:
            os.environ.pop(key, None)
        os.environ.update(env)
        importlib.reload(huggingface_hub.constants)
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        importlib.reload(huggingface_hub.constants)


def serve_base_files(state: FakeHub, contents: dict[RemoteFile, bytes]) -> None:
    """Serve hub-hosted base files (SST-2's GLUE tables, roberta-base's tokenizer) in their
    repositories, and on ``/mirror`` under their names for ``--base-url``."""
    by_repo: dict[tuple[str, str], dict[str, bytes]] = {}
    for remote, content in contents.items():
        by_repo.setdefault((remote.repo_type, remote.repo_id), {})[remote.filename] = content
        state.files[f"/mirror/{remote.name}"] = content
    for (repo_type, repo_id), files in by_repo.items():
        state.add_repo(repo_id, files, repo_type)


def purchase_text(rows: int = TINY_CONFIG["dataset_len"], seed: int = 0) -> bytes:
    """A small ``dataset_purchase``: label 1..100, then 600 binary features per row."""
    rng = np.random.default_rng(seed)
    table = np.concatenate(
        [rng.integers(1, 101, (rows, 1)), rng.integers(0, 2, (rows, 600))], axis=1
    )
    return "\n".join(",".join(map(str, row)) for row in table.tolist()).encode() + b"\n"


def make_zip(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A zip of ``files``; ``links`` adds Unix symlink members (name -> target)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16) | 0x20  # S_IFLNK
            archive.writestr(info, target)
    return buffer.getvalue()


def make_tar(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A gzipped tarball of ``files``; ``links`` adds symlink members (name -> target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()
