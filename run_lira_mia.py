"""Step 3: a membership-inference attack; a ``prediction.csv`` for every model.

    python run_lira_mia.py --challenge purchase100 --global_variance      # 2nd-place LiRA, fixed
    python run_lira_mia.py --challenge purchase100 --global_variance --original  # as published
    python run_lira_mia.py --challenge purchase100 --attack hardness      # or rmia, loss
    python run_lira_mia.py --challenge purchase100 --compare [--truth DIR] [--plot FILE]
    python run_lira_mia.py --challenge purchase100 --compare --audit --report DIR   # auditor's view
    python run_lira_mia.py --challenge purchase100 --attack best       # what --compare would pick
    python run_lira_mia.py --challenge purchase100 --compare --budget 4 8 16 [--plot FILE]
    python run_lira_mia.py --challenge ddp --attack reference --references 4   # DDP only

Reads ``save_preds.py``'s ``scores.npz`` per scenario, writes
``<root>/<challenge>/<scenario>/<phase>/model_N/prediction.csv`` for train, dev and final models,
and prints the official metrics on the train phase (which has ground truth), each with a 95%
cluster-bootstrap interval over target models (:mod:`mico.attacks.audit`). Where an attack
chooses a variant or parameter, the choice is made on the train models and the train-phase
numbers are a k-fold cross-validation estimate (:mod:`mico.attacks.selection`). ``--compare`` writes
nothing: it scores every attack and LiRA flag combination (:mod:`mico.attacks.compare`), and
says which leads are real (paired intervals); ``--audit`` adds empirical epsilon lower bounds.
The work is done by :mod:`mico.attacks.run`; this script parses, calls it and prints.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

try:  # Ctrl-C while numpy & co. load: one line, no traceback (nothing started yet)
    from mico.attacks.audit import DEFAULT_BOOT, DEFAULT_DELTA, DEFAULT_LEVEL
    from mico.attacks.audit_report import argv_line, check_report_dir
    from mico.attacks.base import Attack, Params
    from mico.attacks.budget_curve import DEFAULT_REPEATS, budget_challenge
    from mico.attacks.compare import BEST_ATTACK, Uncertainty, roc_panels, side_by_side
    from mico.attacks.reference import DEFAULT_REFERENCES
    from mico.attacks.registry import ATTACKS, DEFAULT_ATTACK, VARIANTS, get_attack, with_variant
    from mico.attacks.run import (
        SHADOW_CHOICES,
        RunOptions,
        compare_shadow_choices,
        per_target_count,
        run_challenge,
    )
    from mico.attacks.selection import DEFAULT_FOLDS, Rule
    from mico.bundle.fileio import check_output_file
    from mico.cli import add_common_args, add_preds_dir_arg, run_cli, setup_logging
    from mico.errors import InputError
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
        choices=[*ATTACKS, BEST_ATTACK],
        default=None,
        help="; ".join(
            f"{name}{' (default)' if name == DEFAULT_ATTACK else ''}: {attack.summary}"
            for name, attack in ATTACKS.items()
        )
        + f"; {BEST_ATTACK}: every attack and configuration, the one --compare's 'best of all "
        "(CV)' row chooses by cross-validation on train",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="score every attack and LiRA flag combination on the train phase (and on "
        "--truth dev/final) in one table; writes no prediction files",
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
    parser.add_argument(
        "--budget",
        type=int,
        nargs="+",
        metavar="B",
        help="with --compare: the budget curve instead of the table; every (CV) row with the "
        "shadow set cut to B models (random, seeded, stratified draws; extra shadows count), "
        "for each B and for all shadows; with --plot, the curves",
    )
    parser.add_argument(
        "--budget-repeats",
        type=int,
        default=None,
        metavar="R",
        help=f"random shadow draws per --budget (default {DEFAULT_REPEATS})",
    )
    honest = parser.add_argument_group("uncertainty and auditing")
    honest.add_argument(
        "--no-intervals",
        action="store_true",
        help="print plain tables, without the 95%% cluster-bootstrap intervals",
    )
    honest.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_BOOT,
        metavar="B",
        help="bootstrap replicates (resampled target models) behind every interval and "
        f"every choice of a variant (default {DEFAULT_BOOT})",
    )
    honest.add_argument(
        "--bootstrap-seed",
        type=int,
        default=0,
        metavar="S",
        help="seed of the bootstrap draws (default 0): the same seed gives the same intervals",
    )
    honest.add_argument(
        "--audit",
        action="store_true",
        help="empirical epsilon lower bound per scenario (one-run audit of Steinke, Nasr and "
        "Jagielski, NeurIPS 2023) beside the claimed epsilon",
    )
    honest.add_argument(
        "--delta",
        type=float,
        default=None,
        help=f"delta of the audited (epsilon, delta) guarantee (default {DEFAULT_DELTA:g}, MICO's)",
    )
    honest.add_argument(
        "--audit-level",
        type=float,
        default=None,
        help=f"confidence of the epsilon lower bound (default {DEFAULT_LEVEL:g})",
    )
    honest.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="with --compare: write DIR/index.html (one self-contained page: ROC with "
        "bootstrap bands, tables with intervals, paired differences, epsilon bounds, the most "
        "exposed points, provenance) and DIR/report.json with every number",
    )
    add_attack_flags(parser)
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE",
        help="write a log-log ROC figure of the train phase (with --compare: one panel per "
        "scenario, one curve per attack)",
    )
    parser.add_argument(
        "--truth",
        "--reference",  # its name before issue 21, kept so that existing commands still run
        dest="truth",
        type=Path,
        metavar="DIR",
        help="ground truth for dev/final (<DIR>/<challenge>/<scenario>/<phase>/model_N/"
        "solution.csv, as the demo writes it under <root>/reference) to score those phases "
        "too; --reference is its former name",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="score only; leave prediction.csv files alone"
    )
    parser.add_argument(
        "--shadows",
        choices=tuple(SHADOW_CHOICES),
        nargs="+",
        default=None,
        help="which shadow models the attack uses: the bundle's train models, the extra "
        "shadows of train_shadows.py, or all (default: all where extra shadows exist); with "
        "--compare, several (e.g. --shadows train all) show each row once per choice",
    )
    builders = ", ".join(f"--attack {name}" for name, a in ATTACKS.items() if a.needs_references)
    refs = parser.add_argument_group(
        f"per-target reference models ({builders}, or --compare with --references; DDP)"
    )
    refs.add_argument(
        "--references",
        type=int,
        metavar="K",
        default=None,
        help=f"reference models a target, an even number (default {DEFAULT_REFERENCES} with "
        "--attack reference); trained once with the target's recipe under "
        "<root>/reference_models/ and reused by later runs",
    )
    refs.add_argument(
        "--device", default="auto", help="where references train and run: auto, cpu, cuda[:N]"
    )
    refs.add_argument(
        "--workers",
        type=int,
        default=0,
        help="CPU processes training references (default 0: automatic)",
    )
    refs.add_argument(
        "--ray",
        metavar="ADDRESS",
        default=None,
        help="train references as Ray tasks: local (a local instance), auto or a cluster address",
    )
    return parser


def attack_flags() -> tuple[str, ...]:
    """Every flag (``dest``) the registered attacks and variants declare
    (:attr:`mico.attacks.base.Attack.cli_params`), in registry order."""
    return tuple(dict.fromkeys(flag for a in _registered() for flag in a.cli_flags))


def _registered() -> list[Attack]:
    """The attacks, then their variants (:data:`mico.attacks.registry.VARIANTS`)."""
    return [*ATTACKS.values(), *VARIANTS.values()]


def add_attack_flags(parser: argparse.ArgumentParser) -> None:
    """The flags the attacks declare, one group per attack, each flag once (a flag two attacks
    read is added from the first declaration), mutually exclusive where declared so."""
    added: set[str] = set()
    for attack in _registered():
        params = [p for p in attack.cli_params if p.dest not in added]
        if not params:
            continue
        title = attack.cli_title or f"--attack {attack.name} options"
        group = parser.add_argument_group(title)
        exclusive: dict[str, argparse._MutuallyExclusiveGroup] = {}
        for param in params:
            target = group
            if param.exclusive:
                if param.exclusive not in exclusive:
                    exclusive[param.exclusive] = group.add_mutually_exclusive_group()
                target = exclusive[param.exclusive]
            target.add_argument(param.flag, **param.kwargs())  # type: ignore[arg-type]
            added.add(param.dest)


def attack_choice(args: argparse.Namespace) -> tuple[str, Params | None]:
    """The attack to run and its fixed parameters, from ``--attack`` and the flags set; flags
    that no chosen attack declares are refused, naming the attacks that read them."""
    if args.compare and args.attack is not None:
        raise InputError("--compare runs every attack: drop --attack")
    attack = args.attack or DEFAULT_ATTACK
    values = {flag: getattr(args, flag) for flag in attack_flags()}
    # set: a value given (0 included), or a store_true flag on
    flags = {
        flag: value for flag, value in values.items() if value is not None and value is not False
    }
    chosen = ATTACKS.get(attack)
    if chosen is not None and not args.compare:
        chosen = with_variant(chosen, flags)
    if args.compare or chosen is None or not set(flags) <= set(chosen.cli_flags):
        if flags:
            owners = dict.fromkeys(
                a.variant_of or a.name for a in _registered() if set(flags) <= set(a.cli_flags)
            )
            what = "--compare" if args.compare else f"--attack {attack}"
            spelled = {p.dest: p.flag for a in _registered() for p in a.cli_params}
            given = ", ".join(spelled[flag] for flag in flags)
            readers = " or ".join(f"--attack {name}" for name in owners) or "no single attack"
            raise InputError(f"{given} apply to {readers} only, not to {what}")
        return attack, None
    return chosen.from_cli(flags)


def options_from_args(args: argparse.Namespace) -> RunOptions:
    """Refuse flag combinations that would be silently ignored; the library's options."""
    attack, params = attack_choice(args)
    if args.markdown and not args.compare:
        raise InputError("--markdown formats the --compare tables: add --compare")
    if args.shadows and len(args.shadows) > 1 and not args.compare:
        raise InputError("several --shadows choices are for --compare; an attack uses one")
    needs_references = attack == BEST_ATTACK or get_attack(attack).needs_references
    if args.references is not None and not (args.compare or needs_references):
        raise InputError("--references builds models for --attack reference or --compare")
    fixed = None if attack == BEST_ATTACK else get_attack(attack).shadows
    if fixed is not None and args.shadows and set(args.shadows) != {fixed}:
        raise InputError(
            f"{get_attack(attack).spelled} always uses --shadows {fixed}: drop --shadows"
        )
    builds = args.references is not None or (
        attack != BEST_ATTACK and get_attack(attack).needs_references and not args.compare
    )
    defaults = build_parser()
    unused = [
        f"--{d}"
        for d in ("device", "workers", "ray")
        if getattr(args, d) != defaults.get_default(d)
    ]
    if unused and not builds:
        raise InputError(f"{', '.join(unused)} apply to reference models (--references): drop them")
    if (args.delta is not None or args.audit_level is not None) and not (
        args.audit or args.report is not None
    ):
        raise InputError("--delta and --audit-level set the epsilon audit: add --audit")
    if args.report is not None and not args.compare:
        raise InputError("--report writes the --compare audit report: add --compare")
    if (args.budget or args.budget_repeats is not None) and not args.compare:
        raise InputError(
            "--budget and --budget-repeats draw the --compare budget curve: add --compare"
        )
    if args.budget_repeats is not None and not args.budget:
        raise InputError("--budget-repeats sets the draws of --budget: add --budget B ...")
    if args.budget and (args.report is not None or args.audit or args.truth is not None):
        raise InputError(
            "the budget curve is a train-phase estimate; --report, --audit and --truth "
            "describe the full-budget comparison: drop --budget or them"
        )
    if args.budget and args.no_intervals:
        raise InputError("the budget curve always shows its intervals: drop --no-intervals")
    if args.budget and args.shadows and len(args.shadows) > 1:
        raise InputError("--budget draws from one shadow pool: give one --shadows choice")
    audited = args.audit or args.report is not None  # the report shows epsilon bounds
    uncertainty = Uncertainty(
        rule=Rule(n_boot=args.bootstrap, seed=args.bootstrap_seed),
        intervals=not args.no_intervals,
        audit_delta=(DEFAULT_DELTA if args.delta is None else args.delta) if audited else None,
        audit_level=DEFAULT_LEVEL if args.audit_level is None else args.audit_level,
    )
    return RunOptions(
        root=args.root,
        challenge=args.challenge,
        preds_dir=args.preds_dir,
        attack=attack,
        params=params,
        folds=args.folds,
        truth=args.truth,
        write=not args.no_write,
        shadows=args.shadows[0] if args.shadows else None,
        references=args.references,
        data_dir=args.data_dir,
        device=args.device,
        workers=args.workers,
        ray=args.ray,
        uncertainty=uncertainty,
    )


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    options = options_from_args(args)
    if per_target_count(options) is not None:  # torch loads only for a run that trains models
        from mico.train.per_target import run_stage

        options = replace(options, per_target_stage=run_stage)
    if args.plot is not None:  # checked before any prediction.csv is written
        check_output_file(args.plot)
    if args.report is not None:
        check_report_dir(args.report)
    if args.compare and args.budget:
        return _budget(args, options)
    if args.compare:
        return _compare(args, options, argv_line("run_lira_mia.py", argv))
    from mico.attacks.report import plot_roc, print_run  # pandas, for the tables

    run = run_challenge(options)
    print_run(run, options, args.markdown)
    if args.plot is not None:
        name = run.task.challenge
        plot_roc(run.curves, args.plot, f"{name}: {run.description}, train phase")
        log.info("ROC figure written to %s", args.plot)
    return 0


def _compare(args: argparse.Namespace, options: RunOptions, command: str) -> int:
    """``--compare``: every row of :func:`mico.attacks.compare.comparison_rows`, printed."""
    from mico.attacks.report import plot_roc_panels, print_comparison
    from mico.attacks.report_html import write_report

    picked = list(dict.fromkeys(args.shadows or [options.shadows]))
    task, by_choice = compare_shadow_choices(options, picked)  # each scores.npz read once
    if len(picked) == 1:
        results = by_choice[picked[0]]
    else:
        results = side_by_side({str(c): found for c, found in by_choice.items()})
    print_comparison(task, results, options, args.markdown)
    if args.plot is not None:
        plot_roc_panels(roc_panels(results), args.plot, f"{task.challenge}: train phase")
        log.info("ROC figure written to %s", args.plot)
    if args.report is not None:
        write_report(args.report, task, results, options, command)
        log.info("audit report written to %s", args.report / "index.html")
    return 0


def _budget(args: argparse.Namespace, options: RunOptions) -> int:
    """``--compare --budget``: the budget curve of every (CV) row, printed (and drawn)."""
    from mico.attacks.budget_report import plot_budget, print_budget  # pandas, for the table

    repeats = DEFAULT_REPEATS if args.budget_repeats is None else args.budget_repeats
    task, curves = budget_challenge(options, args.budget, repeats)
    print_budget(task, curves, options.uncertainty, args.markdown)
    if args.plot is not None:
        title = f"{task.challenge}: train phase, (CV) rows by shadow budget"
        plot_budget(curves, args.plot, title, options.uncertainty.rule.level)
        log.info("budget figure written to %s", args.plot)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
