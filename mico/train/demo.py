"""Offline demo: a small MICO-format challenge from synthetic data, built with no network.

``python download_files.py --challenge purchase100 --demo`` synthesises a base dataset in the
real file format, then trains target models with MICO's recipes (:mod:`mico.train.engine`, scaled
down in data and epochs) into a bundle that ``save_preds.py``, ``run_lira_mia.py`` and
``save_zip.py`` read unchanged.  ``--demo tiny`` is a preset small enough for tests.

On-disk contract (the first two paths are exactly where the real data would be)::

    <data-dir>/purchase100/dataset_purchase      label 1..100 then 600 0/1 ints, one row a line
    <data-dir>/cifar10/cifar-10-batches-py/      data_batch_1..5 + test_batch (5/6 : 1/6 split),
                                                 pickled {b"data": uint8 [n, 3072] CHW,
                                                 b"labels", b"batch_label", b"filenames"}
    <data-dir>/<challenge>/demo.json             what synthesised the data (seed, size, version)
    <root>/<challenge>/bundle.json               dataset_len, len_training, len_challenge,
                                                 models_per_phase and the "demo" settings
    <root>/<challenge>/<challenge>_{inf,hi,lo}/{train,dev,final}/model_N/
        seed_challenge                           every model
        seed_training, seed_membership,          train models only, as in MICO
        solution.csv
        model.pt                                 state_dict; DP models keep Opacus' "_module."
        epsilon                                  achieved epsilon at delta 1e-5 ("inf": no DP)
        accuracy                                 accuracy on (part of) the model's evaluation split
    <root>/ddp/{cifar10_ddp,purchase100_ddp}/... --challenge ddp: one scenario per dataset, each
                                                 from its track's preset; dev/final models also
                                                 hold seed_training; bundle.json has the sizes
                                                 and settings per scenario (--scenarios: some)
    <reference-dir>/<challenge>/demo.json        the same "demo" settings as bundle.json
    <reference-dir>/<challenge>/<challenge>_{inf,hi,lo}/{dev,final}/model_N/
        seed_challenge, seed_training,           the organisers' ground truth that a real bundle
        seed_membership, solution.csv            hides: score dev/final predictions locally

Model ids follow MICO: train ``0..T-1``, dev from ``T``, final after dev.  Every seed derives from
``--seed``, the scenario and the model's id (:mod:`mico.train.demo_plan`), so a run is reproducible
and resumable: models are built by the model farm (:mod:`mico.train.farm`), which writes each
folder atomically and skips finished ones.  A demo never writes over data or bundles it did not
make, nor mixes two demo configurations in one folder.  What differs per track (presets,
synthesiser, file format) comes from the track's registry entry.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mico.bundle.check import require_layout
from mico.bundle.config import read_bundle_config
from mico.bundle.fileio import check_output_folder, write_text_atomic
from mico.bundle.layout import (
    ACCURACY_FILE,
    BUNDLE_CONFIG,
    EPSILON_FILE,
    challenge_dir,
    data_root,
    model_dirs,
    truth_root,
)
from mico.errors import InputError
from mico.tracks.devices import resolve_device
from mico.tracks.recipes import Recipe
from mico.tracks.registry import PHASES, Task, get_task, load_task
from mico.train.demo_plan import plan_models
from mico.train.farm import build_models

log = logging.getLogger(__name__)

#: Bump when a synthesiser changes its output, so old demo data is not silently reused.
SYNTHESIS_VERSION = 1

#: Name of the marker that records which demo configuration made a folder.
DEMO_MARKER = "demo.json"


@dataclass(frozen=True)
class DemoConfig:
    """Everything that determines a demo bundle's contents."""

    challenge: str
    preset: str
    seed: int
    dataset_len: int
    len_training: int
    len_challenge: int
    train_models: int
    eval_models: int
    epochs: int
    recipe_changes: tuple[tuple[str, float], ...] = ()
    #: The challenge this track is a scenario of (``ddp``), or empty: the track's own bundle.
    group: str = ""

    @property
    def folder(self) -> str:
        """The bundle's folder under the root (``purchase100``, or ``ddp``)."""
        return self.group or self.challenge

    @property
    def task(self) -> Task:
        """The track with this bundle's sizes (what ``load_task`` reads back), and the preset's
        architecture where it has one; for a ``group`` demo, the group's scenario of it."""
        track = get_task(self.challenge)
        if self.group:
            track = next(p for p in get_task(self.group).parts if p.name == self.challenge)
        architecture = track.demo.presets[self.preset].architecture or track.architecture
        return track.replace(
            dataset_len=self.dataset_len,
            len_training=self.len_training,
            len_challenge=self.len_challenge,
            models_per_phase=tuple(self.models_per_phase.items()),
            architecture=architecture,
        )

    @property
    def models_per_phase(self) -> dict[str, int]:
        return {"train": self.train_models, "dev": self.eval_models, "final": self.eval_models}

    @property
    def recipe(self) -> Recipe:
        """MICO's recipe for the track with this demo's epochs (and the preset's changes)."""
        recipe = get_task(self.challenge).recipe
        return recipe.replace(epochs=self.epochs, **dict(self.recipe_changes))

    def settings(self) -> dict[str, object]:
        """The ``"demo"`` entry of ``bundle.json``: a rerun resumes only if it is identical.

        ``delta`` and ``max_grad_norm`` are one number when the DP scenarios share it (every
        MICO track), else a map from suffixes, which :mod:`mico.train.shadows` reads too."""
        dp = {suffix: p for suffix, p in self.task.privacy if p is not None}
        delta = _one({suffix: p.delta for suffix, p in dp.items()})
        clip = _one({suffix: p.max_grad_norm for suffix, p in dp.items()})
        return {
            "preset": self.preset,
            "seed": self.seed,
            "synthesis_version": SYNTHESIS_VERSION,
            "recipe": self.recipe.to_json(None if isinstance(clip, dict) else clip),
            "dp_epsilon": {suffix: p.epsilon for suffix, p in dp.items()},
            "delta": delta,
            "max_grad_norm": clip,
        }

    def sizes(self) -> dict[str, object]:
        """The sizes ``bundle.json`` records (per scenario in a ``group`` bundle)."""
        return {
            "dataset_len": self.dataset_len,
            "len_training": self.len_training,
            "len_challenge": self.len_challenge,
            "models_per_phase": self.models_per_phase,
        }

    def data_marker(self) -> dict[str, object]:
        """What the synthetic base dataset depends on."""
        return {
            "challenge": self.challenge,
            "seed": self.seed,
            "dataset_len": self.dataset_len,
            "synthesis_version": SYNTHESIS_VERSION,
        }


def _one(values: dict[str, float]) -> float | dict[str, float] | None:
    """The value every scenario shares, else the map itself (None: no DP scenario)."""
    distinct = set(values.values())
    return distinct.pop() if len(distinct) == 1 else (values or None)


def make_config(
    challenge: str,
    preset: str = "default",
    *,
    seed: int = 0,
    train_models: int | None = None,
    eval_models: int | None = None,
    dataset_len: int | None = None,
    epochs: int | None = None,
    group: str = "",
) -> DemoConfig:
    """A preset with the given knobs overridden (``group``: see :class:`DemoConfig`).

    A new ``dataset_len`` keeps the preset's ratio ``len_training / dataset_len``.
    """
    presets = get_task(challenge).demo.presets
    if preset not in presets:
        raise InputError(f"unknown demo preset {preset!r}: use {' or '.join(presets)}")
    base = presets[preset]
    if seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {seed}")
    len_training = base.len_training
    if dataset_len is not None:
        len_training = round(dataset_len * base.len_training / base.dataset_len)
    config = DemoConfig(
        challenge=challenge,
        preset=preset,
        seed=seed,
        dataset_len=dataset_len if dataset_len is not None else base.dataset_len,
        len_training=len_training,
        len_challenge=base.len_challenge,
        train_models=train_models if train_models is not None else base.train_models,
        eval_models=eval_models if eval_models is not None else base.eval_models,
        epochs=epochs if epochs is not None else base.epochs,
        recipe_changes=base.recipe_changes,
        group=group,
    )
    for name in ("train_models", "eval_models", "epochs"):
        if getattr(config, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    try:
        config.task  # noqa: B018 (validates the sizes)
    except ValueError:
        minimum = math.ceil((base.len_challenge * 3) * base.dataset_len / base.len_training)
        raise InputError(
            f"--dataset-len {config.dataset_len} is too small for {challenge}: each model needs "
            f"{2 * base.len_challenge} challenge points and a training set; use at least {minimum}"
        ) from None
    return config


def ensure_dataset(config: DemoConfig, root: Path) -> bool:
    """Synthesise the base dataset under ``root`` (the data dir) unless this config already did.

    Returns ``True`` if files were written.  Refuses to touch a folder that holds data this demo
    configuration did not make (the real dataset, or a demo with another seed or size).
    """
    folder = root / config.challenge
    marker = folder / DEMO_MARKER
    demo = get_task(config.challenge).demo
    files = demo.files(root)
    wanted = config.data_marker()
    if marker.is_file():
        found = _read_json(marker)
        if found != wanted:
            raise FileExistsError(
                f"{folder} holds demo data made with {_describe(found, wanted)}; delete {folder} "
                f"(and the bundle made from it) or choose another --root/--data-dir"
            )
        if all(path.is_file() for path in files):
            return False
    elif any(path.exists() for path in files):
        raise FileExistsError(
            f"{folder} holds a {config.challenge} dataset that --demo did not make (the real "
            f"one?); refusing to overwrite it: use another --root or --data-dir for the demo"
        )
    # Claim the folder first, so an interrupted synthesis is recognised and redone by a rerun.
    _write_json(marker, wanted)
    values, labels = demo.synthesize(config.dataset_len, config.seed)
    demo.write(root, values, labels)
    return True


#: What a demo's ``bundle.json`` says about itself.
COMMENT = (
    "offline demo bundle made by `download_files.py --demo` from synthetic data; not MICO's data"
)


def bundle_json(configs: Sequence[DemoConfig]) -> dict[str, object]:
    """``bundle.json`` of a demo: one track's sizes and settings, or per scenario for a
    challenge made of several tracks (:func:`mico.tracks.registry.load_task` reads both)."""
    if not configs[0].group:
        (config,) = configs
        return {"comment": COMMENT, **config.sizes(), "demo": config.settings()}
    scenarios = [(scenario, c) for c in configs for scenario in c.task.scenarios]
    return {
        "comment": COMMENT,
        "scenarios": {scenario: c.sizes() for scenario, c in scenarios},
        "demo": {scenario: c.settings() for scenario, c in scenarios},
    }


def check_bundle(configs: Sequence[DemoConfig], root: Path, truth: Path) -> list[tuple[Path, dict]]:
    """Check that the bundle and reference folders are free or hold this very demo.

    Returns the marker files still to write (``bundle.json``, the reference's ``demo.json``);
    raises ``FileExistsError`` for a folder that holds anything else.
    """
    to_write = []
    bundle = bundle_json(configs)
    folder_name = configs[0].folder
    for folder, name, content in (
        (challenge_dir(root, folder_name), BUNDLE_CONFIG, bundle),
        (truth / folder_name, DEMO_MARKER, {"demo": bundle["demo"]}),
    ):
        path = folder / name
        if path.is_file():
            found = _read_marker(path, name)
            if found.get("demo") is None:
                raise FileExistsError(
                    f"{folder} holds a bundle that --demo did not make; refusing to write a demo "
                    f"into it: use another --root"
                )
            if found != content:
                raise FileExistsError(
                    f"{folder} holds a demo built with other settings "
                    f"({_describe(found, content)}); delete {folder} or choose another --root"
                )
        elif folder.is_dir() and any(folder.iterdir()):
            raise FileExistsError(
                f"{folder} is not empty and has no {name}: it is not a demo folder; refusing to "
                f"write into it: use another --root (or --reference-dir)"
            )
        else:
            to_write.append((path, content))
    return to_write


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not readable JSON ({exc}); delete it and rerun") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a JSON object; delete it and rerun")
    return value


def _read_marker(path: Path, name: str) -> dict:
    """A demo's ``bundle.json`` (through its one parser, :mod:`mico.bundle.config`) or the
    reference folder's ``demo.json``, as the object it holds."""
    if name != BUNDLE_CONFIG:
        return _read_json(path)
    config = read_bundle_config(path.parent.parent, path.parent.name)
    return {} if config is None else dict(config.data)


def _write_json(path: Path, value: dict) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def _describe(found: dict, wanted: dict, prefix: str = "") -> str:
    """The first differences between two settings dicts, for error messages."""
    diffs = []
    for key in sorted(set(found) | set(wanted)):
        a, b = found.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            if a != b:
                diffs.append(_describe(a, b, f"{prefix}{key}."))
        elif a != b:
            diffs.append(f"{prefix}{key}={a!r}, this run {b!r}")
    return "; ".join(diffs[:3])


@dataclass(frozen=True)
class DemoOptions:
    """What ``download_files.py --demo`` asks for; ``None`` sizes take the preset's."""

    challenge: str
    root: Path
    preset: str = "default"
    data_dir: Path | None = None
    reference_dir: Path | None = None
    seed: int = 0
    train_models: int | None = None
    eval_models: int | None = None
    dataset_len: int | None = None
    epochs: int | None = None
    device: str = "auto"
    workers: int = 0
    #: Scenarios of a challenge made of several tracks to build (empty: its ``demo_parts``).
    scenarios: tuple[str, ...] = ()


def run(options: DemoOptions) -> int:
    """Build (or finish) the demo dataset, bundle and reference answers; returns 0.

    A challenge made of several tracks (DDP) gets one scenario per track of its
    ``demo_parts``, each from its own track's preset and synthetic data.
    """
    start = time.perf_counter()
    challenge = get_task(options.challenge)
    configs = [
        make_config(
            track,
            options.preset,
            seed=options.seed,
            train_models=options.train_models,
            eval_models=options.eval_models,
            dataset_len=options.dataset_len,
            epochs=options.epochs,
            group=challenge.name if challenge.parts else "",
        )
        for track in challenge.demo_tracks(options.scenarios)
    ]
    device = resolve_device(options.device)
    root = Path(options.root)
    data = data_root(root, options.data_dir)
    reference = truth_root(root, options.reference_dir)
    if options.workers < 0:
        raise InputError(f"--workers must be 0 (automatic) or positive, got {options.workers}")

    for folder in (challenge_dir(root, configs[0].folder), data, reference):
        check_output_folder(folder)
    markers = check_bundle(configs, root, reference)  # refuse before writing anything
    for config in configs:
        if ensure_dataset(config, data):
            log.info(
                "synthesised %d %s records under %s", config.dataset_len, config.challenge, data
            )
    for path, content in markers:
        _write_json(path, content)
    built = 0
    for config in configs:
        built += build_models(
            plan_models(config, root, reference),
            config.task,
            config.recipe,
            data,
            device=device,
            workers=options.workers,
            desc=f"{config.task.scenarios[0] if config.group else config.challenge} demo models",
        )
    folder = configs[0].folder
    if built == 0:
        log.info("all models of %s are already built", challenge_dir(root, folder))
    task = load_task(root, folder)
    require_layout(root, task)  # every model is complete: only what a user added can differ
    log.info(
        "demo %s ready in %.1f s (%d models trained): bundle %s, ground truth %s\n%s",
        folder,
        time.perf_counter() - start,
        built,
        challenge_dir(root, folder),
        challenge_dir(reference, folder),
        summary_table(task, root),
    )
    return 0


def summary_table(task: Task, root: Path) -> str:
    """Per scenario: models, mean accuracy and epsilon, read back from the model folders."""
    lines = [f"{'scenario':<18} {'models':>6} {'accuracy':>9} {'epsilon':>8}"]
    for scenario in task.scenarios:
        base = challenge_dir(root, task.challenge) / scenario
        folders = [f for phase in PHASES for f in model_dirs(base, phase)]
        acc = np.mean([float((f / ACCURACY_FILE).read_text()) for f in folders])
        eps = np.mean([float((f / EPSILON_FILE).read_text()) for f in folders])
        lines.append(f"{scenario:<18} {len(folders):>6} {acc:>9.3f} {eps:>8.2f}")
    return "\n".join(lines)
