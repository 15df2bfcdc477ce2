"""Fashion-MNIST: tfds (mocked), the local idx files (synthetic, and real where installed), the
offline switch, and the error when every source fails.

`fake_fashion_mnist` (tests/conftest.py) is the directory `$KERASBNN_DATA_DIR` points at in
every test; the test marked `needs_real_files` reads Debian's files instead and is skipped
where `dataset-fashion-mnist` is not installed (`.ci/run` installs it).
"""

import gzip
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from kerasbnn import data
from kerasbnn.data import base, fashion_mnist

REAL_DIR = fashion_mnist.DEFAULT_DATA_DIR
needs_real_files = pytest.mark.skipif(
    not os.path.isfile(os.path.join(REAL_DIR, "t10k-labels-idx1-ubyte.gz")),
    reason=f"no Fashion-MNIST idx files in {REAL_DIR} (apt-get install dataset-fashion-mnist)",
)


def _raw_labels(n):
    with gzip.open(os.path.join(REAL_DIR, "t10k-labels-idx1-ubyte.gz")) as f:
        return np.frombuffer(f.read(8 + n)[8:], np.uint8)


def test_mock_tfds_pipeline(mock_tfds, tmp_path):
    ds = data.load("fashion_mnist", "train", batch_size=5, seed=0, data_dir=tmp_path)
    got = [(x.numpy(), y.numpy()) for x, y in ds]
    assert [x.shape for x, _ in got] == [(5, 28, 28, 1), (3, 28, 28, 1)]
    assert got[0][0].dtype == np.float32 and got[0][1].dtype == np.int32
    low, high = (0 - 0.2860) / 0.3530, (1 - 0.2860) / 0.3530
    assert all(x.min() >= low - 1e-5 and x.max() <= high + 1e-5 for x, _ in got)


@needs_real_files
def test_local_idx_fallback_reads_the_real_files(offline, tmp_path, monkeypatch):
    monkeypatch.setenv("KERASBNN_DATA_DIR", REAL_DIR)
    ds = data.load("fashion_mnist", "test", batch_size=64, data_dir=tmp_path, limit=200)
    got = [(x.numpy(), y.numpy()) for x, y in ds]
    assert [x.shape[0] for x, _ in got] == [64, 64, 64, 8]
    labels = np.concatenate([y for _, y in got])
    np.testing.assert_array_equal(labels, _raw_labels(200))  # test split: not shuffled
    images = np.concatenate([x for x, _ in got])
    raw = fashion_mnist.read_idx(os.path.join(REAL_DIR, "t10k-images-idx3-ubyte.gz"), limit=200)
    np.testing.assert_allclose(images[..., 0], (raw / 255.0 - 0.2860) / 0.3530, atol=1e-5)


def test_local_idx_fallback_reads_the_fixture_files(fake_fashion_mnist, tmp_path):
    ds = data.load("fashion_mnist", "test", batch_size=64, data_dir=tmp_path, limit=200)
    got = [(x.numpy(), y.numpy()) for x, y in ds]
    assert [x.shape for x, _ in got] == [(64, 28, 28, 1)] * 3 + [(8, 28, 28, 1)]
    raw_images, raw_labels = fake_fashion_mnist.test
    np.testing.assert_array_equal(np.concatenate([y for _, y in got]), raw_labels[:200])
    images = np.concatenate([x for x, _ in got])[..., 0]
    np.testing.assert_allclose(images, (raw_images[:200] / 255.0 - 0.2860) / 0.3530, atol=1e-5)


def test_local_train_split_is_shuffled_and_augmented(tmp_path):
    def first_batch(**kw):
        ds = data.load("fashion_mnist", "train", batch_size=100, data_dir=tmp_path, limit=100, **kw)
        return next(iter(ds))

    x1, y1 = first_batch(seed=1)
    x2, _ = first_batch(seed=1)
    x0, y0 = first_batch(shuffle=False, augment=False)
    np.testing.assert_array_equal(x1.numpy(), x2.numpy())
    assert not np.array_equal(y1.numpy(), y0.numpy())
    assert sorted(y1.numpy()) == sorted(y0.numpy())


def test_failed_tfds_download_falls_back_to_local_files(fake_fashion_mnist, tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.delenv("KERASBNN_OFFLINE")
    monkeypatch.setattr(base, "host_reachable", lambda url, timeout=None: True)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)
    ds = data.load("fashion_mnist", "test", batch_size=10, data_dir=tmp_path, limit=10)
    x, y = next(iter(ds))
    assert x.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(y.numpy(), fake_fashion_mnist.test[1][:10])


def test_offline_never_downloads_and_says_why(tmp_path, monkeypatch):
    def download(self, *args, **kwargs):
        raise AssertionError("downloaded although KERASBNN_OFFLINE=1")

    monkeypatch.setattr(base, "host_reachable", lambda url, timeout=None: True)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", download)
    monkeypatch.setenv("KERASBNN_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(data.DataNotFoundError, match=r"downloads are disabled \(KERASBNN_OFFLINE="):
        data.load("fashion_mnist", "train", data_dir=tmp_path / "tfds")


def test_tfds_data_dir_is_read_when_loading(tmp_path, monkeypatch):
    """tfds reads $TFDS_DATA_DIR once, at import; kerasbnn passes the current value."""
    seen = []

    class Stop(Exception):
        pass

    def builder(name, data_dir=None):
        seen.append(data_dir)
        raise Stop

    monkeypatch.setattr(tfds, "builder", builder)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "now"))
    with pytest.raises(Stop):
        data.load("fashion_mnist", "train")
    with pytest.raises(Stop):
        data.load("fashion_mnist", "train", data_dir=tmp_path / "given")
    assert seen == [str(tmp_path / "now"), tmp_path / "given"]


def test_clear_error_when_nothing_is_available(offline, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("KERASBNN_DATA_DIR", str(empty))
    with pytest.raises(data.DataNotFoundError) as error:
        data.load("fashion_mnist", "train", data_dir=tmp_path / "tfds")
    message = str(error.value)
    for hint in ("download_and_prepare", "apt-get install dataset-fashion-mnist",
                 "KERASBNN_DATA_DIR", str(empty), "train-images-idx3-ubyte.gz"):
        assert hint in message
    assert isinstance(error.value, FileNotFoundError)


def test_local_files_reject_tfds_slicing(offline, tmp_path):
    with pytest.raises(ValueError, match="use limit="):
        data.load("fashion_mnist", "train[:10%]", data_dir=tmp_path)


def test_read_idx_rejects_other_files(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd")  # float32 idx
    with pytest.raises(ValueError, match="not a uint8 idx file"):
        fashion_mnist.read_idx(path)


def test_read_idx_roundtrip(tmp_path, rng):
    array = rng.integers(0, 256, size=(7, 3, 2), dtype=np.uint8)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + np.array(array.shape, ">i4").tobytes() + array.tobytes())
    np.testing.assert_array_equal(fashion_mnist.read_idx(path), array)
    np.testing.assert_array_equal(fashion_mnist.read_idx(path, limit=2), array[:2])
