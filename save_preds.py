"""Step 2: every shadow model's outputs on every challenge point, per scenario.

    python save_preds.py --challenge purchase100 [--device cuda]

Writes ``<preds-dir>/<challenge>/<scenario>/scores.npz`` (format in ``mico/store.py``); an
interrupted run resumes at the next model, and a rerun with nothing new runs no model.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from tqdm.auto import tqdm

from mico.bundle import scenario_dirs
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
from mico.predict import PredictOptions, save_scenario
from mico.tasks import load_task

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
        "--save-logits", action="store_true", help="also keep the shadows' full float32 logits"
    )
    parser.add_argument(
        "--autocast",
        choices=sorted(AUTOCAST),
        help="run the forward passes in bf16 or fp16 (autocast; margins still in float64). "
        "Worth it for RoBERTa on a GPU; the README reports its effect on margins",
    )
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    if args.population < 0:
        raise ValueError("--population must be non-negative")
    task = load_task(args.root, args.challenge)
    scenarios = scenario_dirs(args.root, task)
    options = PredictOptions(
        device=resolve_device(args.device),
        batch_size=args.batch_size,
        population=args.population,
        population_seed=args.population_seed,
        save_logits=args.save_logits,
        autocast=AUTOCAST.get(args.autocast),
    )
    dataset = task.load_dataset(data_dir(args))
    out = preds_dir(args)
    for scenario in tqdm(scenarios, desc="scenarios", unit="scenario", disable=None):
        scores, evaluated = save_scenario(scenario, out / scenario.name, task, dataset, options)
        s, p = scores.shadow_margin.shape
        log.info(
            "%s: %d shadow models x %d unique challenge points, %d population points; "
            "%d records evaluated in this run -> %s",
            scenario.name,
            s,
            p,
            len(scores.population),
            evaluated,
            out / scenario.name,
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
