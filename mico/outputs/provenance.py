"""What a ``scores.npz`` was computed from, and a check that the bundle is still that.

``save_preds.py`` records, per scenario, the bundle root, the track sizes, the model sources, the
digest of the parsed base dataset the outputs were computed on, and, per model, a digest of the
files that decide what it trained on (seeds, ``members.npy``; a train model's ``solution.csv``) and
the content digest of its weight files (:mod:`mico.bundle.digests`).  An attack run on a bundle
whose seeds or models changed since (or on another bundle sharing ``--preds-dir``) would write
predictions for the wrong models without a word; :func:`check_against_bundle` refuses it in one
line instead.  Checking costs a directory listing, one small read per seed file and one ``stat``
per weight file (a file whose stamp changed is hashed again).  The base dataset is not re-read
here: ``save_preds.py`` recomputes any output whose data digest differs, and the record says which
data ``scores.npz`` holds.
"""

from __future__ import annotations

from pathlib import Path

from mico.bundle.digests import DigestStore, files_digest
from mico.errors import InputError
from mico.outputs.plan import (
    DEFAULT_SOURCES,
    ModelRef,
    find_models,
    identity_digest,
    read_identity,
)
from mico.outputs.store import ScenarioScores
from mico.tracks.registry import Task

#: Version of the record's layout; a record of another version never matches.
RECORD_FORMAT = 2

#: Differences named in the error before "and N more".
SHOWN = 3


def fingerprint(ref: ModelRef, digests: DigestStore | None = None) -> dict[str, str]:
    """``identity``: :func:`mico.outputs.plan.identity_digest` of the model's seed/membership
    files; ``weights``: :func:`mico.bundle.digests.files_digest` of its weight files."""
    weights = files_digest((ref.folder / name for name in ref.weights), digests)
    return {"identity": identity_digest(ref, read_identity(ref)), "weights": weights}


def _sizes(task: Task) -> list[int]:
    return [task.dataset_len, task.len_training, task.len_challenge]


def bundle_record(
    root: str | Path,
    task: Task,
    scenario: str,
    sources: tuple[str, ...] = DEFAULT_SOURCES,
    refs: list[ModelRef] | None = None,
    *,
    data: str | None = None,
    digests: DigestStore | None = None,
    fingerprints: dict[str, dict[str, str]] | None = None,
) -> dict:
    """The record stored in ``scores.npz``: the bundle's current state for ``scenario``.

    ``refs`` are the models to record (default: whatever ``sources`` list now); ``data`` the
    digest of the base dataset the outputs were computed on (``TensorPairDataset.digest``);
    ``digests`` remembers weight-file digests between runs; ``fingerprints``, the models'
    fingerprints where the caller has them (:meth:`mico.outputs.plan.ScenarioPlan.fingerprints`),
    replaces reading ``refs`` again.
    """
    task = task.at(scenario)
    if refs is None and fingerprints is None:
        refs = find_models(Path(root), task, scenario, sources)
    return {
        "format": RECORD_FORMAT,
        "root": str(Path(root).resolve()),
        "challenge": task.challenge,
        "scenario": scenario,
        "sizes": _sizes(task),
        "sources": list(sources),
        "data": data,
        "models": fingerprints
        if fingerprints is not None
        else {ref.label: fingerprint(ref, digests) for ref in refs or ()},
    }


def differences(recorded: dict, current: dict) -> list[str]:
    """What changed between two records, in words (empty when they match)."""
    if recorded.get("format") != RECORD_FORMAT:
        return ["the record is of another format"]
    found = []
    if recorded.get("challenge") != current["challenge"]:
        found.append(f"it is for {recorded.get('challenge')!r}")
    if recorded.get("sizes") != current["sizes"]:
        found.append(f"sizes changed from {recorded.get('sizes')} to {current['sizes']}")
    before = recorded.get("models")
    before = before if isinstance(before, dict) else {}
    now = current["models"]
    for label in sorted(set(before) - set(now)):
        found.append(f"{label} is gone")
    for label in sorted(set(now) - set(before)):
        found.append(f"{label} is new")
    for label in sorted(set(now) & set(before)):
        old = before[label] if isinstance(before[label], dict) else {}
        if old.get("identity") != now[label]["identity"]:
            found.append(f"{label} seeds or membership changed")
        elif old.get("weights") != now[label]["weights"]:
            found.append(f"{label} model file changed")
    return found


def check_against_bundle(
    scores: ScenarioScores,
    root: str | Path,
    task: Task,
    scenario: str | Path,
    digests: DigestStore | None = None,
) -> None:
    """Raise ``ValueError`` (one line, saying to rerun ``save_preds.py``) unless ``scores`` was
    computed from the bundle at ``root`` as it is now: same models, seeds and model files.

    ``scenario`` is the scenario's name or folder; ``digests`` remembers weight-file digests.
    """
    name = Path(scenario).name
    rerun = f"rerun save_preds.py --challenge {task.challenge} --root {root}"
    recorded = scores.provenance
    if not isinstance(recorded, dict):
        raise InputError(f"{name}: scores.npz does not record what it was computed from; {rerun}")
    sources = recorded.get("sources")
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise InputError(f"{name}: scores.npz has a damaged provenance record; {rerun}")
    current = bundle_record(root, task, name, tuple(sources), digests=digests)
    found = differences(recorded, current)
    if found:
        more = f" and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
        raise InputError(
            f"{name}: scores.npz was computed from {recorded.get('root')} as it was then, but "
            f"{', '.join(found[:SHOWN])}{more}; {rerun}"
        )


def load_checked(
    path: Path,
    root: str | Path,
    task: Task,
    scenario: str | Path,
    digests: DigestStore | None = None,
) -> ScenarioScores:
    """``ScenarioScores.load(path)``, then :func:`check_against_bundle`: what an attack calls."""
    scores = ScenarioScores.load(path)
    check_against_bundle(scores, root, task, scenario, digests)
    return scores
