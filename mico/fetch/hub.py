"""Bundle files from a Hugging Face repository, through huggingface_hub.

This module only chooses what to fetch and where it goes; huggingface_hub does the rest, as
for every other tool that reads the hub:

* **login**: its token order, ``HF_TOKEN``, then the token ``hf auth login`` stored
  (``$HF_HOME/token``, or ``HF_TOKEN_PATH``); the token goes to the hub only, never to the CDN
  that large files are redirected to;
* **endpoint, offline mode, retries**: ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, its timeouts
  (``HF_HUB_ETAG_TIMEOUT``, ``HF_HUB_DOWNLOAD_TIMEOUT``) and its backoff on 429, 5xx and network
  errors, including resuming a cut transfer with ``Range`` within the run;
* **transfers**: Xet where the repository stores files with it (``hf-xet``), plain HTTP else;
* **cache**: a file already in the shared hub cache (``HF_HUB_CACHE``) is copied, not fetched.

Layout.  ``hf_hub_download(local_dir=...)`` writes each file straight to its place in MICO's
layout, ``<root>/<challenge>/<scenario>/<phase>/model_N/<file>``, and keeps its commit and ETag
in ``.cache/huggingface/`` beside it.  A rerun sends no request for a file already fetched at
the pinned commit; a file whose time stamp moved since is checked again (an LFS file is hashed
against its published SHA-256, a small file is fetched again), and ``--verify`` hashes every
selected file against the checksums the hub publishes.

Naming, not listing.  The selection names every file (:func:`mico.fetch.parts.bundle_files`), so
each is fetched by name (a HEAD and a GET): nothing lists the repository, whose DDP copy holds about
600 model folders per scenario.  ``--dry-run`` and ``--verify`` ask for the named paths only
(``paths-info``, in batches).

Pinning.  ``--revision`` (default ``main``) is resolved to a commit hash once and recorded in
``<root>/<challenge>/hub_revision.json`` before the first file; every file comes from that
commit, and a rerun without ``--revision`` keeps to it (``--revision main`` moves on).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import httpx2
from filelock import FileLock, Timeout
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    RevisionResolutionError,
)
from tqdm import tqdm

from mico.bundle.fileio import atomic_write
from mico.errors import InputError
from mico.fetch.progress import Progress, Stopped

logger = logging.getLogger(__name__)

DEFAULT_REVISION = "main"
#: Beside ``bundle.json``: the repository and commit the bundle's hub files come from.
PIN_FILE = "hub_revision.json"
#: Paths per ``paths-info`` request (``--dry-run``, ``--verify``).
PATHS_PER_REQUEST = 100
#: Bytes per hashing read.
CHUNK_BYTES = 1 << 20
#: Errors that mean "no room for this file".
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@dataclass(frozen=True)
class HubRepo:
    """A repository, and the folder that holds the bundle in it (``task.source.repo_prefix``)."""

    repo_id: str
    prefix: str = ""
    repo_type: str = "dataset"

    def local_dir(self, root: Path, name: str) -> Path:
        """Where huggingface_hub writes, so that ``<prefix><path>`` lands at
        ``<root>/<name>/<path>``."""
        base = root / name
        parts = PurePosixPath(self.prefix).parts
        if not parts:
            return base
        if base.parts[-len(parts) :] != parts:
            raise InputError(
                f"the bundle sits under {self.prefix!r} in {self.repo_id}, which cannot land in "
                f"{base}: that folder must end in {self.prefix!r}"
            )
        return base.parents[len(parts) - 1]

    def __str__(self) -> str:
        return f"{constants.ENDPOINT}/{self.repo_type}s/{self.repo_id}"


@dataclass(frozen=True)
class Pin:
    """The content of ``hub_revision.json``: what was asked, the commit it resolved to, and
    whether the repository has a ``bundle.json`` at that commit (``None``: not asked yet), so
    that a rerun, offline included, need not ask again."""

    repo_id: str
    revision: str
    commit: str
    resolved_at: str = ""
    has_config: bool | None = None


def read_pin(folder: Path) -> Pin | None:
    """The recorded pin of a bundle folder, or ``None`` (absent or unreadable: re-resolved)."""
    path = folder / PIN_FILE
    try:
        data = json.loads(path.read_text())
        has_config = data.get("has_config")
        return Pin(
            **{key: str(data[key]) for key in ("repo_id", "revision", "commit")},
            resolved_at=str(data.get("resolved_at", "")),
            has_config=has_config if isinstance(has_config, bool) else None,
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("%s unreadable (%s); resolving the revision again", path, exc)
        return None


def write_pin(folder: Path, pin: Pin) -> None:
    """Record ``pin`` atomically beside ``bundle.json`` (unless it is recorded already)."""
    if read_pin(folder) == pin:
        return
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / PIN_FILE, "w") as out:
        out.write(json.dumps(asdict(pin), indent=1) + "\n")


def choose_commit(repo: HubRepo, folder: Path, revision: str | None) -> Pin:
    """The commit to fetch: ``revision`` resolved once, else the commit recorded in ``folder``,
    else ``main`` resolved.  A resolution through the library falls back on the hub cache's
    record of the revision when the hub cannot be reached."""
    pin = read_pin(folder)
    if revision is None and pin is not None and pin.repo_id == repo.repo_id:
        logger.info(
            "pinned to %s commit %s (%s, recorded in %s); pass --revision %s to move on",
            repo.repo_id,
            pin.commit,
            pin.revision,
            folder / PIN_FILE,
            pin.revision,
        )
        return pin
    asked = revision or DEFAULT_REVISION
    commit = resolve(repo, asked, cache=True)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    logger.info("%s at %s is commit %s", repo.repo_id, asked, commit)
    return Pin(repo.repo_id, asked, commit, now)


def resolve(repo: HubRepo, revision: str, *, cache: bool) -> str:
    """``revision`` as a commit hash: one request (none for a hash).  ``cache`` records it in
    the hub cache's ``refs/`` and falls back on that record offline; without it nothing is
    written (``--dry-run``)."""
    api = HfApi()
    try:
        if cache:
            return api.resolve_revision(
                repo.repo_id, repo_type=repo.repo_type, revision=revision
            ).resolved
        sha = api.repo_info(repo.repo_id, repo_type=repo.repo_type, revision=revision).sha
    except Exception as exc:
        raise explain(exc, repo, revision) from None
    if sha is None:
        raise OSError(f"{repo} answered no commit for {revision!r}; is HF_ENDPOINT a hub?")
    return sha


def route_library_logs() -> None:
    """huggingface_hub's messages through the project's logging (``WARNING: ...`` on stderr,
    silenced by ``--quiet`` like the rest), once: its own stderr handler is removed.  Its
    level stays its own (``HF_HUB_VERBOSITY``, warnings by default); its HTTP client's
    per-request lines are left out."""
    library = logging.getLogger("huggingface_hub")
    for handler in list(library.handlers):
        library.removeHandler(handler)
    library.propagate = True
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per request else


# --- errors ----------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def explain(exc: BaseException, repo: HubRepo, revision: str, path: str = "") -> BaseException:
    """A library error as one line saying what to do; an unknown error is returned as it is
    (a bug keeps its traceback)."""
    what = f"{repo.repo_id} ({repo.repo_type} on {constants.ENDPOINT})"
    target = f"{repo.prefix}{path}" if path else f"revision {revision!r} of {repo.repo_id}"
    cause = exc.__cause__ or exc
    if isinstance(exc, RevisionNotFoundError):
        return InputError(
            f"revision {revision!r} not found in {what}: check --revision (a branch, tag or "
            "commit hash)"
        )
    if isinstance(exc, GatedRepoError):
        return PermissionError(
            f"{what} is gated: accept its terms on its hub page, then log in with "
            "`hf auth login` (or set HF_TOKEN)"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return FileNotFoundError(
            f"repository {what} not found, or private and no valid token was sent: check "
            "--repo-id, and log in with `hf auth login` (or set HF_TOKEN)"
        )
    if isinstance(exc, RemoteEntryNotFoundError):
        return FileNotFoundError(
            f"{repo.prefix}{path} is not in {what} at {revision}: the repository is not laid out "
            "as this bundle; check --repo-id/--revision, or pass --archive with a copy"
        )
    http = exc if isinstance(exc, HfHubHTTPError) else cause
    if isinstance(http, HfHubHTTPError) and _status(http) in (401, 403):
        return PermissionError(
            f"HTTP {_status(http)} from {constants.ENDPOINT} for {what}: the token was refused or "
            "cannot read it; log in with `hf auth login` (or fix HF_TOKEN), and accept the "
            "dataset's terms on its hub page if it has any"
        )
    offline = isinstance(cause, OfflineModeIsEnabled) or constants.is_offline_mode()
    lost = (LocalEntryNotFoundError, RevisionResolutionError, OfflineModeIsEnabled)
    if offline and isinstance(exc, lost):
        return FileNotFoundError(
            f"HF_HUB_OFFLINE is set and {target} is not on disk yet: run "
            "once without HF_HUB_OFFLINE to fetch it"
        )
    if isinstance(exc, (*lost, httpx2.TransportError)):
        return ConnectionError(
            f"cannot get {target} from {constants.ENDPOINT} "
            f"({_first_line(cause)}): check the network and HF_ENDPOINT, then rerun (finished "
            "files are kept); HF_HUB_OFFLINE=1 uses only what is already downloaded"
        )
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return OSError(
            f"cannot write {repo.prefix}{path}: {exc.strerror or 'no space left'}; free space "
            "or fetch part of the bundle with --scenarios, --phases or --models, then rerun "
            "(finished files are kept)"
        )
    if isinstance(exc, HfHubHTTPError):
        return OSError(
            f"HTTP {_status(exc)} from {constants.ENDPOINT} for {target}"
            f" ({_first_line(exc)}); rerun later (finished files are kept)"
        )
    return exc


# --- fetching --------------------------------------------------------------------------------


@contextlib.contextmanager
def bundle_lock(local_dir: Path) -> Iterator[None]:
    """Hold the folder for this run; remove what a killed run's transfers left.

    huggingface_hub 2.4 writes each transfer to a temporary file unique to its process and
    never resumes it from another process, so a run killed mid-file leaves it behind (an SST-2
    model is 499 MB).  With the folder held, any such file is dead and is removed.
    """
    meta = local_dir / ".cache" / "huggingface"
    meta.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(meta / "mico-download.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise FileExistsError(
            f"another download is writing {local_dir}: wait for it to finish, or pass another "
            "--root"
        ) from None
    try:
        for stale in (meta / "download").rglob("*.incomplete"):
            logger.info("removing %s, left by an interrupted run", stale)
            stale.unlink(missing_ok=True)
        yield
    finally:
        lock.release()


def fetch_files(
    repo: HubRepo,
    commit: str,
    local_dir: Path,
    paths: Sequence[str],
    *,
    jobs: int,
    quiet: bool,
    desc: str,
) -> None:
    """``hf_hub_download`` every path (relative to the bundle folder), ``jobs`` at a time.

    The first failure stops the other workers at their next chunk and is raised as one line.
    """
    if not paths:
        return
    progress = Progress(desc, len(paths), quiet)
    file_bar = progress.file_bar()

    def one(path: str) -> None:
        if progress.stop.is_set():
            raise Stopped()
        try:
            hf_hub_download(
                repo.repo_id,
                repo.prefix + path,
                repo_type=repo.repo_type,
                revision=commit,
                local_dir=local_dir,
                tqdm_class=file_bar,
            )
        except Stopped:
            raise
        except Exception as exc:
            mapped = explain(exc, repo, commit, path)
            if mapped is exc:
                raise
            raise mapped from None
        with progress.lock:
            progress.files.update()

    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="mico-hub")
    try:
        futures = [pool.submit(one, path) for path in paths]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f.exception() for f in done if f.exception() is not None]
        real = [exc for exc in failed if not isinstance(exc, Stopped)]
        if real:
            raise real[0]
    except BaseException:
        progress.stop.set()  # the others leave at their next chunk; nothing partial is kept
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        progress.close()


def fetch_file(repo: HubRepo, commit: str, path: str, local_dir: Path) -> bool:
    """One file, ``False`` if the repository has none at that path (``bundle.json``)."""
    try:
        hf_hub_download(
            repo.repo_id,
            repo.prefix + path,
            repo_type=repo.repo_type,
            revision=commit,
            local_dir=local_dir,
        )
    except RemoteEntryNotFoundError:
        return False
    except Exception as exc:
        raise explain(exc, repo, commit, path) from None
    return True


def cached_file(repo: HubRepo, revision: str, path: str, dest: Path) -> None:
    """A file of another repository (a base dataset's table, a tokenizer file), through the
    shared hub cache (which ``datasets`` and ``transformers`` also fill), copied to ``dest``."""
    try:
        cached = hf_hub_download(repo.repo_id, path, repo_type=repo.repo_type, revision=revision)
    except Exception as exc:
        raise explain(exc, repo, revision, path) from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(cached, "rb") as source, atomic_write(dest) as out:
        shutil.copyfileobj(source, out, CHUNK_BYTES)


def paths_info(repo: HubRepo, commit: str, paths: Sequence[str]) -> dict[str, object]:
    """``RepoFile`` entries of the named paths (relative to the bundle folder), asked in
    batches; a path the repository lacks is absent from the result."""
    api = HfApi()
    named = [repo.prefix + path for path in paths]
    found: dict[str, object] = {}
    try:
        for start in range(0, len(named), PATHS_PER_REQUEST):
            batch = named[start : start + PATHS_PER_REQUEST]
            for entry in api.get_paths_info(
                repo.repo_id, batch, revision=commit, repo_type=repo.repo_type
            ):
                if hasattr(entry, "blob_id"):
                    found[entry.path[len(repo.prefix) :]] = entry
    except Exception as exc:
        raise explain(exc, repo, commit) from None
    return found


def _git_blob_sha1(path: Path) -> str:
    """Git's object id of a file: SHA-1 of ``blob <size>\\0`` and the content."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(
    repo: HubRepo, commit: str, base: Path, paths: Sequence[str], *, quiet: bool
) -> list[str]:
    """Hash every present file against the checksum the hub publishes for it (SHA-256 for LFS
    files, the git object id for others) and delete those that differ; returns them."""
    present = [path for path in paths if (base / path).is_file()]
    remote = paths_info(repo, commit, present)
    bad = []
    for path in tqdm(present, desc="verifying", unit="file", disable=True if quiet else None):
        entry = remote.get(path)
        if entry is None:
            continue
        lfs = getattr(entry, "lfs", None)
        local = base / path
        actual = _sha256(local) if lfs is not None else _git_blob_sha1(local)
        expected = lfs.sha256 if lfs is not None else entry.blob_id
        if actual != expected:
            logger.warning("%s differs from %s at %s; fetching it again", local, repo, commit)
            local.unlink()
            bad.append(path)
    return bad
