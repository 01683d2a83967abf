"""CIFAR-10: MICO's image track (32x32 colour images, 10 classes, a 4-layer CNN).

The registry entry :data:`TASK` and what only this track needs: the demo's synthetic images and
their writer in the python CIFAR-10 release's pickled batches.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from mico.bundle.fileio import atomic_write
from mico.tracks.base import SYNTH_CHUNK, Demo, Lazy, Preset, Task, mico_privacy, synth_stream
from mico.tracks.recipes import Recipe
from mico.tracks.sources import BaseDataset, Source

#: The python release's folder and pickled batches, in MICO's index order (train, then test).
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")

#: CIFAR-like image model: gratings per class, the largest share of a second class blended in,
#: and the amplitudes of smooth clutter and pixel noise (tuned so that the CNN overfits).
_CIFAR_COMPONENTS, _CIFAR_BLEND, _CIFAR_CLUTTER, _CIFAR_NOISE = 3, 0.5, 1.2, 0.25


def synthesize_cifar10(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10-like images: ``images`` uint8 [n, 3072] (3x32x32, CHW), ``labels`` int64 [n].

    Each class is a colour scheme plus three oriented colour gratings; an image is its class
    pattern, randomly shifted and blended with another class (up to 50%), over smooth random
    clutter and pixel noise, with random contrast.  Generalising is hard (ambiguous blends,
    strong clutter) while memorising a training image's clutter is easy: the CNN overfits,
    which gives the membership signal.
    """
    classes, components = 10, _CIFAR_COMPONENTS
    rng = synth_stream(seed, 10, 0)
    signs = rng.choice([-1, 1], (classes, components, 2))
    freqs = rng.uniform(1.0, 4.0, (classes, components, 2)) * signs
    colours = rng.standard_normal((classes, components, 3))
    base = rng.uniform(-0.5, 0.5, (classes, 3))
    grid = np.stack(np.mgrid[0:32, 0:32][::-1]) / 32.0  # [2 (x, y), 32, 32]

    def pattern(c: np.ndarray, shift: np.ndarray, phase: np.ndarray) -> np.ndarray:
        """[rows, 3, 32, 32] class patterns for classes ``c`` [rows]."""
        out = np.repeat(base[c][:, :, None, None], 32, axis=2).repeat(32, axis=3)
        for k in range(components):
            f = freqs[c, k]  # [rows, 2]
            position = grid[None] + shift[:, :, None, None]  # [rows, 2, 32, 32]
            angle = (
                2 * np.pi * (f[:, :, None, None] * position).sum(axis=1) + phase[:, k, None, None]
            )
            out += 0.5 * np.sin(angle)[:, None] * colours[c, k][:, :, None, None]
        return out

    pixels = np.empty((n, 3072), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    for part, start in enumerate(range(0, n, SYNTH_CHUNK), start=1):
        rng = synth_stream(seed, 10, part)
        rows = min(SYNTH_CHUNK, n - start)
        label = rng.integers(0, classes, rows)
        other = (label + rng.integers(1, classes, rows)) % classes
        blend = rng.uniform(0.0, _CIFAR_BLEND, rows)[:, None, None, None]
        shift = rng.uniform(0.0, 1.0, (rows, 2))
        phase = rng.uniform(0.0, 0.6 * np.pi, (rows, components))
        images = (1 - blend) * pattern(label, shift, phase) + blend * pattern(other, shift, phase)
        images += _CIFAR_CLUTTER * _smooth_noise(rng, rows)
        images += _CIFAR_NOISE * rng.standard_normal(images.shape)
        images *= rng.uniform(0.6, 1.2, (rows, 1, 1, 1))
        block = np.clip(np.rint(128 + 50 * images), 0, 255).astype(np.uint8)
        pixels[start : start + rows] = block.reshape(rows, 3072)
        labels[start : start + rows] = label
    return pixels, labels


def _smooth_noise(rng: np.random.Generator, n: int, coarse: int = 4) -> np.ndarray:
    """[n, 3, 32, 32] standard-normal values on a coarse grid, bilinearly upsampled."""
    grid = rng.standard_normal((n, 3, coarse, coarse))
    pos = np.linspace(0, coarse - 1, 32)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, coarse - 1)
    w = pos - lo
    grid = grid[:, :, lo, :] * (1 - w)[:, None] + grid[:, :, hi, :] * w[:, None]
    return grid[..., lo] * (1 - w) + grid[..., hi] * w


def write_cifar10(data_dir: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """The five training batches and the test batch of the python CIFAR-10 release.

    The real split is 50000 : 10000; the last sixth of the images goes to ``test_batch`` and
    the rest to ``data_batch_1..5`` in order, so dataset index ``i`` is the ``i``-th image.
    """
    folder = data_dir / "cifar10" / CIFAR10_FOLDER
    n_train = len(images) - len(images) // 6
    parts = [*np.array_split(np.arange(n_train), 5), np.arange(n_train, len(images))]
    for number, (name, rows) in enumerate(zip(CIFAR10_BATCHES, parts, strict=True), start=1):
        batch_label = f"training batch {number} of 5" if number <= 5 else "testing batch 1 of 1"
        batch = {
            b"batch_label": batch_label.encode(),
            b"labels": labels[rows].tolist(),
            b"data": np.ascontiguousarray(images[rows]),
            b"filenames": [f"demo_{i:06d}.png".encode() for i in rows.tolist()],
        }
        with atomic_write(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)


def dataset_files(data_dir: Path) -> list[Path]:
    """The batches :func:`mico.tracks.data.load_cifar10` reads."""
    return [data_dir / "cifar10" / CIFAR10_FOLDER / name for name in CIFAR10_BATCHES]


#: Demo presets.  The CNN costs about 3 ms per image and pass on a 2-core CPU (DP-SGD about
#: twice that), so the default trains 16 train models on a quarter of a 1000-image dataset
#: (MICO: 5/6), which leaves about 12 OUT models per point, for 8 epochs.  MICO's SGD rate 0.005
#: assumes ~78000 steps; these models take ~64, so the default raises it to 0.02 (at 0.005 the
#: CNN barely moves from its initialisation and there is little to attack).  DP models keep 0.5.
PRESETS: dict[str, Preset] = {
    "default": Preset(
        dataset_len=1000,
        len_training=250,
        train_models=16,
        eval_models=2,
        epochs=8,
        recipe_changes=(("lr", 0.02),),
    ),
    # The suite's: 25 members among 50 challenge points a model (MICO: 100 of 200), so each
    # model trains on 50 images, and the demo with its save_preds.py outputs takes about 20 s
    # on one core (32 s at 100 images a model).
    "tiny": Preset(
        dataset_len=150, len_training=50, train_models=2, eval_models=1, epochs=1, len_challenge=25
    ),
}

TASK = Task(
    name="cifar10",
    dataset_len=60_000,
    len_training=50_000,
    len_challenge=100,
    num_classes=10,
    architecture=Lazy("mico.tracks.nets", "CNN"),
    loader=Lazy("mico.tracks.data", "load_cifar10"),
    recipe=Recipe(
        "sgd",
        lr=0.005,
        batch_size=32,
        epochs=50,
        lr_step=1,
        lr_gamma=0.96,
        dp_lr=0.5,
        dp_batch_size=512,
    ),
    # MICO's DP-SGD (train_cifar10_*.sh): clipping at 2.6, Poisson sampling.
    privacy=mico_privacy(2.6),
    # Opacus has no ghost norm for nn.Conv2d, and hooks beat ghost by about 20% here (one
    # backward pass instead of two); 64-image physical batches halve the time per image, as
    # the CNN's per-sample gradients of 512 images fit no CPU cache.
    grad_sample_mode="hooks",
    physical_batch=64,
    source=Source(
        repo_id="szanella/MICO-CIFAR10",
        archive_name="cifar10.zip",
        archive_md5="c615b172eb42aac01f3a0737540944b1",
        base=BaseDataset(
            url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            md5="c58f30108f718f92721af3b95e74349a",
            folder="cifar10",
            entry=CIFAR10_FOLDER,
            is_dir=True,
            required=tuple(f"{CIFAR10_FOLDER}/{name}" for name in CIFAR10_BATCHES),
        ),
    ),
    demo=Demo(
        presets=PRESETS,
        synthesize=synthesize_cifar10,
        write=write_cifar10,
        files=dataset_files,
    ),
)
