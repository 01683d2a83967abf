"""A real HTTP server on 127.0.0.1 and tiny MICO bundles, for testing downloads offline.

:class:`FakeServer` serves bytes from a dict like Hugging Face and a plain file host do:
``Range`` requests (206/416), LFS-style redirects with ``X-Linked-Size``, and faults on demand
(a status per path, a status once, a connection cut after N body bytes once, ``Range``
ignored).  It records every request with its ``Range`` and ``Authorization`` headers and the
body bytes sent, so tests can check that a resume re-sends only the rest and that a rerun sends
nothing.
"""

from __future__ import annotations

import io
import json
import re
import sys
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import numpy as np
import torch

from mico.bundle import SEED_FILES
from mico.models import MLP
from mico.splits import split_indices
from mico.tasks import SCENARIO_SUFFIXES

TINY_CONFIG = {
    "dataset_len": 1000,
    "len_training": 600,
    "len_challenge": 50,
    "models_per_phase": {"train": 2, "dev": 1, "final": 1},
}
REPO_ID = "szanella/MICO-purchase100"
#: Where LFS-like files are redirected, as Hugging Face sends large files to its CDN.
CDN_PREFIX = "/cdn"


def hub_path(relative: str, repo_id: str = REPO_ID, revision: str = "main") -> str:
    """The server path of a bundle file in the Hugging Face layout."""
    return f"/datasets/{repo_id}/resolve/{revision}/{relative}"


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None
    status: int = 0
    sent: int = 0


@dataclass
class FakeServer:
    """Shared state of the handler threads; configure the fields, then read :attr:`log`."""

    files: dict[str, bytes] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    fail_once: dict[str, int] = field(default_factory=dict)
    cut_once: dict[str, int] = field(default_factory=dict)
    ignore_range: set[str] = field(default_factory=set)
    lfs: bool = True
    log: list[Request] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests_for(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.log if r.path in (path, CDN_PREFIX + path)]

    def bytes_sent(self) -> int:
        with self.lock:
            return sum(r.sent for r in self.log)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers; every reply has a length
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._reply(head=False)

    def do_HEAD(self) -> None:
        self._reply(head=True)

    def _send(self, status: int, headers: dict[str, str], body: bytes, head: bool) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _reply(self, head: bool) -> None:
        state = self.server.state
        path = unquote(urlsplit(self.path).path)
        record = Request(
            self.command, path, self.headers.get("Range"), self.headers.get("Authorization")
        )
        with state.lock:
            state.log.append(record)
            status = state.status.get(path) or state.fail_once.pop(path, None)
        if status:
            record.status = status
            return self._send(status, {}, f"HTTP {status}\n".encode(), head)
        data_path = path[len(CDN_PREFIX) :] if path.startswith(CDN_PREFIX + "/") else path
        data = state.files.get(data_path)
        if data is None:
            record.status = 404
            return self._send(404, {}, b"Entry not found\n", head)
        if state.lfs and data_path == path and path.endswith("/model.pt"):
            record.status = 302
            headers = {"Location": CDN_PREFIX + path, "X-Linked-Size": str(len(data))}
            return self._send(302, headers, b"", head)
        start, status, headers = 0, 200, {}
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and data_path not in state.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                record.status = 416
                return self._send(416, {"Content-Range": f"bytes */{len(data)}"}, b"", head)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        record.status = status
        with state.lock:
            cut = None if head else state.cut_once.pop(data_path, None)
        if cut is None:
            record.sent = 0 if head else len(body)
            return self._send(status, headers, body, head)
        # Promise the whole body, send part of it, then drop the connection.
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:cut])
        self.wfile.flush()
        record.sent = cut
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: FakeServer

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up (Ctrl-C tests, stopped workers) are expected; report the rest."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def start_server() -> tuple[FakeServer, _Server]:
    """Serve a fresh :class:`FakeServer` on 127.0.0.1 (any free port) in a daemon thread."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = FakeServer(url=f"http://127.0.0.1:{server.server_address[1]}")
    # A short poll so that shutdown() at the end of each test returns at once.
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    return server.state, server


def tiny_bundle(name: str = "purchase100", seed: int = 0) -> dict[str, bytes]:
    """A complete bundle in MICO's layout, paths relative to ``<name>/``, with bundle.json.

    Seeds are large int64s like MICO's, solutions come from the real split reconstruction and
    every model.pt is an MLP state_dict, so the pipeline's later stages accept the bundle.
    """
    rng = np.random.default_rng(seed)
    counts = TINY_CONFIG["models_per_phase"]
    files = {"bundle.json": json.dumps(TINY_CONFIG).encode()}
    shapes = {key: value.shape for key, value in MLP().state_dict().items()}
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
                state = {
                    key: torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
                    for key, shape in shapes.items()
                }
                buffer = io.BytesIO()
                torch.save(state, buffer)
                files[f"{folder}/model.pt"] = buffer.getvalue()
                model += 1
    return files


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
