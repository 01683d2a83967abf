"""Step 1: get a challenge bundle and its base dataset, or build the offline demo.

python download_files.py --challenge purchase100            # real bundle + base data
python download_files.py --challenge purchase100 --demo     # offline demo, no network
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mico import demo, download
from mico.cli import add_common_args, run_cli, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Fetch and verify a MICO challenge bundle and its base dataset, "
        "or build a small offline demo bundle in the same format.",
    )
    add_common_args(parser)
    download.add_arguments(parser.add_argument_group("download (default)"))
    demo.add_arguments(parser.add_argument_group("offline demo (--demo)"))
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    if args.demo:
        return demo.run(args)
    return download.run(args)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
