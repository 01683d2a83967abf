"""Step 3: the LiRA membership-inference attack; a ``prediction.csv`` for every model.

    python run_lira_mia.py --challenge purchase100 --global_variance

Reads ``save_preds.py``'s ``scores.npz`` per scenario, writes
``<root>/<challenge>/<scenario>/<phase>/model_N/prediction.csv`` for train, dev and final models,
and prints the official metrics on the train phase (which has ground truth).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mico.bundle import challenge_dir, read_solution, scenario_dirs, write_prediction
from mico.cli import add_common_args, add_preds_dir_arg, preds_dir, run_cli, setup_logging
from mico.lira import lira
from mico.report import metrics_table, plot_roc
from mico.scoring import score
from mico.store import SCORES_FILE, ScenarioScores
from mico.tasks import Task, load_task

log = logging.getLogger("run_lira_mia")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="LiRA on stored shadow-model outputs: write prediction.csv for every model "
        "and score the train phase."
    )
    add_common_args(parser)
    add_preds_dir_arg(parser)
    lira_group = parser.add_argument_group("LiRA options (the original flags)")
    lira_group.add_argument(
        "--global_variance",
        action="store_true",
        help="one pooled standard deviation per target instead of one per point",
    )
    scaling = lira_group.add_mutually_exclusive_group()
    scaling.add_argument(
        "--logit_scaling", action="store_true", help="score = log(p / (1 - p)), computed from p"
    )
    scaling.add_argument(
        "--stable_logit_scaling",
        action="store_true",
        help="score = log p_y - log sum_{j!=y} p_j, exact in log space",
    )
    lira_group.add_argument(
        "--online_attack",
        action="store_true",
        help="likelihood ratio of IN and OUT Gaussians instead of the OUT-only test",
    )
    parser.add_argument("--plot", type=Path, metavar="FILE", help="write a log-log ROC figure")
    parser.add_argument(
        "--reference",
        type=Path,
        metavar="DIR",
        help="ground truth for dev/final (<DIR>/<challenge>/<scenario>/<phase>/model_N/"
        "solution.csv, as the demo writes it) to score those phases too",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="score only; leave prediction.csv files alone"
    )
    return parser


def transform_name(args: argparse.Namespace) -> str:
    """The score transform selected by the original flags."""
    if args.logit_scaling:
        return "logit"
    if args.stable_logit_scaling:
        return "stable_logit"
    return "prob"


def attack_phase(scores: ScenarioScores, phase: str, args: argparse.Namespace) -> np.ndarray:
    """Membership confidences [T, K] in [0, 1] for every target of one phase."""
    data = scores.phases[phase]
    return lira(
        scores.shadow_margin,
        scores.shadow_in,
        data.margin,
        data.points,
        data.shadow_or_none,
        transform=transform_name(args),
        global_variance=args.global_variance,
        online=args.online_attack,
    )


def _reference_solutions(
    reference: Path, task: Task, scenario: str, phase: str, ids: np.ndarray
) -> np.ndarray:
    folder = reference / task.name / scenario / phase
    return np.stack([read_solution(folder / f"model_{i}", task.num_challenges) for i in ids])


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    task = load_task(args.root, args.challenge)
    if args.reference is not None and not (args.reference / task.name).is_dir():
        raise FileNotFoundError(f"{args.reference / task.name} not found (--reference)")
    rows: dict[str, dict[str, float]] = {}
    held_out: dict[str, dict[str, float]] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for scenario in scenario_dirs(args.root, task):
        scores = ScenarioScores.load(preds_dir(args) / scenario.name / SCORES_FILE)
        for phase, data in scores.phases.items():
            predictions = attack_phase(scores, phase, args)
            if not args.no_write:
                folder = challenge_dir(args.root, task) / scenario.name / phase
                for model, values in zip(data.ids, predictions, strict=True):
                    write_prediction(folder / f"model_{model}" / "prediction.csv", values)
            if phase == "train" and data.solution is not None:
                rows[scenario.name] = score(data.solution, predictions)
                curves[scenario.name] = (data.solution.ravel(), predictions.ravel())
            elif args.reference is not None:
                truth = _reference_solutions(args.reference, task, scenario.name, phase, data.ids)
                held_out[f"{scenario.name} {phase}"] = score(truth, predictions)
        log.info("%s: predictions for %s", scenario.name, ", ".join(scores.phases))
    if not rows:
        raise ValueError("no train phase with solutions: nothing to score")
    print(f"\n{task.name}: LiRA on the train phase ({_describe(args)})")
    print(metrics_table(rows, f"{task.name} average"))
    if held_out:
        print(f"\n{task.name}: dev/final against the reference in {args.reference}")
        print(metrics_table(held_out, None))
    if args.plot is not None:
        plot_roc(curves, args.plot, f"{task.name}: LiRA, train phase")
        log.info("ROC figure written to %s", args.plot)
    return 0


def _describe(args: argparse.Namespace) -> str:
    parts = ["online" if args.online_attack else "offline", transform_name(args)]
    if args.global_variance:
        parts.append("global variance")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
