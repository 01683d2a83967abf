"""Plain-URL transfers, for the files that live on no hub: resumable, retried, verified, atomic.

Hub files go through huggingface_hub (:mod:`mico.fetch.hub`).  What is left has no hub: the
CIFAR-10 and Purchase-100 tarballs on their authors' sites, a ``--url`` zip (the original
signed links, 2.1 GiB for CIFAR-10) and ``--base-url`` mirrors.  Those are large single files
on ordinary web servers, and connections drop, so every transfer

* writes ``<final>.part`` and renames it to ``<final>`` only once it is complete (size from
  ``Content-Length``/``Content-Range``, md5 where one is published): Ctrl-C or a crash never
  leaves an incomplete file under its final name, and a rerun skips every final file;
* resumes a ``.part`` with ``Range: bytes=N-`` (a server that answers ``200`` instead of ``206``
  restarts the file; ``416`` means the part is already whole, or wrong and restarted);
* retries connection errors, timeouts, cut transfers, ``429`` and ``5xx`` with exponential
  backoff.  A try counts against ``--retries`` unless it took the file past the furthest byte
  any earlier try reached, so a server that cuts every transfer at the same place (and answers
  a resume with the whole file again) is given up on instead of retried for ever; and no file
  gets more than :data:`MAX_TRIES` tries in one run, however it progresses;
* turns ``401``/``403``/``404`` into one line naming the URL and what to try instead.

Why ``requests`` and not ``pooch``: pooch writes to a temporary file that a failure deletes, so
a cut 2 GiB transfer starts again from byte 0; here the kept ``.part`` resumes (measured in
``docs/download.md``).  What is fetched, and from where, is :mod:`mico.fetch.download`'s
business.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import requests
import urllib3
from tqdm import tqdm

from mico.errors import InputError

logger = logging.getLogger(__name__)

#: Bytes per read and write: large enough for GB files, small enough for a prompt Ctrl-C.
CHUNK_BYTES = 1 << 20
#: (connect, read) timeouts in seconds; a stalled read counts as a transient error.
TIMEOUT_S = (15, 60)
#: First wait after a failed try, doubled per counted failure up to ``BACKOFF_MAX_S``.
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0
#: Longest ``Retry-After`` honoured after a ``429``/``503``.
RETRY_AFTER_MAX_S = 300.0
#: Tries of one file in one run, progressing or not: a link that needs more is not worth more
#: in this run (the ``.part`` stays, and a rerun resumes from it).
MAX_TRIES = 100


# What to try after a refusal, by source: a --url link, or the base-dataset host.
_HINTS: dict[str, dict[int, str]] = {
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
    """A failed try worth repeating; ``reached`` is the byte offset the ``.part`` got to."""

    def __init__(self, reason: str, *, reached: int = 0, wait_s: float = 0.0) -> None:
        super().__init__(reason)
        self.reached = reached
        self.wait_s = wait_s


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


def _give_up(url: str, part: Path, tries: int, last: Exception) -> DownloadError:
    """The error after the last try, saying whether a rerun will resume."""
    kept = part.stat().st_size if part.exists() else 0
    then = f"{kept} bytes are kept in {part}: rerun to resume" if kept else "rerun later"
    return DownloadError(f"giving up on {display_url(url)} after {tries} tries ({last}); {then}")


class Fetcher:
    """HTTP downloads to ``<dest>.part``, resumed, retried and renamed into place when complete.

    One ``requests.Session`` keeps the connection alive between tries.  After Ctrl-C the
    ``.part`` stays for the next run.  ``retries`` is ``--retries``: tries in a row that took
    the file no further than before.
    """

    def __init__(self, *, retries: int, quiet: bool) -> None:
        self.retries = retries
        self.quiet = quiet
        self.session = requests.Session()
        # Byte offsets for Range and Content-Length only mean something for unencoded bodies.
        self.session.headers["Accept-Encoding"] = "identity"

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def fetch(
        self, url: str, dest: Path, *, kind: str, md5: str | None = None, bar: tqdm | None = None
    ) -> None:
        """Download ``url`` to ``dest`` through ``dest.part``.

        ``kind`` (``url``, ``base``) picks the advice given on ``401/403/404``.  A completed
        file whose md5 differs from ``md5`` is deleted and reported with both digests.
        """
        part = _part_path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        furthest = part.stat().st_size if part.exists() else 0
        failures = tries = 0
        while True:
            tries += 1
            try:
                self._attempt(url, part, kind, bar)
                break
            except _Transient as exc:
                if exc.reached > furthest:  # new ground: not a failure of the link
                    furthest, failures = exc.reached, 0
                else:
                    failures += 1
                if failures > self.retries or tries >= MAX_TRIES:
                    raise _give_up(url, part, tries, exc) from None
                delay = BACKOFF_START_S * 2 ** max(failures - 1, 0)
                delay = max(min(delay, BACKOFF_MAX_S), exc.wait_s)
                logger.warning("%s: %s; retrying in %.0f s", display_url(url), exc, delay)
                time.sleep(delay)
        if md5 is not None:
            actual = md5_file(part)
            if actual != md5:
                part.unlink()
                other = (
                    f", or --md5 {actual} if it is knowingly another zip" if kind == "url" else ""
                )
                raise InputError(
                    f"md5 mismatch for {dest.name} from {display_url(url)}: expected {md5}, got "
                    f"{actual}; the file was removed (corrupted transfer or a different file): "
                    f"rerun, or use another source{other}"
                )
        os.replace(part, dest)

    def _attempt(self, url: str, part: Path, kind: str, bar: tqdm | None) -> None:
        """One GET, appended to ``part``; returns once ``part`` holds the whole file.

        Raises :class:`_Transient` for anything a later try may fix (keeping the bytes received)
        and :class:`DownloadError` for refusals.
        """
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            response = self.session.get(url, headers=headers, stream=True, timeout=TIMEOUT_S)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Transient(_reason(exc), reached=offset) from None
        except requests.RequestException as exc:
            raise DownloadError(f"cannot fetch {display_url(url)}: {_reason(exc)}") from None
        with response:
            status = response.status_code
            if status == 416:  # the part is already whole, or longer than the file: check which
                _, total = _content_range(response.headers.get("Content-Range"))
                if offset and total == offset:
                    return
                part.unlink(missing_ok=True)
                raise _Transient(f"kept {offset} bytes do not fit the file (HTTP 416); restarting")
            if status == 429 or status >= 500:
                raise _Transient(f"HTTP {status}", reached=offset, wait_s=_retry_after(response))
            if status not in (200, 206):
                raise DownloadError(f"HTTP {status} for {display_url(url)}: {_hint(kind, status)}")
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
            if bar is not None:
                bar.reset(total=total)
                bar.update(offset)
            size = offset
            with part.open(mode) as out:
                try:
                    # read1 hands over what each socket read brought, so a cut loses nothing
                    # (iter_content buffers up to a chunk and drops it when the read fails).
                    while chunk := response.raw.read1(CHUNK_BYTES, decode_content=True):
                        out.write(chunk)
                        size += len(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                except urllib3.exceptions.HTTPError as exc:
                    if encoded:  # decoded bytes cannot be resumed with a byte Range
                        out.truncate(0)
                        size = 0
                    raise _Transient(
                        f"transfer cut after {size} bytes ({_reason(exc)})", reached=size
                    ) from None
                finally:
                    out.flush()
                    os.fsync(out.fileno())
        if total is not None and size != total:
            if size > total:
                part.unlink()
                size = 0
            raise _Transient(f"received {size} of {total} bytes", reached=size)

    def download(self, url: str, dest: Path, *, kind: str, md5: str | None, desc: str) -> None:
        """One file with a byte progress bar; a complete ``dest`` is reused.

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
        disable = True if self.quiet else None
        with tqdm(
            desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=disable, leave=False
        ) as bar:
            self.fetch(url, dest, kind=kind, md5=md5, bar=bar)

    def sizes(self, urls: Sequence[str]) -> list[tuple[int | None, int | None]]:
        """``(size, HTTP status)`` per URL from ``HEAD``, for ``--dry-run``.

        A failed request gives ``(None, None)``: a plan should not fail because a server
        refuses ``HEAD``.
        """

        def head(url: str) -> tuple[int | None, int | None]:
            try:
                response = self.session.head(url, allow_redirects=True, timeout=TIMEOUT_S)
            except requests.RequestException:
                return None, None
            if response.status_code != 200:
                return None, response.status_code
            length = response.headers.get("Content-Length", "")
            return (int(length) if length.isdigit() else None), 200

        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(head, urls))
