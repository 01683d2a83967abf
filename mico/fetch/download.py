"""Step 1 for real: fetch a MICO bundle and its base dataset, verified and resumable.

Where the files come from (MICO.md sections 2 and 3)::

    default      Hugging Face dataset repository, one HTTPS GET per bundle file:
                 {HF_ENDPOINT}/datasets/{repo_id}/resolve/{revision}/{scenario}/{phase}/model_N/{file}
    --url URL    a zip of the bundle (the original signed links; md5 checked for the published zips)
    --archive P  a zip or folder already on disk
    base data    the CIFAR-10 python tarball (md5 checked) or dataset_purchase.tgz, or a --base-url
                 mirror serving the same file name

The original script pointed at signed links that have expired, so the default is the
republished Hugging Face copy; the repository, zip name, md5 and base dataset of each track come
from its registry entry (``task.source``).  Transfers are resumable, retried and verified
(:mod:`mico.fetch.urls`).

Archives are checked member by member before anything is written: absolute paths, ``..``
components, links and special files make the whole archive refused, so extraction cannot write
outside its target.  Each extracted file is written atomically.  The run ends by checking the
bundle layout (:func:`mico.bundle.check_layout`) and listing what is missing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

from tqdm import tqdm

from mico.bundle import check_layout
from mico.fetch.archives import extract_tar_entry, import_folder, import_zip
from mico.fetch.urls import Fetcher, display_url, md5_file
from mico.layout import BUNDLE_CONFIG, data_root
from mico.sources import BaseDataset, Source
from mico.subset import Selection, bundle_files, check_free_space
from mico.tasks import Task, get_task, load_task

logger = logging.getLogger(__name__)

#: What huggingface_hub uses when ``HF_ENDPOINT`` is unset.
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_REVISION = "main"

#: Problems of an incomplete bundle listed one per line before the error.
MAX_LISTED_PROBLEMS = 20
#: Paths shown by ``--dry-run`` before "... and N more".
DRY_RUN_SHOWN = 5

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
    #: The bundle's folder inside the repository (``task.source.repo_prefix``).
    prefix: str = ""

    @classmethod
    def from_env(cls, repo_id: str, revision: str, prefix: str = "") -> HubRepo:
        endpoint = os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT
        token = os.environ.get("HF_TOKEN") or None
        return cls(endpoint.rstrip("/"), repo_id, revision, token, prefix)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def url(self, path: str) -> str:
        revision = quote(self.revision, safe="")
        where = quote(self.prefix + path)
        return f"{self.endpoint}/datasets/{self.repo_id}/resolve/{revision}/{where}"

    def __str__(self) -> str:
        return f"{self.endpoint}/datasets/{self.repo_id} at {self.revision}"


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


def fetch_hub(
    repo: HubRepo, root: Path, name: str, fetcher: Fetcher, selection: Selection | None = None
) -> None:
    """Fetch every (selected) bundle file not yet under its final name, ``--jobs`` at a time."""
    task = _hub_task(repo, root, name, fetcher, save=True)
    base = root / name
    if selection is not None:
        selection.check(task)
    paths = bundle_files(task, selection)
    todo = [path for path in paths if not (base / path).is_file()]
    check_free_space(todo, task, base)
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
    if base.files:
        fetch_base_files(base, folder, base_url, fetcher)
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


def fetch_base_files(
    base: BaseDataset, folder: Path, base_url: str | None, fetcher: Fetcher
) -> None:
    """A base dataset of plain files: fetch the missing ones, then ``base.check`` them; files
    that fail the check are deleted, so that a rerun fetches them afresh."""
    items = [
        (_file_url(remote.url, remote.filename, base_url), folder / remote.path)
        for remote in base.files
        if not (folder / remote.path).is_file()
    ]
    fetcher.fetch_many(items, kind="base", headers={}, desc=base.folder)
    if base.check is not None:
        try:
            base.check(folder)
        except (ValueError, FileNotFoundError) as exc:
            for remote in base.files:
                (folder / remote.path).unlink(missing_ok=True)
            raise ValueError(
                f"{exc}; removed the downloaded files, rerun to fetch them again"
            ) from None
    logger.info("base dataset ready in %s", folder)


def _file_url(url: str, filename: str, base_url: str | None) -> str:
    """``url``, or the file of the same name in the ``--base-url`` mirror folder."""
    return url if base_url is None else f"{base_url.rstrip('/')}/{filename}"


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


@dataclass(frozen=True)
class DownloadOptions:
    """What ``download_files.py`` asks for (without ``--demo``); see its ``--help``."""

    challenge: str
    root: Path
    data_dir: Path | None = None
    repo_id: str | None = None
    revision: str | None = None
    url: str | None = None
    archive: Path | None = None
    md5: str | None = None
    base_url: str | None = None
    skip_base: bool = False
    skip_bundle: bool = False
    selection: Selection = field(default_factory=Selection)
    dry_run: bool = False
    jobs: int = 8
    retries: int = 5
    quiet: bool = False

    @property
    def data(self) -> Path:
        return data_root(self.root, self.data_dir)


def check_options(options: DownloadOptions) -> DownloadOptions:
    """Refuse contradictory or malformed options; returns them with the md5 lower-cased."""
    if options.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {options.jobs}")
    if options.retries < 0:
        raise ValueError(f"--retries must be 0 or more, got {options.retries}")
    if options.skip_bundle and options.skip_base:
        raise ValueError("--skip-bundle and --skip-base leave nothing to do")
    other_source = options.url is not None or options.archive is not None
    if other_source and (options.repo_id is not None or options.revision is not None):
        raise ValueError("--repo-id/--revision choose the Hugging Face source: drop them or --url")
    if options.url is not None and urlsplit(options.url).scheme not in ("http", "https"):
        raise ValueError(f"--url takes an http(s) link, got {display_url(options.url)!r}")
    if options.skip_bundle and other_source:
        raise ValueError("--url/--archive fetch the bundle, which --skip-bundle leaves out")
    if other_source and not options.selection.everything:
        raise ValueError(
            "--scenarios/--phases/--models choose Hugging Face files: drop --url/--archive"
        )
    if options.md5 is None:
        return options
    if not other_source:
        raise ValueError("--md5 checks the zip of --url or --archive; give one of them")
    if not re.fullmatch(r"[0-9a-fA-F]{32}", options.md5):
        raise ValueError(f"--md5 takes 32 hex digits, got {options.md5!r}")
    return dataclasses.replace(options, md5=options.md5.lower())


def _hub_repo(args: DownloadOptions, source: Source) -> HubRepo:
    repo_id, revision = args.repo_id or source.repo_id, args.revision or DEFAULT_REVISION
    return HubRepo.from_env(repo_id, revision, source.repo_prefix)


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


def _dry_run(args: DownloadOptions, source: Source, fetcher: Fetcher) -> None:
    """Print what a real run would fetch, writing nothing."""
    root, name = args.root, args.challenge
    if not args.skip_bundle:
        if args.archive is not None:
            print(f"would import {args.archive} into {root / name}")
        elif args.url is not None:
            sizes = fetcher.sizes([args.url], {})
            _print_plan(f"{display_url(args.url)} and import it into {root / name}", [], sizes)
        else:
            repo = _hub_repo(args, source)
            task = _hub_task(repo, root, name, fetcher, save=False)
            args.selection.check(task)
            paths = bundle_files(task, args.selection)
            todo = [path for path in paths if not (root / name / path).is_file()]
            sizes = fetcher.sizes([repo.url(path) for path in todo], repo.headers)
            what = f"{len(todo)} of {len(paths)} bundle files from {repo} into {root / name}"
            _print_plan(what, todo, sizes)
    if args.skip_base:
        return
    for base in args.selection.base_datasets(get_task(name)):
        folder = args.data / base.folder
        if base_complete(folder, base):
            print(f"base dataset already in {folder}")
        elif base.files:
            urls = [_file_url(f.url, f.filename, args.base_url) for f in base.files]
            what = f"{len(urls)} base dataset files into {folder}"
            _print_plan(what, [display_url(url) for url in urls], fetcher.sizes(urls, {}))
        else:
            url = mirror_url(base, args.base_url)
            what = f"{display_url(url)} and extract {base.entry} into {folder}"
            _print_plan(what, [], fetcher.sizes([url], {}))


def _fetch_bundle(args: DownloadOptions, source: Source, fetcher: Fetcher) -> Task:
    """Get the bundle from the chosen source and return its task once it passes the check."""
    root, name = args.root, args.challenge
    _refuse_demo_bundle(root, name)
    if args.url is not None:
        return fetch_zip(args.url, root, name, source, args.md5, fetcher)
    if args.archive is not None:
        md5 = _expected_md5(args.archive.name, source, args.md5)
        import_archive(args.archive, root, name, md5, quiet=args.quiet)
    else:
        fetch_hub(_hub_repo(args, source), root, name, fetcher, args.selection)
    if not args.selection.everything:
        return verify_selection(root, name, args.selection)
    return verify_bundle(root, name)


def verify_selection(root: Path, name: str, selection: Selection) -> Task:
    """A partial download is checked file by file (the whole-bundle check would list every
    model left out); save_preds.py needs every train model of the scenarios it reads."""
    task = load_task(root, name)
    missing = [path for path in bundle_files(task, selection) if not (root / name / path).is_file()]
    if missing:
        raise ValueError(
            f"{root / name}: {len(missing)} selected files missing (first: {missing[0]}); rerun"
        )
    logger.info(
        "fetched the selected part of %s; the rest of the bundle is not checked", root / name
    )
    return task


def run(options: DownloadOptions) -> int:
    """Fetch and verify the bundle (unless ``--skip-bundle``), then the base dataset."""
    args = check_options(options)
    args.selection.check(get_task(args.challenge))  # before --skip-bundle picks base datasets
    source = get_task(args.challenge).source
    root, name = args.root, args.challenge
    with Fetcher(jobs=args.jobs, retries=args.retries, quiet=args.quiet) as fetcher:
        if args.dry_run:
            _dry_run(args, source, fetcher)
            return 0
        if not args.skip_bundle:
            task = _fetch_bundle(args, source, fetcher)
            counts = ", ".join(f"{count} {phase}" for phase, count in task.models_per_phase)
            logger.info(
                "bundle %s in %s: %d scenarios x (%s) models",
                "complete" if args.selection.everything else "part fetched",
                root / name,
                len(task.scenarios),
                counts,
            )
        if not args.skip_base:
            for base in args.selection.base_datasets(get_task(name)):
                fetch_base(base, args.data, args.base_url, fetcher)
    return 0
