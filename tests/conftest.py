"""Shared fixtures: a seeded RNG, a fresh Keras session per test, and hermetic data.

Every test runs with `$KERASBNN_DATA_DIR` pointing at small synthetic Fashion-MNIST idx files
written once per session (`fake_fashion_mnist`), `$TFDS_DATA_DIR` at an empty directory and
`$KERASBNN_OFFLINE=1`: no test reads a dataset installed on the machine, a tfds copy in
~/tensorflow_datasets or the network, so the suite passes, and means the same, on a fresh
machine. Subprocesses inherit the variables. Tests of the real files set
`$KERASBNN_DATA_DIR` themselves and skip when the files are absent.
"""

import gzip
import os
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kerasbnn.data import fashion_mnist  # noqa: E402

FAKE_SIZES = {"train": 512, "test": 256}


def write_idx(path, array):
    """Writes a uint8 array as a gzip-compressed idx file (the format `read_idx` reads)."""
    header = b"\x00\x00\x08" + bytes([array.ndim]) + np.array(array.shape, ">i4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def synthetic_fashion_mnist(split):
    """`(images, labels)` of a split: random 28x28 uint8 images, labels cycling 0..9."""
    rng = np.random.default_rng(list(FAKE_SIZES).index(split))
    count = FAKE_SIZES[split]
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    return images, (np.arange(count) % 10).astype(np.uint8)


@pytest.fixture(scope="session")
def fake_fashion_mnist(tmp_path_factory):
    """A directory holding the four Fashion-MNIST idx files, synthetic and small.

    Returns:
        A namespace: `dir` (the directory) and `train` / `test` (the `(images, labels)`
        arrays written there).
    """
    directory = tmp_path_factory.mktemp("fashion_mnist")
    arrays = {}
    for split, (images_name, labels_name) in fashion_mnist.IDX_FILES.items():
        arrays[split] = synthetic_fashion_mnist(split)
        write_idx(directory / images_name, arrays[split][0])
        write_idx(directory / labels_name, arrays[split][1])
    return types.SimpleNamespace(dir=directory, **arrays)


@pytest.fixture(scope="session")
def _empty_tfds_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tensorflow_datasets")


@pytest.fixture(scope="session")
def shared_teachers(tmp_path_factory):
    """`teachers.cache_dir=<one folder for the session>`, a config override: tests whose
    teachers only start or teach their student train each teacher once per session, in the
    first test that needs it, and load it in the others (`kerasbnn.teacher_cache`, keyed on
    every setting that changes a teacher). Tests of teacher training itself, and tests that
    replace it, leave it out."""
    return f"teachers.cache_dir={tmp_path_factory.mktemp('teacher_cache')}"


@pytest.fixture(autouse=True)
def _hermetic_data(fake_fashion_mnist, _empty_tfds_dir, monkeypatch):
    monkeypatch.setenv("KERASBNN_DATA_DIR", str(fake_fashion_mnist.dir))
    monkeypatch.setenv("TFDS_DATA_DIR", str(_empty_tfds_dir))
    monkeypatch.setenv("KERASBNN_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _clean_keras_session():
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
