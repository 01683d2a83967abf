"""Step 2: every shadow model's outputs on every challenge point, per scenario.

    python save_preds.py --challenge purchase100 [--device cuda]
    python save_preds.py --challenge purchase100 --shard 1/2     # on one machine or process
    python save_preds.py --challenge purchase100 --shard 2/2     # on another, same --preds-dir
    python save_preds.py --challenge purchase100 --assemble      # scores.npz from both

Writes ``<preds-dir>/<challenge>/<scenario>/scores.npz`` (format in ``mico/store.py``); an
interrupted run resumes at the next model, and a rerun with nothing new runs no model.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

try:  # Ctrl-C while torch & co. load: one line, no traceback (nothing started yet)
    from mico.cli import (
        add_common_args,
        add_preds_dir_arg,
        data_dir,
        preds_dir,
        resolve_device,
        run_cli,
        setup_logging,
    )
    from mico.inference import AUTOCAST
    from mico.predict import PredictOptions, dataset_loader, predict
    from mico.tasks import load_task
except KeyboardInterrupt:
    print("interrupted while starting; nothing was written", file=sys.stderr)
    sys.exit(130)

log = logging.getLogger("save_preds")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run the train (shadow) models over every challenge point of each scenario "
        "and the dev/final targets over their own points; store the true-label logit margins."
    )
    add_common_args(parser)
    add_preds_dir_arg(parser)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--batch-size", type=int, default=4096, help="records per forward pass")
    parser.add_argument(
        "--population",
        type=int,
        default=0,
        metavar="N",
        help="also evaluate every model on N non-challenge records, which run_lira_mia.py "
        "--attack rmia needs (5000 recommended; 0, the default, skips them)",
    )
    parser.add_argument("--population-seed", type=int, default=0, help="seed for those records")
    parser.add_argument(
        "--save-logits",
        action="store_true",
        help="also store every model's full float32 logits in scores.npz (shadows on every "
        "challenge point, dev/final targets on their own): shadow_logits, <phase>_logits",
    )
    work = parser.add_mutually_exclusive_group()
    work.add_argument(
        "--shard",
        type=parse_shard,
        default=None,
        metavar="K/N",
        help="run only shard K of N (model k of each scenario runs in shard k %% N + 1) and "
        "write its per-model caches; run --assemble (or a plain run) when all shards are done",
    )
    work.add_argument(
        "--assemble",
        action="store_true",
        help="run no model: write scores.npz from the per-model caches, or list the models "
        "that have none",
    )
    parser.add_argument(
        "--autocast",
        choices=sorted(AUTOCAST),
        help="run the forward passes in bf16 or fp16 (autocast; margins still in float64). "
        "Worth it for RoBERTa on a GPU; the README reports its effect on margins",
    )
    return parser


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` with ``1 <= K <= N``, as ``(K, N)``."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit()) or not 1 <= int(index) <= int(count):
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N, e.g. 1/4, got {text!r}")
    return int(index), int(count)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    if args.population < 0:
        raise ValueError("--population must be non-negative")
    if args.population == 0 and args.population_seed != 0:
        raise ValueError("--population-seed chooses the records of --population N: add it")
    task = load_task(args.root, args.challenge)
    options = PredictOptions(
        device=resolve_device(args.device),
        batch_size=args.batch_size,
        population=args.population,
        population_seed=args.population_seed,
        save_logits=args.save_logits,
        shard=args.shard,
        autocast=AUTOCAST.get(args.autocast),
    )
    out = preds_dir(args)
    datasets = dataset_loader(data_dir(args))
    for result in predict(args.root, task, datasets, out, options, assemble_only=args.assemble):
        plan, stats = result.plan, result.stats
        log.info(
            "%s: %d models: %d run, %d from cache (%d records evaluated); %d shadow models x "
            "%d unique challenge points, %d population points",
            plan.scenario,
            stats.models_run + stats.from_cache,
            stats.models_run,
            stats.from_cache,
            stats.records,
            len(plan.shadows),
            len(plan.points),
            len(plan.population),
        )
    if args.shard is not None:
        log.info("shard %d/%d done; when every shard is, run save_preds.py --assemble", *args.shard)
    else:
        log.info("scores written under %s", out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
