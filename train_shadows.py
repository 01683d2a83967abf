"""Extra shadow models: train N balanced shadows per scenario with the targets' recipe.

python train_shadows.py --challenge purchase100 --models 64                  # local pool / GPU
python train_shadows.py --challenge cifar10 --models 64 --device cuda --ray auto   # Ray cluster
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

try:  # Ctrl-C while numpy & co. load: one line, no traceback (nothing started yet)
    from mico.cli import add_common_args, run_cli, setup_logging
except KeyboardInterrupt:
    print("interrupted while starting; nothing was written", file=sys.stderr)
    sys.exit(130)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train extra shadow models per scenario, each challenge point IN for a "
        "balanced fraction of them, with the recipe the bundle's models were trained with; "
        "written to <root>/shadows/<challenge>/<scenario>/model_N/.",
    )
    add_common_args(parser)
    parser.add_argument(
        "--models", type=int, required=True, help="shadows per scenario (a rerun may grow it)"
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=(),
        help="scenarios by name or suffix, e.g. inf hi (default: all three)",
    )
    parser.add_argument("--seed", type=int, default=0, help="design and training seed (default 0)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="CPU training processes (default: one per core, at most 4, from 24 models on); "
        "with --ray local, the CPUs Ray may use",
    )
    parser.add_argument(
        "--ray",
        metavar="auto|local|ADDRESS",
        help="train on Ray: 'local' starts an instance here, 'auto' joins the cluster started "
        "here by `ray start`, HOST:PORT joins a remote head node (default: no Ray)",
    )
    parser.add_argument(
        "--recipe",
        type=Path,
        help='JSON recipe overriding the bundle\'s: {"recipe": {Recipe fields}, '
        '"dp_epsilon": {"hi": 10, "lo": 4}} (bundle.json\'s "demo" entry works)',
    )
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    from mico.train import shadows  # torch loads here, after the arguments are checked

    return shadows.run(
        shadows.ShadowOptions(
            challenge=args.challenge,
            root=args.root,
            models=args.models,
            scenarios=tuple(args.scenarios),
            seed=args.seed,
            device=args.device,
            workers=args.workers,
            ray=args.ray,
            recipe=args.recipe,
            data_dir=args.data_dir,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
