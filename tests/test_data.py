"""Base-dataset loaders: real file formats built here, checked against independent math."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from mico.tracks.data import load_cifar10, load_purchase100

MEAN = np.array([0.49139968, 0.48215841, 0.44653091])
STD = np.array([0.24703223, 0.24348513, 0.26158784])


def _write_cifar(root, per_batch: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images, labels = [], []
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        batch_labels = rng.integers(0, 10, size=per_batch).tolist()
        batch = {b"batch_label": name.encode(), b"labels": batch_labels, b"data": data}
        batch[b"filenames"] = [f"{name}_{i}.png".encode() for i in range(per_batch)]
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
        images.append(data)
        labels.extend(batch_labels)
    return np.concatenate(images), np.array(labels)


def test_cifar10_order_and_transform(tmp_path):
    images, labels = _write_cifar(tmp_path, 7, np.random.default_rng(0))
    ds = load_cifar10(tmp_path)
    assert len(ds) == 42 and ds.x.shape == (42, 3, 32, 32) and ds.x.dtype.is_floating_point
    assert ds.y.tolist() == labels.tolist()
    # Independent computation: rows are R plane, G plane, B plane, each 32x32 row-major.
    chw = images.reshape(42, 3, 32, 32).astype(np.float64) / 255.0
    expected = (chw - MEAN[None, :, None, None]) / STD[None, :, None, None]
    np.testing.assert_allclose(ds.x.numpy(), expected, atol=2e-6)
    # The red channel of image 8's first pixel is byte 0 of its row.
    assert ds.x[8, 0, 0, 0].item() == pytest.approx((images[8, 0] / 255 - MEAN[0]) / STD[0], 1e-5)
    x, y = ds[3]
    assert x.shape == (3, 32, 32) and int(y) == labels[3]


def test_cifar10_missing_batch_says_how_to_get_it(tmp_path):
    _write_cifar(tmp_path, 2, np.random.default_rng(1))
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"test_batch.*download_files.py --challenge cifar10"
    ):
        load_cifar10(tmp_path)


def _write_purchase(root, rows: int, rng: np.random.Generator) -> np.ndarray:
    table = np.concatenate(
        [rng.integers(1, 101, size=(rows, 1)), rng.integers(0, 2, size=(rows, 600))], axis=1
    )
    folder = root / "purchase100"
    folder.mkdir(parents=True)
    np.savetxt(folder / "dataset_purchase", table, fmt="%d", delimiter=",")
    return table


def test_purchase100_parse_and_cache(tmp_path):
    table = _write_purchase(tmp_path, 50, np.random.default_rng(2))
    ds = load_purchase100(tmp_path)
    assert ds.y.tolist() == (table[:, 0] - 1).tolist()
    assert ds.x.dtype == np.float32 or str(ds.x.dtype) == "torch.float32"
    np.testing.assert_array_equal(ds.x.numpy(), table[:, 1:].astype(np.float32))
    cache = tmp_path / "purchase100" / "dataset_purchase.npz"
    assert cache.is_file()
    # The second load comes from the cache: a table stored under the text's key is what is read.
    with np.load(cache) as stored:
        arrays = dict(stored)
    arrays["table"] = arrays["table"].copy()
    arrays["table"][0, 0] = 7
    np.savez(cache, **arrays)
    assert load_purchase100(tmp_path).y[0].item() == 6
    # Different text (whatever its time stamp) makes the cache stale: it is parsed again.
    text = tmp_path / "purchase100" / "dataset_purchase"
    stamp = cache.stat().st_mtime
    text.write_text("garbage\n")
    os.utime(text, (stamp - 10, stamp - 10))
    with pytest.raises(ValueError, match="dataset_purchase"):
        load_purchase100(tmp_path)


def test_purchase100_bad_columns(tmp_path):
    folder = tmp_path / "purchase100"
    folder.mkdir()
    (folder / "dataset_purchase").write_text("1,0,1\n2,1,0\n")
    with pytest.raises(ValueError, match="601 columns"):
        load_purchase100(tmp_path)


def test_purchase100_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="download_files.py --challenge purchase100"):
        load_purchase100(tmp_path)
