"""``save_preds.py``'s on-disk contract: model outputs per scenario, resumable per model.

::

    <preds>/<challenge>/<scenario>/
      scores.npz                     everything the attacks read (below), written last
      models/<phase>/model_N.npz     one model's margins: a cache, so a rerun resumes
      models/<phase>/model_N.population.npz   the same on the population points (RMIA)

``scores.npz`` arrays (``S`` shadow = ``train`` models, ``P`` unique challenge points of every
model of every phase, ``T`` models of a phase, ``K = 2m`` challenge points per model, ``Q``
population points, possibly 0):

=========================  =================  ===============================================
``points``                 int64 [P]          dataset indices, sorted
``labels``                 int64 [P]          their labels
``shadow_ids``             int64 [S]          ``N`` of each train ``model_N``
``shadow_margin``          float64 [S, P]     true-label logit margin of each shadow
``shadow_in``              bool [S, P]        shadow trained on the point (by dataset index)
``<phase>_ids``            int64 [T]          model numbers of the phase
``<phase>_points``         int64 [T, K]       column in ``points`` of each challenge point
``<phase>_margin``         float64 [T, K]     the target's own margin on it
``<phase>_shadow``         int64 [T]          row of the target among the shadows, or -1
``train_solution``         int8 [T, K]        1 = member (train phase only)
``population``             int64 [Q]          dataset indices of non-challenge records
``shadow_population``      float64 [S, Q]     shadows' margins on them
``<phase>_population``     float64 [T, Q]     targets' margins on them
``shadow_kind``            str [S]            where each shadow came from: ``train``, ``extra``
``shadow_logits``          float32 [S, P, C]  shadows' logits (``--save-logits`` only)
``<phase>_logits``         float32 [T, K, C]  targets' logits on their points (same)
``provenance``             str (JSON)         what it was computed from (provenance.py)
=========================  =================  ===============================================

The margin ``z = logit_y - logsumexp_{j != y} logit_j`` determines every score the attacks use (see
:mod:`mico.outputs.inference`).  Each per-model file records a :class:`CacheKey`: the SHA-256 of
the points it was computed on, of its weight files' contents and of the parsed base dataset
(:mod:`mico.bundle.digests`); any mismatch means it is recomputed.  The caches are written without
fsync, so every read validates them: a zero-byte, truncated, key-less, mis-shaped or non-finite
cache is a miss (with a warning), never a traceback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import zipfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mico.bundle.fileio import save_npz_atomic
from mico.bundle.layout import PHASES
from mico.errors import InputError

log = logging.getLogger(__name__)

SCORES_FILE = "scores.npz"
FORMAT_VERSION = 1
#: Version of a per-model cache's metadata; a cache of another version is recomputed.
CACHE_VERSION = 2

#: Every way reading an ``.npz`` written by someone else (or cut short) can fail.
READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def points_digest(points: np.ndarray) -> str:
    """SHA-256 of an index array, to tie a cached output to the exact points it covers."""
    return hashlib.sha256(np.ascontiguousarray(points, dtype=np.int64).tobytes()).hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """What a per-model cache was computed from: ``points`` (:func:`points_digest`), ``model``
    (the content digest of the weight files, :func:`mico.bundle.digests.files_digest`, plus anything
    else that changes the outputs, such as autocast) and ``data`` (the parsed base dataset,
    :func:`mico.bundle.digests.dataset_digest`)."""

    points: str
    model: str
    data: str

    def meta(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "version": CACHE_VERSION}


@dataclass
class ModelOutputs:
    """One model's outputs on one point set: margins float64 [N], logits float32 [N, C]."""

    margin: np.ndarray
    logits: np.ndarray | None = None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:120]}" if text else type(exc).__name__


def load_cached(
    path: Path, key: CacheKey, length: int, *, logits: bool = False
) -> ModelOutputs | None:
    """A per-model cache's outputs if it matches ``key`` (points, model, data) and length;
    else None.

    A cache that cannot be read (zero bytes, cut short, keys missing, NaN) is reported as a
    warning and treated as missing: the model runs again and the file is replaced.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            margin = data["margin"]
            raw = data["logits"] if logits and "logits" in data.files else None
        if not isinstance(meta, dict):
            raise InputError("metadata is not an object")
    except READ_ERRORS as exc:
        log.warning("%s: unreadable cache (%s); the model runs again", path, _reason(exc))
        return None
    if any(meta.get(name) != value for name, value in key.meta().items()):
        return None  # made for other points, model contents or data: simply stale
    if margin.shape != (length,) or not np.all(np.isfinite(margin)):
        log.warning("%s: cache holds wrong-shaped or NaN margins; the model runs again", path)
        return None
    if logits and (raw is None or raw.ndim != 2 or len(raw) != length):
        return None  # logits asked for but not kept by the run that wrote it
    return ModelOutputs(margin, raw)


def save_cached(path: Path, outputs: ModelOutputs, key: CacheKey) -> None:
    """Write one model's outputs with the metadata that validates them."""
    meta = json.dumps(key.meta())
    arrays = {"margin": np.asarray(outputs.margin, dtype=np.float64), "meta": np.array(meta)}
    if outputs.logits is not None:
        arrays["logits"] = np.asarray(outputs.logits, dtype=np.float32)
    save_npz_atomic(path, durable=False, **arrays)  # validated on every read


@dataclass
class PhaseScores:
    """One phase's targets: ids [T], points [T, K] (columns), margin [T, K], shadow row [T]."""

    ids: np.ndarray
    points: np.ndarray
    margin: np.ndarray
    shadow: np.ndarray
    solution: np.ndarray | None = None
    population: np.ndarray | None = None
    logits: np.ndarray | None = None
    #: Per-target reference models' margins on the target's points, float64 [T, R, K], and
    #: whether each trained on the point, bool [T, R, K]: not in ``scores.npz``, attached by
    #: :func:`mico.train.per_target.attach_per_target_models`.
    reference_margin: np.ndarray | None = None
    reference_in: np.ndarray | None = None

    @property
    def shadow_or_none(self) -> np.ndarray | None:
        """``shadow`` if any target is a shadow (train phase), else None."""
        return self.shadow if np.any(self.shadow >= 0) else None


#: Arrays every ``scores.npz`` holds; a file without one of them is unreadable.
REQUIRED = ("version", "points", "labels", "shadow_ids", "shadow_margin", "shadow_in", "population")


@dataclass
class ScenarioScores:
    """The contents of one ``scores.npz`` (see the module docstring for shapes).

    ``shadow_kind`` says where each shadow row came from (None in files from before extra
    shadows: all ``train``); ``provenance`` is the record :mod:`mico.outputs.provenance` checks.
    """

    points: np.ndarray
    labels: np.ndarray
    shadow_ids: np.ndarray
    shadow_margin: np.ndarray
    shadow_in: np.ndarray
    phases: dict[str, PhaseScores] = field(default_factory=dict)
    population: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    shadow_population: np.ndarray | None = None
    shadow_kind: np.ndarray | None = None
    shadow_logits: np.ndarray | None = None
    provenance: dict | None = None

    def save(self, path: Path) -> None:
        """Write atomically as ``scores.npz``."""
        arrays: dict[str, np.ndarray] = {
            "version": np.array(FORMAT_VERSION),
            "points": self.points,
            "labels": self.labels,
            "shadow_ids": self.shadow_ids,
            "shadow_margin": self.shadow_margin,
            "shadow_in": self.shadow_in,
            "population": self.population,
        }
        optional = {
            "shadow_population": self.shadow_population,
            "shadow_kind": self.shadow_kind,
            "shadow_logits": self.shadow_logits,
        }
        if self.provenance is not None:
            optional["provenance"] = np.array(json.dumps(self.provenance, sort_keys=True))
        for phase, data in self.phases.items():
            arrays[f"{phase}_ids"] = data.ids
            arrays[f"{phase}_points"] = data.points
            arrays[f"{phase}_margin"] = data.margin
            arrays[f"{phase}_shadow"] = data.shadow
            optional[f"{phase}_solution"] = data.solution
            optional[f"{phase}_population"] = data.population
            optional[f"{phase}_logits"] = data.logits
        arrays.update({key: value for key, value in optional.items() if value is not None})
        save_npz_atomic(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> ScenarioScores:
        """Read a ``scores.npz``, checking version and shapes; any damage is one ``ValueError``."""
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run save_preds.py first")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
            missing = [key for key in REQUIRED if key not in arrays]
            if missing:
                raise KeyError(f"no {missing[0]!r} array")
            provenance = arrays.get("provenance")
            record = None if provenance is None else json.loads(str(provenance))
        except READ_ERRORS as exc:
            raise InputError(f"{path}: unreadable ({_reason(exc)}); rerun save_preds.py") from None
        if int(arrays["version"]) != FORMAT_VERSION:
            raise InputError(f"{path}: written by another version; rerun save_preds.py")
        phases = {}
        for phase in PHASES:
            if f"{phase}_ids" in arrays:
                keys = [f"{phase}_{name}" for name in ("points", "margin", "shadow")]
                if any(key not in arrays for key in keys):
                    raise InputError(f"{path}: {phase} arrays incomplete; rerun save_preds.py")
                phases[phase] = PhaseScores(
                    ids=arrays[f"{phase}_ids"],
                    points=arrays[f"{phase}_points"],
                    margin=arrays[f"{phase}_margin"],
                    shadow=arrays[f"{phase}_shadow"],
                    solution=arrays.get(f"{phase}_solution"),
                    population=arrays.get(f"{phase}_population"),
                    logits=arrays.get(f"{phase}_logits"),
                )
        scores = cls(
            points=arrays["points"],
            labels=arrays["labels"],
            shadow_ids=arrays["shadow_ids"],
            shadow_margin=arrays["shadow_margin"],
            shadow_in=arrays["shadow_in"],
            phases=phases,
            population=arrays["population"],
            shadow_population=arrays.get("shadow_population"),
            shadow_kind=arrays.get("shadow_kind"),
            shadow_logits=arrays.get("shadow_logits"),
            provenance=record if isinstance(record, dict) else None,
        )
        scores.check(path)
        return scores

    def kinds(self) -> np.ndarray:
        """str [S]: each shadow row's kind (files from before extra shadows: all ``train``)."""
        if self.shadow_kind is not None:
            return self.shadow_kind
        return np.full(len(self.shadow_ids), "train")

    def select_shadows(self, kinds: Collection[str]) -> ScenarioScores:
        """A copy keeping only the shadow rows of ``kinds`` (``train``, ``extra``), for choosing
        which shadows an attack uses.  A target whose own row is dropped gets row -1: it is no
        longer among the shadows, so there is nothing to leave out of its statistics."""
        have = self.kinds()
        keep = np.isin(have, list(kinds))
        if not keep.any():
            raise InputError(
                f"no shadow models of kind {', '.join(sorted(kinds))}; this scores.npz has "
                f"{', '.join(sorted(set(have.tolist())))}"
            )
        return self.shadow_rows(np.flatnonzero(keep))

    def shadow_rows(self, rows: np.ndarray) -> ScenarioScores:
        """A copy whose shadows are ``rows`` (distinct row indices, in that order), every
        shadow array cut alike.  A target whose own row is not kept gets row -1: it is no
        longer among the shadows, so there is nothing to leave out of its statistics."""
        new_row = np.full(len(self.shadow_ids), -1, dtype=np.int64)
        new_row[rows] = np.arange(len(rows))
        phases = {
            name: dataclasses.replace(
                data, shadow=np.where(data.shadow >= 0, new_row[np.maximum(data.shadow, 0)], -1)
            )
            for name, data in self.phases.items()
        }

        def cut(array: np.ndarray | None) -> np.ndarray | None:
            return None if array is None else array[rows]

        return dataclasses.replace(
            self,
            shadow_ids=self.shadow_ids[rows],
            shadow_margin=self.shadow_margin[rows],
            shadow_in=self.shadow_in[rows],
            phases=phases,
            shadow_population=cut(self.shadow_population),
            shadow_kind=self.kinds()[rows],
            shadow_logits=cut(self.shadow_logits),
        )

    def check(self, path: Path) -> None:
        """Raise ``ValueError`` naming ``path`` if the arrays do not fit together."""
        ok = self.shadow_margin.ndim == 2
        s, p = self.shadow_margin.shape if ok else (0, 0)
        ok = ok and self.shadow_in.shape == (s, p) and self.points.shape == (p,)
        ok = ok and self.shadow_ids.shape == (s,)
        ok = ok and (self.shadow_kind is None or self.shadow_kind.shape == (s,))
        logits = self.shadow_logits
        ok = ok and (logits is None or (logits.ndim == 3 and logits.shape[:2] == (s, p)))
        for data in self.phases.values():
            t = len(data.ids)
            ok = ok and data.points.shape == data.margin.shape and data.points.shape[0] == t
            ok = ok and data.shadow.shape == (t,)
            ok = ok and bool(np.all((data.points >= 0) & (data.points < p)))
            ok = ok and (data.logits is None or data.logits.shape[:2] == data.points.shape)
        if not ok:
            raise InputError(f"{path}: arrays have inconsistent shapes; rerun save_preds.py")
