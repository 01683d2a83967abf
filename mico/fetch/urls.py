"""HTTP transfers that survive flaky networks: resumable, retried, verified, atomic.

Bundles are several GB and connections drop, so every transfer

* writes ``<final>.part`` and renames it to ``<final>`` only once it is complete (size from
  ``Content-Length``/``Content-Range``, md5 where one is published): Ctrl-C or a crash never
  leaves an incomplete file under its final name, and a rerun skips every final file;
* resumes a ``.part`` with ``Range: bytes=N-`` (a server that answers ``200`` instead of ``206``
  restarts the file; ``416`` means the part is already whole, or wrong and restarted);
* retries connection errors, timeouts, cut transfers, ``429`` and ``5xx`` with exponential
  backoff, counting only consecutive tries that brought no new bytes;
* turns ``401``/``403``/``404`` into one line naming the URL and what to try instead.

What is fetched, and from where, is :mod:`mico.fetch.download`'s business.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from tqdm import tqdm

logger = logging.getLogger(__name__)

#: Bytes per read and write: large enough for GB files, small enough for a prompt Ctrl-C.
CHUNK_BYTES = 1 << 20
#: (connect, read) timeouts in seconds; a stalled read counts as a transient error.
TIMEOUT_S = (15, 60)
#: First wait after a failed try, doubled per consecutive failure up to ``BACKOFF_MAX_S``.
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0
#: Longest ``Retry-After`` honoured after a ``429``/``503``.
RETRY_AFTER_MAX_S = 300.0


# What to try after a refusal, by source: Hugging Face, a --url link, the base-dataset host.
_HINTS: dict[str, dict[int, str]] = {
    "hf": {
        401: "the repository needs a login or does not exist: set HF_TOKEN to a Hugging Face "
        "token that can read it, and check --repo-id",
        403: "access refused: check that HF_TOKEN is valid and that you accepted the dataset's "
        "terms on its Hugging Face page",
        404: "not found: check --repo-id and --revision, or pass --url or --archive with a zip "
        "of the bundle",
    },
    "url": {
        401: "the link needs credentials or its signature has expired: get a fresh link, or "
        "download the zip by hand and pass --archive",
        403: "the link is refused, most likely its signature has expired: get a fresh link, or "
        "download the zip by hand and pass --archive",
        404: "not found: check the link, or download the zip by hand and pass --archive",
    },
    "base": {
        404: "the dataset may have moved: pass --base-url with a mirror folder serving the same "
        "file, or extract it into --data-dir yourself and use --skip-base",
    },
}


class DownloadError(OSError):
    """A transfer that cannot succeed as asked; the message names the URL and what to try."""


class _Transient(Exception):
    """A failed try worth repeating; ``progressed`` when it brought new bytes first."""

    def __init__(self, reason: str, *, progressed: bool = False, wait_s: float = 0.0) -> None:
        super().__init__(reason)
        self.progressed = progressed
        self.wait_s = wait_s


class _Stopped(Exception):
    """Raised in worker threads after another file failed or Ctrl-C; the ``.part`` stays."""


def display_url(url: str) -> str:
    """The URL without its query: signed links are long and their signature is a credential."""
    parts = urlsplit(url)
    return parts._replace(query="", fragment="").geturl() + ("?..." if parts.query else "")


def _reason(exc: BaseException) -> str:
    """requests' nested exception text, reduced to its innermost cause on one line."""
    inner: object = exc.args[0] if exc.args else exc
    inner = getattr(inner, "reason", inner)
    return " ".join(str(inner).split())[:200] or type(exc).__name__


def _hint(kind: str, status: int) -> str:
    hints = _HINTS[kind]
    return hints.get(status) or hints.get(404) or ""


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(start, total)`` of a ``Content-Range`` header; ``None`` where absent or ``*``."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total and total != "*" else None)


def _retry_after(response: requests.Response) -> float:
    value = response.headers.get("Retry-After", "")
    return min(float(value), RETRY_AFTER_MAX_S) if value.isdigit() else 0.0


def md5_file(path: Path) -> str:
    """Hex md5 of a file, read in chunks (the published zips are GB-sized)."""
    digest = hashlib.md5()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _give_up(url: str, part: Path, failures: int, last: Exception) -> DownloadError:
    """The error after the last retry, saying whether a rerun will resume."""
    kept = part.stat().st_size if part.exists() else 0
    then = f"{kept} bytes are kept in {part}: rerun to resume" if kept else "rerun later"
    tries = "try" if failures == 1 else "tries"
    return DownloadError(
        f"giving up on {display_url(url)} after {failures} failed {tries} ({last}); {then}"
    )


class _Progress:
    """tqdm bars on stderr: bytes, plus files when several are fetched.

    ``disable=None`` hides them when stderr is not a terminal (logs, CI); ``--quiet`` always.
    Worker threads report bytes, so byte updates take a lock.
    """

    def __init__(self, desc: str, files: int, quiet: bool) -> None:
        disable = True if quiet else None
        self._lock = threading.Lock()
        self._single = files == 1
        self._bytes = tqdm(
            desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=disable, leave=False
        )
        self._files = (
            None
            if self._single
            else tqdm(desc=desc, total=files, unit="file", disable=disable, leave=False)
        )

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bytes.close()
        if self._files is not None:
            self._files.close()

    def restart(self, offset: int, total: int | None) -> None:
        """A response arrived for the single file: show its size and the bytes already kept."""
        if self._single:
            with self._lock:
                self._bytes.reset(total=total)
                self._bytes.update(offset)

    def add(self, count: int) -> None:
        with self._lock:
            self._bytes.update(count)

    def file_done(self) -> None:
        if self._files is not None:
            self._files.update()


class Fetcher:
    """HTTP downloads to ``<dest>.part``, resumed, retried and renamed into place when complete.

    One ``requests.Session`` keeps connections alive across the thousands of small bundle files;
    its pool is as large as ``jobs`` so parallel transfers do not discard connections.  After a
    fatal error or Ctrl-C, :attr:`stop` makes every worker leave at its next chunk, keeping its
    ``.part`` for the next run.
    """

    def __init__(self, *, jobs: int, retries: int, quiet: bool) -> None:
        self.jobs = jobs
        self.retries = retries
        self.quiet = quiet
        self.stop = threading.Event()
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(jobs, 1))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # Byte offsets for Range and Content-Length only mean something for unencoded bodies.
        self.session.headers["Accept-Encoding"] = "identity"

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def fetch(
        self,
        url: str,
        dest: Path,
        *,
        kind: str,
        headers: dict[str, str] | None = None,
        md5: str | None = None,
        progress: _Progress | None = None,
        missing_ok: bool = False,
    ) -> bool:
        """Download ``url`` to ``dest`` through ``dest.part``; ``False`` if absent and allowed.

        ``kind`` (``hf``, ``url``, ``base``) picks the advice given on ``401/403/404``.  With
        ``missing_ok`` a plain ``404`` returns ``False`` (a Hugging Face ``404`` that says the
        repository or revision does not exist still raises).  A completed file whose md5 differs
        from ``md5`` is deleted and reported with both digests.
        """
        part = _part_path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        failures = 0
        while True:
            if self.stop.is_set():
                raise _Stopped()
            try:
                if not self._attempt(url, part, kind, headers or {}, progress, missing_ok):
                    return False
                break
            except _Transient as exc:
                failures = 1 if exc.progressed else failures + 1
                if failures > self.retries:
                    raise _give_up(url, part, failures, exc) from None
                delay = max(min(BACKOFF_START_S * 2 ** (failures - 1), BACKOFF_MAX_S), exc.wait_s)
                logger.warning("%s: %s; retrying in %.0f s", display_url(url), exc, delay)
                self.stop.wait(delay)
        if md5 is not None:
            actual = md5_file(part)
            if actual != md5:
                part.unlink()
                other = (
                    f", or --md5 {actual} if it is knowingly another zip" if kind == "url" else ""
                )
                raise ValueError(
                    f"md5 mismatch for {dest.name} from {display_url(url)}: expected {md5}, got "
                    f"{actual}; the file was removed (corrupted transfer or a different file): "
                    f"rerun, or use another source{other}"
                )
        os.replace(part, dest)
        return True

    def _attempt(
        self,
        url: str,
        part: Path,
        kind: str,
        headers: dict[str, str],
        progress: _Progress | None,
        missing_ok: bool,
    ) -> bool:
        """One GET, appended to ``part``; returns once ``part`` holds the whole file.

        Raises :class:`_Transient` for anything a later try may fix (keeping the bytes received)
        and :class:`DownloadError` for refusals.
        """
        offset = part.stat().st_size if part.exists() else 0
        request_headers = dict(headers)
        if offset:
            request_headers["Range"] = f"bytes={offset}-"
        try:
            response = self.session.get(
                url, headers=request_headers, stream=True, timeout=TIMEOUT_S
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Transient(_reason(exc)) from None
        except requests.RequestException as exc:
            raise DownloadError(f"cannot fetch {display_url(url)}: {_reason(exc)}") from None
        with response:
            status = response.status_code
            hf_code = response.headers.get("X-Error-Code", "")
            if status == 404 and missing_ok and hf_code not in ("RepoNotFound", "RevisionNotFound"):
                return False
            if status == 416:  # the part is already whole, or longer than the file: check which
                _, total = _content_range(response.headers.get("Content-Range"))
                if offset and total == offset:
                    return True
                part.unlink(missing_ok=True)
                raise _Transient(f"kept {offset} bytes do not fit the file (HTTP 416); restarting")
            if status == 429 or status >= 500:
                raise _Transient(f"HTTP {status}", wait_s=_retry_after(response))
            if status not in (200, 206):
                server = response.headers.get("X-Error-Message", "")
                server = f" ({server})" if server else ""
                raise DownloadError(
                    f"HTTP {status} for {display_url(url)}{server}: {_hint(kind, status)}"
                )
            # Servers should honour "Accept-Encoding: identity"; if one compresses anyway, the
            # body is decoded and the file restarts from 0 after a cut.
            encoded = response.headers.get("Content-Encoding", "identity") != "identity"
            if status == 206:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != offset:
                    part.unlink()
                    raise _Transient(f"server resumed at byte {start}, not {offset}; restarting")
                mode = "ab"
            else:  # a full body: either no Range was sent or the server ignored it
                offset, mode = 0, "wb"
                length = response.headers.get("Content-Length", "")
                total = int(length) if length.isdigit() and not encoded else None
            if progress is not None:
                progress.restart(offset, total)
            received = 0
            with part.open(mode) as out:
                try:
                    # read1 hands over what each socket read brought, so a cut loses nothing
                    # (iter_content buffers up to a chunk and drops it when the read fails).
                    while chunk := response.raw.read1(CHUNK_BYTES, decode_content=True):
                        if self.stop.is_set():
                            raise _Stopped()
                        out.write(chunk)
                        received += len(chunk)
                        if progress is not None:
                            progress.add(len(chunk))
                except urllib3.exceptions.HTTPError as exc:
                    if encoded:  # decoded bytes cannot be resumed with a byte Range
                        out.truncate(0)
                    raise _Transient(
                        f"transfer cut after {offset + received} bytes ({_reason(exc)})",
                        progressed=received > 0 and not encoded,
                    ) from None
                finally:
                    out.flush()
                    os.fsync(out.fileno())
        size = offset + received
        if total is not None and size != total:
            if size > total:
                part.unlink()
            raise _Transient(f"received {size} of {total} bytes", progressed=received > 0)
        return True

    def download(self, url: str, dest: Path, *, kind: str, md5: str | None, desc: str) -> None:
        """One large file with a byte progress bar; a complete ``dest`` is reused.

        A ``dest`` whose md5 differs from ``md5`` is deleted and fetched again (a file under its
        final name was complete when renamed, so a mismatch means it changed on disk since).
        """
        if dest.is_file():
            if md5 is None or md5_file(dest) == md5:
                logger.info("%s already downloaded", dest)
                return
            logger.warning("%s: md5 differs from %s; downloading it again", dest, md5)
            dest.unlink()
        logger.info("fetching %s", display_url(url))
        with _Progress(desc, 1, self.quiet) as progress:
            self.fetch(url, dest, kind=kind, md5=md5, progress=progress)

    def fetch_many(
        self, items: Sequence[tuple[str, Path]], *, kind: str, headers: dict[str, str], desc: str
    ) -> None:
        """``(url, dest)`` pairs, ``jobs`` at a time; the first failure stops the others."""
        if not items:
            return
        pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="mico-download")
        try:
            with _Progress(desc, len(items), self.quiet) as progress:
                futures = [
                    pool.submit(
                        self.fetch, url, dest, kind=kind, headers=headers, progress=progress
                    )
                    for url, dest in items
                ]
                for future in as_completed(futures):
                    future.result()
                    progress.file_done()
        except BaseException:
            self.stop.set()  # workers leave at their next chunk; their .part files stay
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def sizes(
        self, urls: Sequence[str], headers: dict[str, str]
    ) -> list[tuple[int | None, int | None]]:
        """``(size, HTTP status)`` per URL from ``HEAD``, for ``--dry-run``.

        Redirects are followed; Hugging Face puts the size of large (LFS) files in
        ``X-Linked-Size`` on its redirect, the CDN in ``Content-Length``.  A failed request gives
        ``(None, None)``: a plan should not fail because a server refuses ``HEAD``.
        """

        def head(url: str) -> tuple[int | None, int | None]:
            try:
                response = self.session.head(
                    url, headers=headers, allow_redirects=True, timeout=TIMEOUT_S
                )
            except requests.RequestException:
                return None, None
            if response.status_code != 200:
                return None, response.status_code
            for answer in (*response.history, response):
                linked = answer.headers.get("X-Linked-Size", "")
                if linked.isdigit():
                    return int(linked), 200
            length = response.headers.get("Content-Length", "")
            return (int(length) if length.isdigit() else None), 200

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            return list(pool.map(head, urls))
