"""Purchase-100: MICO's tabular track (600 binary features, 100 classes, an MLP).

The registry entry :data:`TASK` and what only this track needs: the demo's synthetic purchase
histories and their writer in ``dataset_purchase``'s text format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mico.bundle.fileio import atomic_write
from mico.tracks.base import SYNTH_CHUNK, Demo, Lazy, Preset, Task, mico_privacy, synth_stream
from mico.tracks.recipes import Recipe
from mico.tracks.sources import BaseDataset, Source

#: The comma-separated table (label 1..100, then the binary features) and its feature count.
PURCHASE100_FILE = "dataset_purchase"
PURCHASE100_FEATURES = 600

#: Purchase-like record model: mean density, products each profile favours, their mean boost,
#: and the log-normal spread of product popularity.
_PURCHASE_SHAPE = (0.09, 50, 5.0, 0.5)


def synthesize_purchase100(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Purchase-100-like records: ``features`` uint8 [n, 600] (0/1), ``labels`` int64 [n] 0..99.

    The real dataset holds shoppers' purchase histories over 600 products (1 = bought),
    clustered into 100 classes with k-means.  We mimic that story: product popularity is
    log-normal, each of 100 shopper profiles favours 50 random products (5x on average), each
    shopper's basket size varies (log-normal activity), and the label is the nearest centroid
    of the sampled baskets (one k-means assignment step), a deterministic but non-trivial
    function of the features with unequal class sizes.  About 9% of the entries are 1 (53
    products a row): that density is our assumption, as the real file cannot be inspected
    offline.  What matters for the demo is that the MLP fits its training set and generalises
    only partly (about 87% test accuracy without DP in the default preset, 30% and 15% with
    epsilon 10 and 4), which gives the membership signal MICO's Purchase-100 models have.
    """
    classes, dim = 100, PURCHASE100_FEATURES
    density, favoured, boost, spread = _PURCHASE_SHAPE
    rng = synth_stream(seed, 100, 0)
    profiles = np.tile(rng.lognormal(0.0, spread, dim), (classes, 1))
    for profile in profiles:
        chosen = rng.choice(dim, favoured, replace=False)
        profile[chosen] *= boost * rng.uniform(0.5, 1.5, favoured)
    profiles *= density / profiles.mean(axis=1, keepdims=True)
    features = np.empty((n, dim), dtype=np.uint8)
    groups = np.empty(n, dtype=np.int64)
    for part, start in enumerate(range(0, n, SYNTH_CHUNK), start=1):
        rng = synth_stream(seed, 100, part)
        rows = min(SYNTH_CHUNK, n - start)
        group = rng.integers(0, classes, rows)
        activity = rng.lognormal(-0.125, 0.5, (rows, 1))  # mean 1
        chance = np.minimum(profiles[group] * activity, 0.95)
        features[start : start + rows] = rng.random((rows, dim)) < chance
        groups[start : start + rows] = group
    return features, _nearest_centroid(features, groups, classes)


def _nearest_centroid(features: np.ndarray, groups: np.ndarray, classes: int) -> np.ndarray:
    """One k-means assignment step: the index of the nearest group mean (squared Euclidean)."""
    sums = np.zeros((classes, features.shape[1]), dtype=np.float64)
    for start in range(0, len(features), SYNTH_CHUNK):
        block = features[start : start + SYNTH_CHUNK].astype(np.float32)
        onehot = np.eye(classes, dtype=np.float32)[groups[start : start + SYNTH_CHUNK]]
        sums += onehot.T @ block
    counts = np.bincount(groups, minlength=classes)
    centroids = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, and |x|^2 is the same for every c.
    offset = (centroids**2).sum(axis=1)
    labels = np.empty(len(features), dtype=np.int64)
    for start in range(0, len(features), SYNTH_CHUNK):
        block = features[start : start + SYNTH_CHUNK].astype(np.float32)
        labels[start : start + SYNTH_CHUNK] = (offset - 2 * block @ centroids.T).argmin(axis=1)
    return labels


def write_purchase100(data_dir: Path, features: np.ndarray, labels: np.ndarray) -> None:
    """``dataset_purchase``: per row the label 1..100, then 600 0/1 values, comma-separated."""
    rows = np.empty((len(features), 2 * features.shape[1] + 1), dtype=np.uint8)
    rows[:, 0:-1:2] = ord(",")
    rows[:, 1:-1:2] = features + ord("0")
    rows[:, -1] = ord("\n")
    path = data_dir / "purchase100" / PURCHASE100_FILE
    with atomic_write(path, "wb") as handle:
        for label, row in zip(labels.tolist(), rows, strict=True):
            handle.write(b"%d" % (label + 1))
            handle.write(row.tobytes())


def dataset_files(data_dir: Path) -> list[Path]:
    """The file :func:`mico.tracks.data.load_purchase100` reads."""
    return [data_dir / "purchase100" / PURCHASE100_FILE]


#: Demo presets.  The default keeps the real ratio len_training / dataset_len
#: (150000 / 197324 = 0.76), so with 48 train models a challenge point has about 11 OUT models.
#: Training records a model of the tiny preset, and so its DP batch (one step an epoch).
_TINY_TRAINING = 900

PRESETS: dict[str, Preset] = {
    "default": Preset(
        dataset_len=8000, len_training=6080, train_models=48, eval_models=8, epochs=15
    ),
    # The suite's.  Its DP models draw every record at each step (one step an epoch, Poisson
    # rate 1): Opacus' PRV noise calibration takes ~0.3 s at rate 1 against 6-7 s at MICO's
    # 512 of 900 (rate 1/2) on a 2-core CPU, longer than training the whole tiny demo.
    "tiny": Preset(
        dataset_len=1200,
        len_training=_TINY_TRAINING,
        train_models=4,
        eval_models=1,
        epochs=3,
        recipe_changes=(("dp_batch_size", _TINY_TRAINING),),
    ),
}

TASK = Task(
    name="purchase100",
    dataset_len=197_324,
    len_training=150_000,
    len_challenge=100,
    num_classes=100,
    architecture=Lazy("mico.tracks.nets", "MLP"),
    loader=Lazy("mico.tracks.data", "load_purchase100"),
    recipe=Recipe("adam", lr=1e-3, batch_size=512, epochs=30, lr_step=5, lr_gamma=0.9),
    # MICO's DP-SGD (train_purchase100_*.sh): clipping at 2.6, Poisson sampling.
    privacy=mico_privacy(2.6),
    # Ghost clipping: per-sample gradient norms of nn.Linear without materialising them, about
    # 18x faster than hooks for the MLP on a 2-core CPU.
    grad_sample_mode="ghost",
    source=Source(
        repo_id="szanella/MICO-purchase100",
        archive_name="purchase100.zip",
        archive_md5="67eba1f88d112932fe722fef85fb95fd",
        base=BaseDataset(
            url="https://www.comp.nus.edu.sg/~reza/files/dataset_purchase.tgz",
            md5=None,  # none published; size is still checked against Content-Length
            folder="purchase100",
            entry=PURCHASE100_FILE,
            is_dir=False,
            required=(PURCHASE100_FILE,),
        ),
    ),
    demo=Demo(
        presets=PRESETS,
        synthesize=synthesize_purchase100,
        write=write_purchase100,
        files=dataset_files,
    ),
)
