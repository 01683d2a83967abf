"""``<root>/<challenge>/bundle.json``: a bundle's departures from MICO's sizes, parsed once.

MICO's bundles have none; the offline demo (and any smaller bundle) writes one::

    {"dataset_len": 8000, "len_training": 6080, "len_challenge": 100,
     "models_per_phase": {"train": 48, "dev": 8, "final": 8},
     "demo": {...how the demo trained its models...}, "comment": "..."}

A challenge made of several tracks (DDP) gives the sizes per scenario instead,
``"scenarios": {"cifar10_ddp": {sizes}, ...}``, and its ``"demo"`` per scenario too.

:func:`read_bundle_config` is the only reader of the file: every stage (the track registry's
sizes, the demo's resume check, extra shadows' recipe, ``--original``'s ``LEN_TRAINING``, the
downloader's refusal to mix a demo with the real bundle) asks the :class:`BundleConfig` it
returns.  Anything it does not know, a float, a string or a null where a count belongs is an
error naming the file, so that a typo never silently falls back to MICO's sizes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mico.bundle.layout import PHASES, bundle_config_path
from mico.errors import InputError

#: The sizes ``bundle.json`` may set, each a positive integer.
SIZE_KEYS: tuple[str, ...] = ("dataset_len", "len_training", "len_challenge")

#: Keys that describe the file and change nothing.
INFORMATIONAL: tuple[str, ...] = ("comment",)


@dataclass(frozen=True)
class Sizes:
    """The sizes one ``bundle.json`` object sets (None: MICO's value is kept)."""

    dataset_len: int | None = None
    len_training: int | None = None
    len_challenge: int | None = None
    #: ``((phase, count), ...)`` in bundle order.
    models_per_phase: tuple[tuple[str, int], ...] | None = None

    def changes(self) -> dict[str, object]:
        """The fields this object sets, as keyword arguments of ``Task.replace``."""
        names = (*SIZE_KEYS, "models_per_phase")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass(frozen=True)
class BundleConfig:
    """One ``bundle.json``, checked.

    ``sizes``: the top-level sizes; ``scenarios``: per-scenario sizes (challenges made of
    several tracks), None when the file has none; ``demo``: the offline demo's settings as
    written (per scenario where ``scenarios`` is given), None for any other bundle; ``data``:
    the whole object, for comparing with what a demo rerun would write.
    """

    path: Path
    sizes: Sizes
    scenarios: Mapping[str, Sizes] | None = None
    demo: object = None
    data: Mapping[str, object] = field(default_factory=dict, repr=False)

    @property
    def is_demo(self) -> bool:
        """Whether ``download_files.py --demo`` made this bundle."""
        return self.demo is not None

    def demo_settings(self, scenario: str | None = None) -> object:
        """The demo's settings (of ``scenario`` in a per-scenario bundle), or None; checked
        where they are used (:mod:`mico.train.shadows`), since a marker needs no settings."""
        if self.demo is None or self.scenarios is None:
            return self.demo
        settings = self.demo.get(scenario) if isinstance(self.demo, dict) and scenario else None
        if not isinstance(settings, dict):
            raise InputError(f"{self.path}: the demo settings of {scenario} are missing")
        return settings


def read_bundle_config(root: str | Path, challenge: str) -> BundleConfig | None:
    """The bundle's ``bundle.json`` parsed and checked, or None if it has none."""
    path = bundle_config_path(root, challenge)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not readable JSON ({exc}); fix or delete it") from None
    return parse_bundle_config(data, path)


def parse_bundle_config(data: object, path: Path) -> BundleConfig:
    """Check a ``bundle.json``'s decoded content (see the module docstring)."""
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    allowed = {*SIZE_KEYS, "models_per_phase", "scenarios", "demo", *INFORMATIONAL}
    unknown = set(data) - allowed
    if unknown:
        raise InputError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    scenarios = None
    if "scenarios" in data:
        per_scenario = data["scenarios"]
        if not isinstance(per_scenario, dict) or not per_scenario:
            raise InputError(f"{path}: scenarios must map scenario names to their sizes")
        scenarios = {
            name: _sizes(sizes, path, name, nested=True) for name, sizes in per_scenario.items()
        }
    return BundleConfig(path, _sizes(data, path), scenarios, data.get("demo"), data)


def _count(value: object) -> bool:
    """A JSON integer that is not a boolean (``True`` is an ``int`` in Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _sizes(config: object, path: Path, scenario: str = "", *, nested: bool = False) -> Sizes:
    """The sizes of one object (the file's top level, or a scenario's entry), checked."""
    where = f"{path}: {scenario + ': ' if scenario else ''}"
    if not isinstance(config, dict):
        raise InputError(f"{where}expected an object of sizes")
    if nested:
        allowed = [*SIZE_KEYS, "models_per_phase"]
        if extra := set(config) - set(allowed):
            raise InputError(f"{where}unknown keys {sorted(extra)}; allowed: {allowed}")
    values: dict[str, object] = {}
    for key in SIZE_KEYS:
        if key in config:
            value = config[key]
            if not _count(value) or value <= 0:
                raise InputError(f"{where}{key} must be a positive integer, got {value!r}")
            values[key] = value
    if "models_per_phase" in config:
        values["models_per_phase"] = _models_per_phase(config["models_per_phase"], path)
    return Sizes(**values)  # type: ignore[arg-type]


def _models_per_phase(counts: object, path: Path) -> tuple[tuple[str, int], ...]:
    """``models_per_phase`` of a ``bundle.json``, checked."""
    if not isinstance(counts, dict) or set(counts) != set(PHASES):
        raise InputError(
            f"{path}: models_per_phase must be an object mapping each of {', '.join(PHASES)} "
            f"to a count, got {counts!r}"
        )
    bad = {k: v for k, v in counts.items() if not _count(v) or v < 0}
    if bad:
        raise InputError(
            f"{path}: models_per_phase counts must be non-negative integers, got {bad}"
        )
    if counts["train"] < 1:
        raise InputError(f"{path}: models_per_phase needs at least one train model")
    return tuple((phase, counts[phase]) for phase in PHASES)
