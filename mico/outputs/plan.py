"""save_preds' plan: which models of a scenario run over which points, before any model runs.

A scenario's models come from *model sources*, each a cheap listing (:class:`ModelRef`: folder,
the files that say what the model trained on, its weight files) and a reader that turns a listing
into a :class:`PlannedModel` (challenge points, solution, training members).  Two sources exist:

* ``bundle``: MICO's ``train``/``dev``/``final`` models, membership known for ``train`` only;
* ``extra``: extra shadow models (``<root>/shadows/<challenge>/<scenario>/model_N/``, issue #12)
  whose ``members.npy`` lists the sorted dataset indices each trained on, and whose
  ``recipe.json`` records the bundle and base data it was made for (:func:`made_for`): a
  shadow trained for another bundle or on other data is refused before any model runs.

A *shadow* is any model whose membership is known, whichever source it came from; a *target*
is any model with challenge points (it gets predictions).  A ``train`` model is both.  Shadows
run over the pooled challenge points of every target, targets that are not shadows over their
own points only.  :data:`DEFAULT_SOURCES` names the sources a run uses: both, so
``save_preds.py`` picks up extra shadows without any other change.

Planning reads every seed first, so a missing or malformed seed file is reported, naming the
model, before the first model of any scenario runs.  Each of a model's identity files is read
once: the reader parses the bytes, and :attr:`PlannedModel.identity` digests the same bytes for
the provenance record; its weight files' digest is computed once a run
(:meth:`ScenarioPlan.weights_of`), for the output caches' keys and provenance alike.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mico.bundle.digests import DigestStore, files_digest
from mico.bundle.layout import (
    MEMBERS_FILE,
    RECIPE_FILE,
    SEED_FILES,
    SOLUTION_FILE,
    challenge_dir,
    model_dirs,
    model_id,
    model_name,
    shadows_dir,
)
from mico.bundle.records import read_solution
from mico.bundle.splits import challenge_indices, read_seed, split_indices
from mico.errors import InputError
from mico.outputs.store import points_digest
from mico.tracks.registry import PHASES, Task

#: The kind of an extra shadow model (bundle models have their phase as kind).
EXTRA = "extra"


@dataclass(frozen=True)
class ModelRef:
    """A model as listed on disk: enough to fingerprint it without reconstructing its splits.

    ``identity`` are the files whose contents decide which records the model saw (seeds, or
    ``members.npy``; a train model's ``solution.csv``, which must agree with its seeds);
    ``weights`` its weight files.  ``kind`` is the phase of a bundle model or
    ``extra``.
    """

    kind: str
    id: int
    folder: Path
    identity: tuple[str, ...]
    weights: tuple[str, ...]

    @property
    def label(self) -> str:
        """``train/model_3``: how messages and provenance records name the model."""
        return f"{self.kind}/{model_name(self.id)}"


@dataclass(frozen=True, eq=False)
class PlannedModel:
    """A model with what the plan needs: its challenge points (a target) and members (a shadow).

    ``challenge`` [2m] dataset indices in challenge order, or None for a model that gets no
    predictions; ``solution`` [2m] int8 where known; ``members`` sorted dataset indices it
    trained on, or None when unknown (dev/final targets); ``made_for`` what an extra shadow
    records about the bundle and data it was trained for (:func:`made_for`); ``identity`` the
    digest of its identity files as read for this plan (:func:`identity_digest`).
    """

    ref: ModelRef
    challenge: np.ndarray | None
    solution: np.ndarray | None = None
    members: np.ndarray | None = field(default=None, repr=False)
    made_for: dict | None = field(default=None, repr=False)
    identity: str = field(default="", repr=False)

    @property
    def is_shadow(self) -> bool:
        """Membership known: the model can serve as a shadow model."""
        return self.members is not None

    @property
    def is_target(self) -> bool:
        """Challenge points known: the model gets a prediction per point."""
        return self.challenge is not None


@dataclass(frozen=True)
class ModelSource:
    """Where models come from: ``find(root, task, scenario)`` lists, ``read(ref, task)`` plans."""

    name: str
    find: Callable[[Path, Task, str], list[ModelRef]]
    read: Callable[[ModelRef, Task], PlannedModel]


def _find_bundle(root: Path, task: Task, scenario: str) -> list[ModelRef]:
    folder = challenge_dir(root, task.challenge) / scenario
    refs = []
    for phase in PHASES:
        # A train model's solution.csv is part of its identity: it must agree with its seeds.
        known = (*SEED_FILES, SOLUTION_FILE) if phase == "train" else task.eval_seeds
        for model in model_dirs(folder, phase):
            refs.append(ModelRef(phase, model_id(model), model, known, task.model_files))
    return refs


def read_identity(ref: ModelRef) -> dict[str, bytes | None]:
    """The bytes of each of the model's identity files (None: missing), each read once."""
    contents: dict[str, bytes | None] = {}
    for name in ref.identity:
        try:
            contents[name] = (ref.folder / name).read_bytes()
        except OSError:  # the readers read it again to say what is wrong
            contents[name] = None
    return contents


def identity_digest(ref: ModelRef, contents: Mapping[str, bytes | None]) -> str:
    """SHA-256 over the model's identity files, named, in order (a missing one counts as
    content): what provenance records to tell that a model still trains on the same records."""
    digest = hashlib.sha256()
    for name in ref.identity:
        content = contents[name]
        digest.update(name.encode() + b"\0")
        digest.update(b"\0missing\0" if content is None else content)
        digest.update(b"\0")
    return digest.hexdigest()


def _read_bundle(ref: ModelRef, task: Task) -> PlannedModel:
    """Challenge points from ``seed_challenge``; train models also their members and solution.

    Every seed a train model needs is read here, so a missing one is named before any model
    runs (MICO publishes all three for train models), and its ``solution.csv`` is checked
    against the membership its seeds give (:func:`check_solution`).
    """
    raw = read_identity(ref)
    identity = identity_digest(ref, raw)
    seeds = [read_seed(ref.folder / name, raw[name]) for name in ref.identity if name in SEED_FILES]
    if ref.kind != "train":
        challenge = challenge_indices(task.dataset_len, task.len_challenge, seeds[0])
        return PlannedModel(ref, challenge, identity=identity)
    splits = split_indices(task.dataset_len, task.len_training, task.len_challenge, *seeds)
    assert splits.solution is not None  # all three seeds were read
    check_solution(ref.folder, splits.solution, raw[SOLUTION_FILE])
    members = np.flatnonzero(splits.training_mask())
    return PlannedModel(ref, splits.challenge, splits.solution, members, identity=identity)


def check_solution(folder: Path, derived: np.ndarray, raw: bytes | None = None) -> None:
    """Refuse a train model whose ``solution.csv`` is not the membership its seeds give.

    MICO derives both from the same seeds, so they always agree in a bundle as published; a
    difference means a seed file or the solution was edited, swapped with another model's or
    damaged, and either the shadows' IN/OUT masks (from the seeds) or the scoring (from the
    file) would be wrong without a word.  The split is already computed: the check is free.
    """
    path = folder / SOLUTION_FILE
    solution = read_solution(path, len(derived), raw)
    agree = int((solution == derived).sum())
    if agree != len(derived):
        raise InputError(
            f"{folder}: solution.csv disagrees with the membership its seed files give on "
            f"{len(derived) - agree} of {len(derived)} points (a seed or solution.csv was "
            "edited, swapped or damaged): re-download this model's seed_* files and solution.csv"
        )


def _find_extra(root: Path, task: Task, scenario: str) -> list[ModelRef]:
    folder = shadows_dir(root, task.challenge, scenario)
    return [
        ModelRef(EXTRA, model_id(model), model, (MEMBERS_FILE, RECIPE_FILE), task.model_files)
        for model in model_dirs(folder.parent, folder.name)
    ]


#: The fields of a :func:`made_for` record, and how a difference in each is named.
_MADE_FOR = {
    "challenge": "another challenge",
    "scenario": "another scenario",
    "pool": "another bundle (other challenge points)",
    "data": "other base data",
}


def made_for(challenge: str, scenario: str, pool: np.ndarray, data: str) -> dict[str, str]:
    """What extra shadows (each ``recipe.json``, and ``design.npz``) record about the bundle
    and data they were trained for: the scenario, the digest of its pool (the challenge points
    of every model, which the seeds decide) and of the parsed base dataset."""
    return {"challenge": challenge, "scenario": scenario, "pool": points_digest(pool), "data": data}


def read_made_for(path: Path, raw: bytes | None = None) -> dict:
    """The ``made_for`` record of an extra shadow's ``recipe.json`` (``raw``: its bytes)."""
    retrain = f"delete {path.parent.parent} and rerun train_shadows.py"
    try:
        text = path.read_bytes() if raw is None else raw
        record = json.loads(text.decode("utf-8")).get("made_for")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing, so this shadow is unusable; {retrain}") from None
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"{path}: not a readable recipe record ({exc}); {retrain}") from None
    if not isinstance(record, dict) or set(record) != set(_MADE_FOR):
        raise InputError(
            f"{path}: records no bundle and data this shadow was made for (an older "
            f"train_shadows.py made it), so it cannot be checked; {retrain}"
        )
    return record


def read_members(path: Path, dataset_len: int, raw: bytes | None = None) -> np.ndarray:
    """A ``members.npy``: strictly increasing int dataset indices in ``[0, dataset_len)``
    (``raw``: its bytes, where already read)."""
    try:
        members = np.load(path if raw is None else io.BytesIO(raw), allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: membership file missing; retrain this shadow") from None
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy file ({exc})") from None
    ok = members.ndim == 1 and np.issubdtype(members.dtype, np.integer)
    ok = ok and (len(members) == 0 or (members[0] >= 0 and members[-1] < dataset_len))
    if not ok or np.any(np.diff(members) <= 0):
        raise InputError(
            f"{path}: expected sorted unique dataset indices in [0, {dataset_len}); retrain "
            "this shadow"
        )
    return members.astype(np.int64)


def _read_extra(ref: ModelRef, task: Task) -> PlannedModel:
    raw = read_identity(ref)
    members = read_members(ref.folder / MEMBERS_FILE, task.dataset_len, raw[MEMBERS_FILE])
    record = read_made_for(ref.folder / RECIPE_FILE, raw[RECIPE_FILE])
    return PlannedModel(ref, None, None, members, record, identity_digest(ref, raw))


BUNDLE_SOURCE = ModelSource("bundle", _find_bundle, _read_bundle)
EXTRA_SOURCE = ModelSource(EXTRA, _find_extra, _read_extra)

#: Every model source by name (provenance records the names a ``scores.npz`` was made with).
SOURCES: dict[str, ModelSource] = {s.name: s for s in (BUNDLE_SOURCE, EXTRA_SOURCE)}

#: The sources a run uses: the bundle's models, and ``train_shadows.py``'s extra shadows where
#: there are any (none: the same ``scores.npz`` as the bundle alone).
DEFAULT_SOURCES: tuple[str, ...] = ("bundle", "extra")


def get_sources(names: Sequence[str]) -> list[ModelSource]:
    """The sources named, with an error listing the known ones."""
    unknown = [name for name in names if name not in SOURCES]
    if unknown:
        raise InputError(f"unknown model source {unknown[0]!r}: choose from {sorted(SOURCES)}")
    return [SOURCES[name] for name in names]


def find_models(root: Path, task: Task, scenario: str, sources: Sequence[str]) -> list[ModelRef]:
    """Every model of the scenario, as listed by ``sources``, in plan order."""
    task = task.at(scenario)
    return [ref for source in get_sources(sources) for ref in source.find(root, task, scenario)]


class PopulationTooLarge(InputError):
    """``--population`` asks for more records than a scenario has outside its challenge points;
    ``available`` is how many it has (scenarios differ, and a run reports the fewest)."""

    def __init__(self, count: int, available: int) -> None:
        super().__init__(
            f"--population {count} exceeds the {available} non-challenge records of this "
            f"bundle: pass --population {available} or fewer"
        )
        self.available = available


def choose_population(dataset_len: int, exclude: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` sorted dataset indices outside ``exclude`` (the challenge points), seeded."""
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    candidates = np.setdiff1d(np.arange(dataset_len, dtype=np.int64), exclude)
    if count > len(candidates):
        raise PopulationTooLarge(count, len(candidates))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=count, replace=False))


@dataclass
class ScenarioPlan:
    """One scenario's models and point sets.

    ``models`` is the run order: a model's position ``k`` in it decides its shard (``k % N``);
    for a MICO bundle ``k`` is the model id, and extra shadows follow the bundle's models.
    ``points`` [P] are the sorted unique challenge points of every target, ``population`` [Q]
    the non-challenge records (possibly none).
    """

    root: Path
    scenario: str
    sources: tuple[str, ...]
    models: list[PlannedModel]
    points: np.ndarray
    population: np.ndarray
    shadows: list[PlannedModel] = field(init=False)
    shadow_row: dict[str, int] = field(init=False)
    #: Weight-file digests by model label, each computed once a run (:meth:`weights_of`).
    weights: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.shadows = [m for m in self.models if m.is_shadow]
        self.shadow_row = {m.ref.label: row for row, m in enumerate(self.shadows)}
        self.weights = {}

    def weights_of(self, model: PlannedModel, digests: DigestStore | None = None) -> str:
        """:func:`mico.bundle.digests.files_digest` of ``model``'s weight files, computed on
        first use (one ``stat`` a file, a hash where its stamp is new) and then shared by its
        output caches' keys and the provenance record."""
        label = model.ref.label
        if label not in self.weights:
            files = (model.ref.folder / name for name in model.ref.weights)
            self.weights[label] = files_digest(files, digests)
        return self.weights[label]

    def fingerprints(self, digests: DigestStore | None = None) -> dict[str, dict[str, str]]:
        """Every model's provenance fingerprint (see :mod:`mico.outputs.provenance`), from
        what planning read and the weights' digests: no file is read again."""
        return {
            m.ref.label: {"identity": m.identity, "weights": self.weights_of(m, digests)}
            for m in self.models
        }

    def points_of(self, model: PlannedModel) -> np.ndarray:
        """What ``model`` runs over: every challenge point for a shadow, else its own."""
        if model.is_shadow or model.challenge is None:
            return self.points
        return model.challenge

    def shadow_in(self) -> np.ndarray:
        """bool [S, P]: shadow ``s`` trained on point ``p`` (by dataset index)."""
        rows = [np.isin(self.points, m.members, assume_unique=True) for m in self.shadows]
        return np.stack(rows) if rows else np.zeros((0, len(self.points)), dtype=bool)

    def check_made_for(self, challenge: str, data: str) -> None:
        """Refuse extra shadows made for another bundle (another pool of challenge points) or
        other base data (``data``: the digest of the dataset loaded now), naming the first."""
        expected = made_for(challenge, self.scenario, self.points, data)
        for model in self.models:
            if model.made_for is None or model.made_for == expected:
                continue
            what = [_MADE_FOR[k] for k in _MADE_FOR if model.made_for[k] != expected[k]]
            raise InputError(
                f"{model.ref.folder}: this extra shadow was made for {' and '.join(what)}, not "
                f"for the bundle {self.root / challenge / self.scenario} and the data at hand; "
                f"delete {model.ref.folder.parent} and rerun train_shadows.py (or point --root "
                "and --data-dir at the bundle and data it was made for)"
            )

    def in_shard(self, shard: tuple[int, int] | None) -> list[PlannedModel]:
        """The models of shard ``(K, N)`` (1-based ``K``): position ``k`` with ``k % N == K - 1``;
        every model when ``shard`` is None."""
        if shard is None:
            return list(self.models)
        index, count = shard
        return [m for k, m in enumerate(self.models) if k % count == index - 1]


def plan_scenario(
    root: Path,
    task: Task,
    scenario: str,
    sources: Sequence[str] = DEFAULT_SOURCES,
    population: int = 0,
    population_seed: int = 0,
) -> ScenarioPlan:
    """Read every model's seeds or membership and pool the challenge points (no model runs)."""
    task = task.at(scenario)
    listed = [(src, ref) for src in get_sources(sources) for ref in src.find(root, task, scenario)]
    models = [
        source.read(ref, task)
        for source, ref in tqdm(listed, desc=f"{scenario} splits", leave=False, disable=None)
    ]
    if not any(m.is_shadow for m in models):
        raise InputError(
            f"{challenge_dir(root, task.challenge) / scenario}/train: no train models, so no "
            "shadow models for the attack"
        )
    challenges = [m.challenge for m in models if m.challenge is not None]
    if not challenges:
        raise InputError(f"{scenario}: no model has challenge points, nothing to predict")
    points = np.unique(np.concatenate(challenges))
    chosen = choose_population(task.dataset_len, points, population, population_seed)
    return ScenarioPlan(Path(root), scenario, tuple(sources), models, points, chosen)


def plan_scenarios(
    root: Path,
    task: Task,
    scenarios: Sequence[str],
    sources: Sequence[str] = DEFAULT_SOURCES,
    population: int = 0,
    population_seed: int = 0,
) -> list[ScenarioPlan]:
    """:func:`plan_scenario` for each of ``scenarios``.

    A ``population`` too large is reported once for every scenario it exceeds, with the
    fewest records any of them has: the number suggested then works for the whole bundle.
    """
    plans, short = [], {}
    for scenario in scenarios:
        try:
            plans.append(plan_scenario(root, task, scenario, sources, population, population_seed))
        except PopulationTooLarge as error:
            short[scenario] = error.available
    if short:
        listed = ", ".join(f"{count} in {name}" for name, count in short.items())
        raise InputError(
            f"--population {population} exceeds the non-challenge records of this bundle "
            f"({listed}): pass --population {min(short.values())} or fewer"
        )
    return plans
