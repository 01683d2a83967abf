"""Step 1 for real: fetch a MICO bundle and its base dataset, verified and resumable.

Where the files come from (MICO.md sections 2 and 3)::

    default      the Hugging Face dataset repository of the track, through huggingface_hub
                 (:mod:`mico.fetch.hub`): login, cache, offline mode, pinned revision
    --url URL    a zip of the bundle (the original signed links; md5 checked for the published zips)
    --archive P  a zip or folder already on disk
    base data    the CIFAR-10 python tarball (md5 checked) or dataset_purchase.tgz
                 (:mod:`mico.fetch.urls`), SST-2's GLUE tables and tokenizer from the hub, or a
                 --base-url mirror serving the same file names

The original script pointed at signed links that have expired, so the default is the
republished Hugging Face copy; the repository, zip name, md5 and base dataset of each track come
from its registry entry (``task.source``).

Archives are checked member by member before anything is written: absolute paths, ``..``
components, links and special files make the whole archive refused, so extraction cannot write
outside its target.  Each extracted file is written atomically.  The run ends by checking the
bundle layout (:func:`mico.bundle.check_layout`) and listing what is missing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from tqdm import tqdm

from mico.bundle import check_layout
from mico.fetch import hub
from mico.fetch.archives import extract_tar_entry, import_folder, import_zip
from mico.fetch.urls import Fetcher, display_url, md5_file
from mico.layout import BUNDLE_CONFIG, SELECTION_FILE, data_root
from mico.sources import BaseDataset, RemoteFile, Source
from mico.subset import Selection, bundle_files, check_free_space, record_selection
from mico.tasks import Task, get_task, load_task

logger = logging.getLogger(__name__)

#: Problems of an incomplete bundle listed one per line before the error.
MAX_LISTED_PROBLEMS = 20
#: Paths shown by ``--dry-run`` before "... and N more".
DRY_RUN_SHOWN = 5


# --- the Hugging Face source -----------------------------------------------------------------


def hub_repo(source: Source, repo_id: str | None) -> hub.HubRepo:
    """The track's repository (or ``--repo-id``) and the bundle's folder in it."""
    return hub.HubRepo(repo_id or source.repo_id, source.repo_prefix)


def _hub_task(repo: hub.HubRepo, pin: hub.Pin, root: Path, name: str) -> tuple[Task, hub.Pin]:
    """The task a repository describes: its ``bundle.json`` if it has one, else MICO's sizes;
    and the pin, which records whether it has one (asked once per commit).

    The real repositories have none; small test or mirror bundles do.
    """
    if (root / name / BUNDLE_CONFIG).is_file() or pin.has_config is False:
        return load_task(root, name), pin
    found = hub.fetch_file(repo, pin.commit, BUNDLE_CONFIG, repo.local_dir(root, name))
    return load_task(root, name), dataclasses.replace(pin, has_config=found)


def fetch_hub(
    repo: hub.HubRepo,
    root: Path,
    name: str,
    selection: Selection,
    *,
    revision: str | None,
    jobs: int,
    quiet: bool,
    verify: bool = False,
) -> None:
    """Fetch every selected bundle file at one commit, ``jobs`` at a time (see :mod:`hub`)."""
    base, local_dir = root / name, repo.local_dir(root, name)
    pin = hub.choose_commit(repo, base, revision)
    with hub.bundle_lock(local_dir):
        task, pin = _hub_task(repo, pin, root, name)
        hub.write_pin(base, pin)  # before the bundle's files: a rerun completes the same commit
        selection.check(task)
        paths = bundle_files(task, selection)
        if verify:
            bad = hub.verify_files(repo, pin.commit, base, paths, quiet=quiet)
            logger.info(
                "verified %d files against the hub's checksums: %d differed", len(paths), len(bad)
            )
        todo = [path for path in paths if not (base / path).is_file()]
        check_free_space(todo, task, base)
        logger.info(
            "%d of %d bundle files to fetch from %s at %s into %s",
            len(todo),
            len(paths),
            repo,
            pin.commit[:12],
            base,
        )
        # Present files are passed too: the library checks them against its metadata, without
        # a request when they were fetched at this commit and untouched since.
        hub.fetch_files(repo, pin.commit, local_dir, paths, jobs=jobs, quiet=quiet, desc=name)


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
    if not check_layout(root, task, whole=True):
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
    """A base dataset of plain files: fetch the missing ones (from their hub repositories, or
    the ``--base-url`` mirror), then ``base.check`` them; files that fail the check are
    deleted, so that a rerun fetches them afresh."""
    for remote in base.files:
        dest = folder / remote.path
        if dest.is_file():
            continue
        if base_url is None:
            repo = hub.HubRepo(remote.repo_id, repo_type=remote.repo_type)
            hub.cached_file(repo, remote.revision, remote.filename, dest)
        else:
            url = _file_url(remote, base_url)
            fetcher.download(url, dest, kind="base", md5=None, desc=remote.name)
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


def _file_url(remote: RemoteFile, base_url: str) -> str:
    """The file of the same name in the ``--base-url`` mirror folder."""
    return f"{base_url.rstrip('/')}/{remote.name}"


# --- the whole step --------------------------------------------------------------------------


def verify_bundle(root: Path, name: str) -> Task:
    """Check the bundle layout; log every problem (the first 20) and raise if there are any."""
    task = load_task(root, name)
    problems = check_layout(root, task, whole=True)
    if not problems:
        (root / name / SELECTION_FILE).unlink(missing_ok=True)  # whole now, however it began
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
    verify: bool = False
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
    if other_source and options.verify:
        raise ValueError("--verify checks files against the hub's checksums: drop --url/--archive")
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


def _print_plan(
    what: str, paths: Sequence[str], sizes: Sequence[tuple[int | None, int | None]]
) -> None:
    """``sizes``: ``(bytes, HTTP status)`` per file, ``None`` where unknown."""
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
        print(f"warning: HTTP {status} for {count} of them")


def _hub_sizes(repo: hub.HubRepo, commit: str, paths: Sequence[str]) -> list[tuple[int, int]]:
    """Sizes of the named files from ``paths-info``; one the repository lacks counts as 404."""
    found = hub.paths_info(repo, commit, paths)
    return [(found[path].size, 200) if path in found else (None, 404) for path in paths]


def _dry_run_hub(args: DownloadOptions, source: Source) -> None:
    root, name = args.root, args.challenge
    repo = hub_repo(source, args.repo_id)
    pin = hub.read_pin(root / name)
    if args.revision is None and pin is not None and pin.repo_id == repo.repo_id:
        commit = pin.commit
    else:
        commit = hub.resolve(repo, args.revision or hub.DEFAULT_REVISION, cache=False)
    if (root / name / BUNDLE_CONFIG).is_file():
        task = load_task(root, name)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            hub.fetch_file(repo, commit, BUNDLE_CONFIG, repo.local_dir(Path(scratch), name))
            task = load_task(scratch, name)
    args.selection.check(task)
    paths = bundle_files(task, args.selection)
    todo = [path for path in paths if not (root / name / path).is_file()]
    what = f"{len(todo)} of {len(paths)} bundle files from {repo} at {commit[:12]}"
    what += f" into {root / name}"
    _print_plan(what, todo, _hub_sizes(repo, commit, todo))


def _dry_run(args: DownloadOptions, source: Source, fetcher: Fetcher) -> None:
    """Print what a real run would fetch, writing nothing."""
    root, name = args.root, args.challenge
    if not args.skip_bundle:
        if args.archive is not None:
            print(f"would import {args.archive} into {root / name}")
        elif args.url is not None:
            sizes = fetcher.sizes([args.url])
            _print_plan(f"{display_url(args.url)} and import it into {root / name}", [], sizes)
        else:
            _dry_run_hub(args, source)
    if args.skip_base:
        return
    for base in args.selection.base_datasets(get_task(name)):
        folder = args.data / base.folder
        if base_complete(folder, base):
            print(f"base dataset already in {folder}")
        elif base.files and args.base_url is not None:
            urls = [_file_url(remote, args.base_url) for remote in base.files]
            what = f"{len(urls)} base dataset files into {folder}"
            _print_plan(what, [display_url(url) for url in urls], fetcher.sizes(urls))
        elif base.files:
            sizes = []
            for remote in base.files:
                repo = hub.HubRepo(remote.repo_id, repo_type=remote.repo_type)
                sizes.extend(_hub_sizes(repo, remote.revision, [remote.filename]))
            names = [f"{remote.repo_id}/{remote.filename}" for remote in base.files]
            _print_plan(f"{len(names)} base dataset files from the hub into {folder}", names, sizes)
        else:
            url = mirror_url(base, args.base_url)
            what = f"{display_url(url)} and extract {base.entry} into {folder}"
            _print_plan(what, [], fetcher.sizes([url]))


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
        if not args.selection.everything:
            record_selection(root / name, get_task(name), args.selection)
        fetch_hub(
            hub_repo(source, args.repo_id),
            root,
            name,
            args.selection,
            revision=args.revision,
            jobs=args.jobs,
            quiet=args.quiet,
            verify=args.verify,
        )
    if not args.selection.everything:
        return verify_selection(root, name, args.selection)
    return verify_bundle(root, name)


def verify_selection(root: Path, name: str, selection: Selection) -> Task:
    """A partial download is checked file by file (the whole-bundle check would list every
    model left out); the other scripts check it against ``selection.json`` the same way.
    save_preds.py needs every train model of the scenarios it reads."""
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
    hub.route_library_logs()
    with Fetcher(retries=args.retries, quiet=args.quiet) as fetcher:
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
