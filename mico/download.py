"""Step 1 for real: fetch a MICO bundle and its base dataset, verified and resumable.

Where the files come from (MICO.md sections 2 and 3)::

    default      Hugging Face dataset repository, one HTTPS GET per bundle file:
                 {HF_ENDPOINT}/datasets/{repo_id}/resolve/{revision}/{scenario}/{phase}/model_N/{file}
    --url URL    a zip of the bundle (the original signed links; md5 checked for the published zips)
    --archive P  a zip or folder already on disk
    base data    the CIFAR-10 python tarball (md5 checked) or dataset_purchase.tgz, or a --base-url
                 mirror serving the same file name

The original script pointed at signed links that have expired, so the default is the
republished Hugging Face copy.  Bundles are several GB and connections drop, so every transfer

* writes ``<final>.part`` and renames it to ``<final>`` only once it is complete (size from
  ``Content-Length``/``Content-Range``, md5 where one is published): Ctrl-C or a crash never
  leaves an incomplete file under its final name, and a rerun skips every final file;
* resumes a ``.part`` with ``Range: bytes=N-`` (a server that answers ``200`` instead of ``206``
  restarts the file; ``416`` means the part is already whole, or wrong and restarted);
* retries connection errors, timeouts, cut transfers, ``429`` and ``5xx`` with exponential
  backoff, counting only consecutive tries that brought no new bytes;
* turns ``401``/``403``/``404`` into one line naming the URL and what to try instead.

Archives are checked member by member before anything is written: absolute paths, ``..``
components, links and special files make the whole archive refused, so extraction cannot write
outside its target.  Each extracted file is written atomically.  The run ends by checking the
bundle layout (:func:`mico.bundle.check_layout`) and listing what is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from tqdm import tqdm

from mico.bundle import SEED_FILES, check_layout
from mico.cli import data_dir
from mico.data import CIFAR10_BATCHES, CIFAR10_FOLDER, PURCHASE100_FILE
from mico.extract import extract_tar_entry, import_folder, import_zip
from mico.tasks import BUNDLE_CONFIG, Task, load_task

logger = logging.getLogger(__name__)

#: What huggingface_hub uses when ``HF_ENDPOINT`` is unset.
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_REVISION = "main"

#: Bytes per read and write: large enough for GB files, small enough for a prompt Ctrl-C.
CHUNK_BYTES = 1 << 20
#: (connect, read) timeouts in seconds; a stalled read counts as a transient error.
TIMEOUT_S = (15, 60)
#: First wait after a failed try, doubled per consecutive failure up to ``BACKOFF_MAX_S``.
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0
#: Longest ``Retry-After`` honoured after a ``429``/``503``.
RETRY_AFTER_MAX_S = 300.0
#: Problems of an incomplete bundle listed one per line before the error.
MAX_LISTED_PROBLEMS = 20
#: Paths shown by ``--dry-run`` before "... and N more".
DRY_RUN_SHOWN = 5

#: Files of each model folder, per phase (MICO.md section 2).
TRAIN_FILES = (*SEED_FILES, "solution.csv", "model.pt")
TARGET_FILES = ("seed_challenge", "model.pt")


@dataclass(frozen=True)
class BaseDataset:
    """A track's base-dataset tarball and what of it lands in ``<data-dir>/<folder>/``.

    ``entry`` is the folder (``is_dir``) or file the loaders in :mod:`mico.data` read; it may sit
    at any depth of the tarball (mirrors repack), the shallowest copy wins.  ``required`` lists
    the files, relative to ``<data-dir>/<folder>``, whose presence means nothing is to be done.
    """

    url: str
    md5: str | None
    folder: str
    entry: str
    is_dir: bool
    required: tuple[str, ...]

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Source:
    """Per-track defaults: the Hugging Face repository, the published zip and the base data."""

    repo_id: str
    archive_name: str
    archive_md5: str
    base: BaseDataset


SOURCES: dict[str, Source] = {
    "cifar10": Source(
        repo_id="szanella/MICO-CIFAR10",
        archive_name="cifar10.zip",
        archive_md5="c615b172eb42aac01f3a0737540944b1",
        base=BaseDataset(
            url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            md5="c58f30108f718f92721af3b95e74349a",
            folder="cifar10",
            entry=CIFAR10_FOLDER,
            is_dir=True,
            required=tuple(f"{CIFAR10_FOLDER}/{name}" for name in CIFAR10_BATCHES),
        ),
    ),
    "purchase100": Source(
        repo_id="szanella/MICO-purchase100",
        archive_name="purchase100.zip",
        archive_md5="67eba1f88d112932fe722fef85fb95fd",
        base=BaseDataset(
            url="https://www.comp.nus.edu.sg/~reza/files/dataset_purchase.tgz",
            md5=None,  # none published; size is still checked against Content-Length
            folder="purchase100",
            entry=PURCHASE100_FILE,
            is_dir=False,
            required=(PURCHASE100_FILE,),
        ),
    ),
}

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


def _display(url: str) -> str:
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
        f"giving up on {_display(url)} after {failures} failed {tries} ({last}); {then}"
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
                logger.warning("%s: %s; retrying in %.0f s", _display(url), exc, delay)
                self.stop.wait(delay)
        if md5 is not None:
            actual = md5_file(part)
            if actual != md5:
                part.unlink()
                other = (
                    f", or --md5 {actual} if it is knowingly another zip" if kind == "url" else ""
                )
                raise ValueError(
                    f"md5 mismatch for {dest.name} from {_display(url)}: expected {md5}, got "
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
            raise DownloadError(f"cannot fetch {_display(url)}: {_reason(exc)}") from None
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
                    f"HTTP {status} for {_display(url)}{server}: {_hint(kind, status)}"
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
        logger.info("fetching %s", _display(url))
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


# --- the Hugging Face layout -----------------------------------------------------------------


@dataclass(frozen=True)
class HubRepo:
    """A Hugging Face dataset repository at one revision, reached over plain HTTPS.

    ``endpoint`` and ``token`` come from ``HF_ENDPOINT`` and ``HF_TOKEN`` as in huggingface_hub;
    the token only ever goes to the endpoint (requests drops it on redirects to the CDN).
    """

    endpoint: str
    repo_id: str
    revision: str
    token: str | None

    @classmethod
    def from_env(cls, repo_id: str, revision: str) -> HubRepo:
        endpoint = os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT
        return cls(endpoint.rstrip("/"), repo_id, revision, os.environ.get("HF_TOKEN") or None)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def url(self, path: str) -> str:
        revision = quote(self.revision, safe="")
        return f"{self.endpoint}/datasets/{self.repo_id}/resolve/{revision}/{quote(path)}"

    def __str__(self) -> str:
        return f"{self.endpoint}/datasets/{self.repo_id} at {self.revision}"


def bundle_files(task: Task) -> list[str]:
    """Every file of a complete bundle, relative to ``<challenge>/``, in bundle order.

    Model ids run on across phases (MICO: train 0..99, dev 100..149, final 150..199), so the
    counts of ``task.models_per_phase`` (``bundle.json`` may shrink them) give the folder names.
    """
    paths = []
    for scenario in task.scenarios:
        first = 0
        for phase, count in task.models_per_phase:
            names = TRAIN_FILES if phase == "train" else TARGET_FILES
            for model in range(first, first + count):
                paths.extend(f"{scenario}/{phase}/model_{model}/{name}" for name in names)
            first += count
    return paths


def _hub_task(repo: HubRepo, root: Path, name: str, fetcher: Fetcher, *, save: bool) -> Task:
    """The task a repository describes: its ``bundle.json`` if it has one, else MICO's sizes.

    The real repositories have none (404 means "absent"); small test or mirror bundles do.  With
    ``save`` the file lands in the bundle, otherwise (``--dry-run``) in a temporary folder.
    """
    config = root / name / BUNDLE_CONFIG
    if config.is_file():
        return load_task(root, name)
    if save:
        fetcher.fetch(
            repo.url(BUNDLE_CONFIG), config, kind="hf", headers=repo.headers, missing_ok=True
        )
        return load_task(root, name)
    with tempfile.TemporaryDirectory() as scratch:
        where = Path(scratch) / name / BUNDLE_CONFIG
        fetcher.fetch(
            repo.url(BUNDLE_CONFIG), where, kind="hf", headers=repo.headers, missing_ok=True
        )
        return load_task(scratch, name)


def fetch_hub(repo: HubRepo, root: Path, name: str, fetcher: Fetcher) -> None:
    """Fetch every bundle file not yet under its final name, ``--jobs`` at a time."""
    task = _hub_task(repo, root, name, fetcher, save=True)
    base = root / name
    paths = bundle_files(task)
    todo = [path for path in paths if not (base / path).is_file()]
    logger.info("%d of %d bundle files to fetch from %s into %s", len(todo), len(paths), repo, base)
    items = [(repo.url(path), base / path) for path in todo]
    fetcher.fetch_many(items, kind="hf", headers=repo.headers, desc=name)


def _expected_md5(file_name: str, source: Source, override: str | None) -> str | None:
    """``--md5``, else the published md5 when the file carries a published archive's name."""
    if override is not None:
        return override
    return source.archive_md5 if file_name == source.archive_name else None


def import_archive(path: Path, root: Path, name: str, md5: str | None, *, quiet: bool) -> None:
    """``--archive``: a local zip (md5-checked when known, never deleted) or folder.

    Only the scenario names matter for choosing what to import; the sizes (which an imported
    ``bundle.json`` may change) are checked afterwards by :func:`verify_bundle`.
    """
    task = load_task(root, name)
    if path.is_dir():
        count = import_folder(path, root, task)
    elif path.is_file():
        if md5 is not None:
            actual = md5_file(path)
            if actual != md5:
                raise ValueError(
                    f"md5 mismatch for {path}: expected {md5}, got {actual}; download it again "
                    f"(or pass --md5 {actual} if this is knowingly a different zip)"
                )
        count = import_zip(path, root, task, quiet=quiet)
    else:
        raise FileNotFoundError(f"{path} not found: --archive takes a zip or a bundle folder")
    logger.info("imported %d files from %s into %s", count, path, root / name)


def fetch_zip(
    url: str, root: Path, name: str, source: Source, md5: str | None, fetcher: Fetcher
) -> Task:
    """``--url``: download the zip to ``<root>/<file name>``, import and verify it, delete it.

    Skipped when the bundle is already complete, so a rerun transfers nothing.
    """
    task = load_task(root, name)
    if not check_layout(root, task):
        logger.info("%s is already complete; nothing to fetch", root / name)
        return task
    file_name = unquote(PurePosixPath(urlsplit(url).path).name) or source.archive_name
    zip_path = root / file_name
    fetcher.download(
        url, zip_path, kind="url", md5=_expected_md5(file_name, source, md5), desc=file_name
    )
    try:
        import_zip(zip_path, root, task, quiet=fetcher.quiet)
        task = verify_bundle(root, name)
    except ValueError as exc:  # a wrong zip: do not keep GBs that a rerun would refuse again
        zip_path.unlink()
        raise ValueError(f"{exc}; removed {zip_path}") from None
    zip_path.unlink()
    logger.info("imported %s into %s and removed the zip", file_name, root / name)
    return task


# --- base datasets ---------------------------------------------------------------------------


def base_complete(folder: Path, base: BaseDataset) -> bool:
    """Whether every file the loader reads is there (then nothing is downloaded)."""
    return all((folder / path).is_file() for path in base.required)


def mirror_url(base: BaseDataset, base_url: str | None) -> str:
    """``--base-url`` names a folder serving the same file name; a full file URL also works."""
    if base_url is None:
        return base.url
    mirror = base_url.rstrip("/")
    return mirror if mirror.endswith("/" + base.filename) else f"{mirror}/{base.filename}"


def fetch_base(
    base: BaseDataset, dataset_dir: Path, base_url: str | None, fetcher: Fetcher
) -> None:
    """Download, verify and extract the base dataset unless its files are already there.

    The tarball is kept under its final name until extraction succeeds (a rerun extracts it
    again without a download), then deleted.  A tarball that cannot be extracted is deleted
    too, so that the next run downloads it afresh.
    """
    folder = dataset_dir / base.folder
    if base_complete(folder, base):
        logger.info("base dataset already in %s", folder)
        return
    archive = dataset_dir / base.filename
    fetcher.download(
        mirror_url(base, base_url), archive, kind="base", md5=base.md5, desc=base.filename
    )
    try:
        extract_tar_entry(archive, folder, base.entry, is_dir=base.is_dir)
    except ValueError as exc:
        archive.unlink()
        raise ValueError(f"{exc}; removed it, rerun to download it again") from None
    missing = [path for path in base.required if not (folder / path).is_file()]
    if missing:
        raise ValueError(
            f"{archive}: extracted, but {len(missing)} files are missing (first: "
            f"{folder / missing[0]}); is it the right download?"
        )
    archive.unlink()
    logger.info("base dataset ready in %s", folder)


# --- the whole step --------------------------------------------------------------------------


def verify_bundle(root: Path, name: str) -> Task:
    """Check the bundle layout; log every problem (the first 20) and raise if there are any."""
    task = load_task(root, name)
    problems = check_layout(root, task)
    if problems:
        for problem in problems[:MAX_LISTED_PROBLEMS]:
            logger.error("%s", problem)
        shown = min(len(problems), MAX_LISTED_PROBLEMS)
        raise ValueError(
            f"{root / name} is incomplete: {len(problems)} problems ({shown} listed above, "
            f"first: {problems[0]}); rerun to fetch what is missing, or check the source"
        )
    return task


def _refuse_demo_bundle(root: Path, name: str) -> None:
    """A demo bundle's ``bundle.json`` would shrink the file list the real bundle is checked
    against, and its files would pass for downloaded ones: refuse to mix the two."""
    config = root / name / BUNDLE_CONFIG
    if not config.is_file():
        return
    try:
        is_demo = "demo" in json.loads(config.read_text())
    except (OSError, ValueError):
        return  # load_task reports a broken file with the right advice
    if is_demo:
        raise FileExistsError(
            f"{root / name} holds the offline demo bundle: pass another --root (or delete that "
            f"folder) to download the real one"
        )


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """The download flags (``--challenge``, ``--root``, ``--data-dir`` are common to all)."""
    group.add_argument(
        "--repo-id",
        help="Hugging Face dataset repository (default: szanella/MICO-CIFAR10 or "
        "szanella/MICO-purchase100); endpoint from HF_ENDPOINT, token from HF_TOKEN",
    )
    group.add_argument("--revision", help="branch, tag or commit of the repository (default: main)")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--url", help="fetch a zip of the bundle from this URL instead")
    where.add_argument(
        "--archive", type=Path, help="import a bundle zip or folder already on disk instead"
    )
    group.add_argument(
        "--md5",
        help="expected md5 of the --url/--archive zip (default: the published one when the file "
        "is named cifar10.zip or purchase100.zip)",
    )
    group.add_argument(
        "--base-url", help="mirror folder serving cifar-10-python.tar.gz / dataset_purchase.tgz"
    )
    group.add_argument("--skip-base", action="store_true", help="leave out the base dataset")
    group.add_argument("--skip-bundle", action="store_true", help="only fetch the base dataset")
    group.add_argument(
        "--dry-run", action="store_true", help="list what would be fetched, and its size"
    )
    group.add_argument("--jobs", type=int, default=8, help="parallel transfers (default: 8)")
    group.add_argument(
        "--retries",
        type=int,
        default=5,
        help="consecutive failed tries per file before giving up (default: 5)",
    )


def _check_args(args: argparse.Namespace) -> None:
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    if args.retries < 0:
        raise ValueError(f"--retries must be 0 or more, got {args.retries}")
    if args.skip_bundle and args.skip_base:
        raise ValueError("--skip-bundle and --skip-base leave nothing to do")
    other_source = args.url is not None or args.archive is not None
    if other_source and (args.repo_id is not None or args.revision is not None):
        raise ValueError("--repo-id/--revision choose the Hugging Face source: drop them or --url")
    if args.url is not None and urlsplit(args.url).scheme not in ("http", "https"):
        raise ValueError(f"--url takes an http(s) link, got {_display(args.url)!r}")
    if args.skip_bundle and other_source:
        raise ValueError("--url/--archive fetch the bundle, which --skip-bundle leaves out")
    if args.md5 is not None:
        if not other_source:
            raise ValueError("--md5 checks the zip of --url or --archive; give one of them")
        if not re.fullmatch(r"[0-9a-fA-F]{32}", args.md5):
            raise ValueError(f"--md5 takes 32 hex digits, got {args.md5!r}")
        args.md5 = args.md5.lower()


def _hub_repo(args: argparse.Namespace, source: Source) -> HubRepo:
    return HubRepo.from_env(args.repo_id or source.repo_id, args.revision or DEFAULT_REVISION)


def _print_plan(
    what: str, paths: Sequence[str], sizes: list[tuple[int | None, int | None]]
) -> None:
    known = [size for size, _ in sizes if size is not None]
    total = tqdm.format_sizeof(sum(known), suffix="B", divisor=1024)
    unknown = len(sizes) - len(known)
    size_note = f"{total}" + (f", size unknown for {unknown}" if unknown else "")
    print(f"would fetch {what} ({size_note})")
    for path in paths[:DRY_RUN_SHOWN]:
        print(f"  {path}")
    if len(paths) > DRY_RUN_SHOWN:
        print(f"  ... and {len(paths) - DRY_RUN_SHOWN} more")
    refused = Counter(status for _, status in sizes if status not in (200, None))
    for status, count in sorted(refused.items()):
        print(f"warning: HEAD answered HTTP {status} for {count} of them")


def _dry_run(args: argparse.Namespace, source: Source, fetcher: Fetcher) -> None:
    """Print what a real run would fetch, writing nothing."""
    root, name = args.root, args.challenge
    if not args.skip_bundle:
        if args.archive is not None:
            print(f"would import {args.archive} into {root / name}")
        elif args.url is not None:
            sizes = fetcher.sizes([args.url], {})
            _print_plan(f"{_display(args.url)} and import it into {root / name}", [], sizes)
        else:
            repo = _hub_repo(args, source)
            task = _hub_task(repo, root, name, fetcher, save=False)
            paths = bundle_files(task)
            todo = [path for path in paths if not (root / name / path).is_file()]
            sizes = fetcher.sizes([repo.url(path) for path in todo], repo.headers)
            what = f"{len(todo)} of {len(paths)} bundle files from {repo} into {root / name}"
            _print_plan(what, todo, sizes)
    if not args.skip_base:
        folder = data_dir(args) / source.base.folder
        if base_complete(folder, source.base):
            print(f"base dataset already in {folder}")
        else:
            url = mirror_url(source.base, args.base_url)
            what = f"{_display(url)} and extract {source.base.entry} into {folder}"
            _print_plan(what, [], fetcher.sizes([url], {}))


def _fetch_bundle(args: argparse.Namespace, source: Source, fetcher: Fetcher) -> Task:
    """Get the bundle from the chosen source and return its task once it passes the check."""
    root, name = args.root, args.challenge
    _refuse_demo_bundle(root, name)
    if args.url is not None:
        return fetch_zip(args.url, root, name, source, args.md5, fetcher)
    if args.archive is not None:
        md5 = _expected_md5(args.archive.name, source, args.md5)
        import_archive(args.archive, root, name, md5, quiet=args.quiet)
    else:
        fetch_hub(_hub_repo(args, source), root, name, fetcher)
    return verify_bundle(root, name)


def run(args: argparse.Namespace) -> int:
    """Fetch and verify the bundle (unless ``--skip-bundle``), then the base dataset."""
    _check_args(args)
    source = SOURCES[args.challenge]
    root, name = args.root, args.challenge
    with Fetcher(jobs=args.jobs, retries=args.retries, quiet=args.quiet) as fetcher:
        if args.dry_run:
            _dry_run(args, source, fetcher)
            return 0
        if not args.skip_bundle:
            task = _fetch_bundle(args, source, fetcher)
            counts = ", ".join(f"{count} {phase}" for phase, count in task.models_per_phase)
            logger.info(
                "bundle complete in %s: %d scenarios x (%s) models",
                root / name,
                len(task.scenarios),
                counts,
            )
        if not args.skip_base:
            fetch_base(source.base, data_dir(args), args.base_url, fetcher)
    return 0
