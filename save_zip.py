"""Step 4: the submission zip, after checking every prediction it must hold.

    python save_zip.py --challenge purchase100

Writes ``predictions_<challenge>.zip`` with the CodaLab layout
``<challenge>/<scenario>/<phase>/model_N/prediction.csv`` for every dev and final model of the
three scenarios, or refuses and lists every problem.
"""

from __future__ import annotations

import argparse
import logging
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

try:  # Ctrl-C while numpy & co. load: one line, no traceback (nothing started yet)
    from mico.bundle.check import check_layout
    from mico.bundle.fileio import atomic_write, check_output_file
    from mico.bundle.layout import (
        PREDICTION_FILE,
        SELECTION_FILE,
        challenge_dir,
        model_dir,
        model_ids,
    )
    from mico.bundle.manifest import check_predictions
    from mico.bundle.records import read_prediction
    from mico.cli import add_common_args, run_cli, setup_logging
    from mico.errors import ProblemsError, plural
    from mico.tracks.registry import Task, load_task
except KeyboardInterrupt:
    print("interrupted while starting; nothing was written", file=sys.stderr)
    sys.exit(130)

log = logging.getLogger("save_zip")

#: The phases a submission covers; train predictions are for local scoring only.
SUBMITTED_PHASES = ("dev", "final")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Check every dev/final prediction.csv and zip them for submission."
    )
    add_common_args(parser)
    parser.add_argument(
        "--force",
        action="store_true",
        help="zip the predictions even without <root>/<challenge>/predictions.json, the record "
        "of which configuration wrote them (their values are still checked)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="zip file to write (default: predictions_<challenge>.zip in the current folder)",
    )
    return parser


def collect_predictions(
    root: Path, task: Task, *, force: bool = False
) -> tuple[dict[Path, bytes], list[str]]:
    """Every prediction file a submission needs with its content, and every problem that
    blocks it.  Each file is read once: its bytes are checked, digested against the manifest
    and zipped.

    The bundle must be exactly its layout (:func:`mico.bundle.check.check_layout`, every phase: the
    same check as the other scripts, less the weight files, which a submission does not need), so a
    renamed or extra model folder is reported instead of zipped; the files must all come from the
    configuration that ``run_lira_mia.py`` last recorded (:mod:`mico.bundle.manifest`), so a run
    stopped half-way is not zipped as a mixture; without that record they are refused unless
    ``force``.
    """
    layout = check_layout(root, task, need_models=False, whole=True)
    problems = [str(problem) for problem in layout]
    part = challenge_dir(root, task.challenge) / SELECTION_FILE
    if layout and part.is_file():
        problems.insert(
            0,
            f"{part}: the bundle was downloaded in part, and a submission needs all of it: "
            "rerun download_files.py without --scenarios/--phases/--models",
        )
    files: dict[Path, bytes] = {}
    for scenario in task.scenarios:
        part = task.at(scenario)
        for phase in SUBMITTED_PHASES:
            for model in model_ids(part.models_per_phase, phase):
                path = model_dir(root, task.challenge, scenario, phase, model) / PREDICTION_FILE
                if not path.parent.is_dir():
                    continue  # listed by check_layout
                try:
                    content = path.read_bytes()
                except FileNotFoundError:
                    problems.append(f"{path}: prediction missing")
                    continue
                try:
                    read_prediction(path, part.num_challenges, content)
                except ValueError as exc:
                    problems.append(str(exc))
                    continue
                files[path] = content
    if not problems and (mixture := check_predictions(root, task.challenge, files, force=force)):
        problems.append(mixture)
    return files, problems


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    task = load_task(args.root, args.challenge)
    output = args.output or Path(f"predictions_{task.challenge}.zip")
    check_output_file(output)  # before the checks below, which can take a while
    files, problems = collect_predictions(args.root, task, force=args.force)
    if problems:
        raise ProblemsError(
            f"not writing a submission: {plural(len(problems), 'problem')} listed above (fix "
            "the bundle where it differs from its layout; (re)run run_lira_mia.py where "
            "predictions are missing, bad or unrecorded)",
            problems,
        )
    with (
        atomic_write(output, "wb") as handle,
        zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        for path, content in files.items():
            # The entry archive.write would make (name, time stamp, mode) from one stat.
            info = zipfile.ZipInfo.from_file(path, path.relative_to(args.root).as_posix())
            archive.writestr(info, content, compress_type=zipfile.ZIP_DEFLATED)
    log.info("wrote %s: %d prediction files", output, len(files))
    print(output)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
