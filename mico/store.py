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
=========================  =================  ===============================================

The margin ``z = logit_y - logsumexp_{j != y} logit_j`` determines every score the attacks use
(see :mod:`mico.inference`).  Each per-model file records the SHA-256 of the points it was
computed on and the size and mtime of its ``model.pt``; a mismatch means it is recomputed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mico.fileio import save_npz_atomic
from mico.tasks import PHASES

SCORES_FILE = "scores.npz"
FORMAT_VERSION = 1


def points_digest(points: np.ndarray) -> str:
    """SHA-256 of an index array, to tie a cached output to the exact points it covers."""
    return hashlib.sha256(np.ascontiguousarray(points, dtype=np.int64).tobytes()).hexdigest()


def model_stamp(model_file: Path) -> str:
    """Size and modification time of a ``model.pt``: replacing the file invalidates its cache."""
    stat = model_file.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def load_cached_margin(
    path: Path, digest: str, stamp: str, length: int, need_logits: bool = False
) -> np.ndarray | None:
    """A per-model cache file's margins if it matches points, model and length (and holds the
    logits, where ``need_logits``); else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            margin = data["margin"]
            has_logits = "logits" in data.files
    except (OSError, ValueError, KeyError):
        return None
    if meta.get("points") != digest or meta.get("model") != stamp or margin.shape != (length,):
        return None
    if need_logits and not has_logits:
        return None
    return margin


def save_cached_margin(
    path: Path, margin: np.ndarray, digest: str, stamp: str, logits: np.ndarray | None = None
) -> None:
    """Write one model's margins (and logits if given) with the metadata that validates them."""
    meta = json.dumps({"points": digest, "model": stamp, "version": FORMAT_VERSION})
    arrays = {"margin": np.asarray(margin, dtype=np.float64), "meta": np.array(meta)}
    if logits is not None:
        arrays["logits"] = np.asarray(logits, dtype=np.float32)
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

    @property
    def shadow_or_none(self) -> np.ndarray | None:
        """``shadow`` if any target is a shadow (train phase), else None."""
        return self.shadow if np.any(self.shadow >= 0) else None


@dataclass
class ScenarioScores:
    """The contents of one ``scores.npz`` (see the module docstring for shapes)."""

    points: np.ndarray
    labels: np.ndarray
    shadow_ids: np.ndarray
    shadow_margin: np.ndarray
    shadow_in: np.ndarray
    phases: dict[str, PhaseScores] = field(default_factory=dict)
    population: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    shadow_population: np.ndarray | None = None

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
        if self.shadow_population is not None:
            arrays["shadow_population"] = self.shadow_population
        for phase, data in self.phases.items():
            arrays[f"{phase}_ids"] = data.ids
            arrays[f"{phase}_points"] = data.points
            arrays[f"{phase}_margin"] = data.margin
            arrays[f"{phase}_shadow"] = data.shadow
            if data.solution is not None:
                arrays[f"{phase}_solution"] = data.solution
            if data.population is not None:
                arrays[f"{phase}_population"] = data.population
        save_npz_atomic(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> ScenarioScores:
        """Read a ``scores.npz``, checking version and shapes."""
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run save_preds.py first")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable ({exc}); rerun save_preds.py") from None
        if int(arrays.get("version", -1)) != FORMAT_VERSION:
            raise ValueError(f"{path}: written by another version; rerun save_preds.py")
        phases = {}
        for phase in PHASES:
            if f"{phase}_ids" in arrays:
                phases[phase] = PhaseScores(
                    ids=arrays[f"{phase}_ids"],
                    points=arrays[f"{phase}_points"],
                    margin=arrays[f"{phase}_margin"],
                    shadow=arrays[f"{phase}_shadow"],
                    solution=arrays.get(f"{phase}_solution"),
                    population=arrays.get(f"{phase}_population"),
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
        )
        scores.check(path)
        return scores

    def check(self, path: Path) -> None:
        """Raise ``ValueError`` naming ``path`` if the arrays do not fit together."""
        s, p = self.shadow_margin.shape
        ok = self.shadow_in.shape == (s, p) and self.points.shape == (p,)
        ok = ok and self.shadow_ids.shape == (s,)
        for data in self.phases.values():
            t = len(data.ids)
            ok = ok and data.points.shape == data.margin.shape and data.points.shape[0] == t
            ok = ok and data.shadow.shape == (t,)
            ok = ok and bool(np.all((data.points >= 0) & (data.points < p)))
        if not ok:
            raise ValueError(f"{path}: arrays have inconsistent shapes; rerun save_preds.py")
