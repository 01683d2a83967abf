"""Step 3: a membership-inference attack; a ``prediction.csv`` for every model.

    python run_lira_mia.py --challenge purchase100 --global_variance      # 2nd-place LiRA
    python run_lira_mia.py --challenge purchase100 --attack hardness      # or rmia, loss
    python run_lira_mia.py --challenge purchase100 --compare [--reference DIR] [--plot FILE]

Reads ``save_preds.py``'s ``scores.npz`` per scenario, writes
``<root>/<challenge>/<scenario>/<phase>/model_N/prediction.csv`` for train, dev and final models,
and prints the official metrics on the train phase (which has ground truth). Where an attack
chooses a variant or parameter, the choice is made on the train models and the train-phase
numbers are a k-fold cross-validation estimate (:mod:`mico.selection`). ``--compare`` writes
nothing: it scores every attack and LiRA flag combination (:mod:`mico.compare`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

try:  # Ctrl-C while torch & co. load: one line, no traceback (nothing started yet)
    import numpy as np
    import pandas as pd

    from mico.bundle import read_solution, scenario_dirs, write_prediction
    from mico.cli import add_common_args, add_preds_dir_arg, preds_dir, run_cli, setup_logging
    from mico.compare import (
        ATTACKS,
        RECOMMENDED_POPULATION,
        Predictor,
        ScenarioComparison,
        choices,
        compare_scenario,
        has_population,
        lira_config,
        phase_metrics,
        population_error,
        roc_panels,
        run_attack,
        small_population_warning,
    )
    from mico.layout import challenge_dir
    from mico.report import (
        comparison_frame,
        format_frame,
        metrics_table,
        plot_roc,
        plot_roc_panels,
        summary_frame,
    )
    from mico.scoring import metrics
    from mico.selection import DEFAULT_FOLDS
    from mico.store import SCORES_FILE, ScenarioScores
    from mico.tasks import Task, load_task
except KeyboardInterrupt:
    print("interrupted while starting; nothing was written", file=sys.stderr)
    sys.exit(130)

log = logging.getLogger("run_lira_mia")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Membership inference on stored shadow-model outputs: write prediction.csv "
        "for every model and score the train phase, or compare every attack (--compare)."
    )
    add_common_args(parser)
    add_preds_dir_arg(parser)
    parser.add_argument(
        "--attack",
        choices=ATTACKS,
        default=None,
        help="lira (default): the 2nd place's LiRA; hardness: the 1st place's per-point "
        "calibration; rmia: Zarifzadeh et al.'s relative attack (needs save_preds.py "
        f"--population N, e.g. {RECOMMENDED_POPULATION}); loss: the loss-threshold baseline",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="score every attack and LiRA flag combination on the train phase (and on "
        "--reference dev/final) in one table; writes no prediction files",
    )
    parser.add_argument(
        "--folds",
        type=int,
        default=DEFAULT_FOLDS,
        metavar="K",
        help="folds over train models for choosing a variant or parameter "
        f"(default {DEFAULT_FOLDS})",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print --compare tables as markdown"
    )
    lira_group = parser.add_argument_group("LiRA options (the original flags; --attack lira only)")
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
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE",
        help="write a log-log ROC figure of the train phase (with --compare: one panel per "
        "scenario, one curve per attack)",
    )
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
    config = lira_config(transform_name(args), args.global_variance, args.online_attack)
    return Predictor(scores).predict(config, phase)


def _reference_solutions(
    reference: Path, task: Task, scenario: str, phase: str, ids: np.ndarray
) -> np.ndarray:
    folder = reference / task.name / scenario / phase
    return np.stack([read_solution(folder / f"model_{i}", task.num_challenges) for i in ids])


LIRA_FLAGS = ("global_variance", "logit_scaling", "stable_logit_scaling", "online_attack")


def check_args(args: argparse.Namespace) -> None:
    """Refuse flag combinations that would be silently ignored."""
    given = [f"--{flag}" for flag in LIRA_FLAGS if getattr(args, flag)]
    if args.compare and args.attack is not None:
        raise ValueError("--compare runs every attack: drop --attack")
    if given and (args.compare or args.attack not in (None, "lira")):
        what = "--compare" if args.compare else f"--attack {args.attack}"
        raise ValueError(f"{', '.join(given)} apply to --attack lira only, not to {what}")
    if args.folds < 2:
        raise ValueError("--folds must be at least 2")
    if args.markdown and not args.compare:
        raise ValueError("--markdown formats the --compare tables: add --compare")
    if args.attack is None:
        args.attack = "lira"


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    check_args(args)
    task = load_task(args.root, args.challenge)
    if args.reference is not None and not (args.reference / task.name).is_dir():
        raise FileNotFoundError(f"{args.reference / task.name} not found (--reference)")
    if args.compare:
        return _compare(args, task)
    rows: dict[str, dict[str, float]] = {}
    held_out: dict[str, dict[str, float]] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for scenario in scenario_dirs(args.root, task):
        path = preds_dir(args) / scenario.name / SCORES_FILE
        scores = ScenarioScores.load(path)
        estimate, predictions = _attack_scenario(scores, path, task, args)
        for phase, data in scores.phases.items():
            if not args.no_write:
                folder = challenge_dir(args.root, task.name) / scenario.name / phase
                for model, values in zip(data.ids, predictions[phase], strict=True):
                    write_prediction(folder / f"model_{model}" / "prediction.csv", values)
            if phase == "train" and data.solution is not None:
                rows[scenario.name] = metrics(data.solution, estimate)
                curves[scenario.name] = (data.solution.ravel(), estimate.ravel())
            elif phase != "train" and args.reference is not None:
                truth = _reference_solutions(args.reference, task, scenario.name, phase, data.ids)
                held_out[f"{scenario.name} {phase}"] = metrics(truth, predictions[phase])
        log.info("%s: predictions for %s", scenario.name, ", ".join(scores.phases))
    if not rows:
        raise ValueError("no train phase with solutions: nothing to score")
    print(f"\n{task.name}: {_describe(args)} on the train phase")
    print(metrics_table(rows, f"{task.name} average"))
    if held_out:
        print(f"\n{task.name}: dev/final against the reference in {args.reference}")
        print(metrics_table(held_out, None))
    if args.plot is not None:
        plot_roc(curves, args.plot, f"{task.name}: {_describe(args)}, train phase")
        log.info("ROC figure written to %s", args.plot)
    return 0


def _attack_scenario(
    scores: ScenarioScores, path: Path, task: Task, args: argparse.Namespace
) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """The train-phase predictions to score (a CV estimate where a choice is made) and the
    predictions to write, ``{phase: [T, K]}``."""
    if args.attack == "lira":
        predictions = {phase: attack_phase(scores, phase, args) for phase in scores.phases}
        return predictions.get("train"), predictions
    if args.attack == "rmia" and not has_population(scores):
        raise ValueError(population_error(str(path), task.name))
    if args.attack == "rmia" and (warning := small_population_warning(scores)):
        log.warning("%s: %s", path.parent.name, warning)
    if "train" not in scores.phases or scores.phases["train"].solution is None:
        raise ValueError(f"{path}: no train phase with solutions to run {args.attack} with")
    run = run_attack(scores, args.attack, args.folds)
    if run.row.fold_choices:
        log.info(
            "%s: %s chosen on all train models (%d of %d CV folds chose it too)",
            path.parent.name,
            run.row.chosen.label,
            run.row.fold_choices.count(run.row.chosen.label),
            len(run.row.fold_choices),
        )
    return run.row.train, run.predictions


def _compare(args: argparse.Namespace, task: Task) -> int:
    """``--compare``: every row of :func:`mico.compare.comparison_rows` on every scenario."""
    results: dict[str, ScenarioComparison] = {}
    for scenario in scenario_dirs(args.root, task):
        path = preds_dir(args) / scenario.name / SCORES_FILE
        scores = ScenarioScores.load(path)
        if "train" not in scores.phases or scores.phases["train"].solution is None:
            raise ValueError(f"{path}: no train phase with solutions: nothing to compare on")
        if not has_population(scores):
            log.warning("rmia left out: %s", population_error(str(path), task.name))
        elif warning := small_population_warning(scores):
            log.warning("%s: %s", scenario.name, warning)
        truths = {}
        if args.reference is not None:
            for phase in ("dev", "final"):
                if phase in scores.phases:
                    ids = scores.phases[phase].ids
                    truths[phase] = _reference_solutions(
                        args.reference, task, scenario.name, phase, ids
                    )
        results[scenario.name] = compare_scenario(scores, truths, args.folds)
        log.info("%s: %d rows compared", scenario.name, len(results[scenario.name].rows))

    md = args.markdown
    print(
        f"\n{task.name}, train phase: each target is left out of its own shadows; rows marked "
        f"(CV) choose a variant by {args.folds}-fold cross-validation over train models"
    )
    print(format_frame(comparison_frame(phase_metrics(results, "train")), md))
    per_phase = {"train": phase_metrics(results, "train")}
    for phase in ("dev", "final"):
        metrics = phase_metrics(results, phase)
        if metrics:
            per_phase[phase] = metrics
            print(f"\n{task.name}, {phase} phase against the reference in {args.reference}")
            print(format_frame(comparison_frame(metrics), md))
    if len(per_phase) > 1:
        print(f"\n{task.name}: track averages, train-phase estimate beside dev/final")
        print(format_frame(summary_frame(per_phase), md))
    chosen = choices(results)
    if chosen:
        print(
            "\nChosen on all train models (what dev/final use); [n/k]: how many of the k CV "
            "folds chose the same"
        )
        frame = pd.DataFrame.from_dict(chosen, orient="index")
        frame.index.name = "row"
        print(format_frame(frame, md))
    if args.plot is not None:
        plot_roc_panels(roc_panels(results), args.plot, f"{task.name}: train phase")
        log.info("ROC figure written to %s", args.plot)
    return 0


def _describe(args: argparse.Namespace) -> str:
    if args.attack == "loss":
        return "loss threshold"
    if args.attack != "lira":
        return f"{args.attack} ({args.folds}-fold CV estimate of the variant chosen on train)"
    parts = ["online" if args.online_attack else "offline", transform_name(args)]
    if args.global_variance:
        parts.append("global variance")
    return f"LiRA ({', '.join(parts)})"


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
