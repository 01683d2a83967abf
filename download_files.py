"""Step 1: get a challenge bundle and its base dataset, or build the offline demo.

python download_files.py --challenge purchase100            # real bundle + base data
python download_files.py --challenge purchase100 --demo     # offline demo, no network
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

try:  # Ctrl-C while torch & co. load: one line, no traceback (nothing started yet)
    from mico import demo
    from mico.cli import add_common_args, run_cli, setup_logging
    from mico.fetch import download
    from mico.subset import Selection
except KeyboardInterrupt:
    print("interrupted while starting; nothing was written", file=sys.stderr)
    sys.exit(130)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Fetch and verify a MICO challenge bundle and its base dataset, "
        "or build a small offline demo bundle in the same format.",
    )
    add_common_args(parser)
    group = parser.add_argument_group("download (default)")
    group.add_argument(
        "--repo-id",
        help="Hugging Face dataset repository (default: szanella/MICO-CIFAR10, "
        "szanella/MICO-purchase100, szanella/MICO-SST2 or szanella/MICO-DDP), fetched through "
        "huggingface_hub: login with `hf auth login` or HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE",
    )
    group.add_argument(
        "--revision",
        help="branch, tag or commit of the repository, resolved to a commit recorded in "
        "<root>/<challenge>/hub_revision.json (default: the recorded commit, else main)",
    )
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
        "--base-url",
        help="mirror folder serving cifar-10-python.tar.gz / dataset_purchase.tgz (SST-2: the "
        "GLUE parquet files and roberta-base's vocab.json, merges.txt)",
    )
    group.add_argument("--skip-base", action="store_true", help="leave out the base dataset")
    group.add_argument("--skip-bundle", action="store_true", help="only fetch the base dataset")
    group.add_argument(
        "--scenarios",
        help="comma-separated scenarios to fetch, e.g. inf,lo (default: all; SST-2's full "
        "bundle is about 300 GB; DDP's sst2_ddp about 100 GB); with --challenge ddp --demo, "
        "the datasets to build (cifar10_ddp, purchase100_ddp)",
    )
    group.add_argument("--phases", help="comma-separated phases to fetch, e.g. dev,final")
    group.add_argument(
        "--models", type=int, help="fetch only the first N models of each chosen phase"
    )
    group.add_argument(
        "--dry-run", action="store_true", help="list what would be fetched, and its size"
    )
    group.add_argument(
        "--verify",
        action="store_true",
        help="hash every selected file already on disk against the checksums the hub publishes, "
        "and fetch again those that differ",
    )
    group.add_argument("--jobs", type=int, default=8, help="parallel hub transfers (default: 8)")
    group.add_argument(
        "--retries",
        type=int,
        default=5,
        help="--url/--base-url/tarball transfers: tries in a row that bring no new bytes before "
        "giving up on a file (default: 5; hub transfers use huggingface_hub's retries)",
    )
    group = parser.add_argument_group("offline demo (--demo)")
    group.add_argument(
        "--demo",
        nargs="?",
        const="default",
        choices=("default", "tiny"),
        default=None,
        help="build a small offline challenge in MICO's format from synthetic data instead of "
        "downloading (default preset; 'tiny' for tests)",
    )
    group.add_argument("--seed", type=int, default=0, help="demo random seed (default: 0)")
    group.add_argument("--train-models", type=int, help="train models per scenario")
    group.add_argument("--eval-models", type=int, help="models per scenario in dev and in final")
    group.add_argument(
        "--dataset-len", type=int, help="synthetic dataset size (training sets scale with it)"
    )
    group.add_argument("--epochs", type=int, help="training epochs of every demo model")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    group.add_argument(
        "--workers",
        type=int,
        default=0,
        help="training processes on a CPU (default: one per core, at most 4, from 24 models on; "
        "else 1)",
    )
    group.add_argument(
        "--reference-dir",
        type=Path,
        help="where the dev/final ground truth goes (default: <root>/reference)",
    )
    return parser


#: Flags that only a download reads, and flags that only ``--demo`` reads (``--scenarios``
#: serves both): given with the other mode they would be ignored without a word.
DOWNLOAD_ONLY = (
    "repo_id",
    "revision",
    "url",
    "archive",
    "md5",
    "base_url",
    "skip_base",
    "skip_bundle",
    "phases",
    "models",
    "dry_run",
    "jobs",
    "retries",
)
DEMO_ONLY = (
    "seed",
    "train_models",
    "eval_models",
    "dataset_len",
    "epochs",
    "device",
    "workers",
    "reference_dir",
)


def refuse_other_mode(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One line for flags of the mode not chosen (e.g. ``--demo --dry-run``, ``--demo --url``,
    ``--seed`` without ``--demo``), rather than ignoring them."""
    unused = DOWNLOAD_ONLY if args.demo else DEMO_ONLY
    given = [
        f"--{d.replace('_', '-')}" for d in unused if getattr(args, d) != parser.get_default(d)
    ]
    if given and args.demo:
        raise ValueError(
            f"{', '.join(given)}: download flags, which --demo does not read; drop them"
        )
    if given:
        raise ValueError(f"{', '.join(given)}: --demo flags; add --demo or drop them")


def demo_options(args: argparse.Namespace) -> demo.DemoOptions:
    return demo.DemoOptions(
        challenge=args.challenge,
        root=args.root,
        preset=args.demo,
        data_dir=args.data_dir,
        reference_dir=args.reference_dir,
        seed=args.seed,
        train_models=args.train_models,
        eval_models=args.eval_models,
        dataset_len=args.dataset_len,
        epochs=args.epochs,
        device=args.device,
        workers=args.workers,
        scenarios=_names(args.scenarios),
    )


def download_options(args: argparse.Namespace) -> download.DownloadOptions:
    return download.DownloadOptions(
        challenge=args.challenge,
        root=args.root,
        data_dir=args.data_dir,
        repo_id=args.repo_id,
        revision=args.revision,
        url=args.url,
        archive=args.archive,
        md5=args.md5,
        base_url=args.base_url,
        skip_base=args.skip_base,
        skip_bundle=args.skip_bundle,
        selection=Selection(_names(args.scenarios), _names(args.phases), args.models),
        dry_run=args.dry_run,
        jobs=args.jobs,
        retries=args.retries,
        verify=args.verify,
        quiet=args.quiet,
    )


def _names(value: str | None) -> tuple[str, ...]:
    """``"inf, lo"`` -> ``("inf", "lo")``; nothing -> ``()`` (everything)."""
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.quiet)
    refuse_other_mode(parser, args)
    if args.demo:
        return demo.run(demo_options(args))
    return download.run(download_options(args))


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
