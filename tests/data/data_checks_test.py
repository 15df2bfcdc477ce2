"""Data is checked where it is read, before anything trains: images of another shape, labels
outside the class range, a gzip file whose checksum fails, fewer examples than a split needs.
Each is one `DataFormatError` (a `DataNotFoundError`: the command line exits with 3) naming the
file or directory and what was expected; `kerasbnn pipeline` writes nothing."""

import gzip
import logging
import os
import re
import shutil
import types

import numpy as np
import pytest
import tensorflow as tf

from kerasbnn import cli, data
from kerasbnn.data import fashion_mnist
from tests.conftest import write_idx


def _idx_bytes(array):
    return b"\x00\x00\x08" + bytes([array.ndim]) + np.array(array.shape, ">i4").tobytes() + \
        np.ascontiguousarray(array, np.uint8).tobytes()


def _flip_stored_byte(path):
    """A gzip file whose deflate stream is intact but one data byte flipped: only the CRC-32
    at the end of the file tells."""
    raw = path.read_bytes()
    with gzip.open(path) as f:
        content = f.read()
    stored = bytearray(gzip.compress(content, compresslevel=0))
    stored[len(stored) // 2] ^= 0xFF
    path.write_bytes(bytes(stored))
    assert raw != bytes(stored)


def _copy_with(fake_fashion_mnist, tmp_path, name, damage):
    """A copy of the synthetic Fashion-MNIST files with file `name` damaged by `damage(path)`."""
    directory = tmp_path / "fashion_mnist"
    shutil.copytree(fake_fashion_mnist.dir, directory)
    damage(directory / name)
    return directory


TRAIN_IMAGES, TRAIN_LABELS = fashion_mnist.IDX_FILES["train"]

DAMAGES = {
    "labels outside 0..9": (
        TRAIN_LABELS, lambda p: write_idx(p, (np.arange(512) % 12).astype(np.uint8)),
        "label(s) outside 0..9 (the first: 10 at example 10)"),
    "32x32 images": (
        TRAIN_IMAGES, lambda p: write_idx(p, np.zeros((512, 32, 32), np.uint8)),
        "holds images of shape 32x32, but fashion_mnist's images are 28x28"),
    "flat 784-pixel images": (
        TRAIN_IMAGES, lambda p: write_idx(p, np.zeros((512, 784), np.uint8)),
        "holds images of shape 784, but fashion_mnist's images are 28x28"),
    "labels of two dimensions": (
        TRAIN_LABELS, lambda p: write_idx(p, np.zeros((512, 2), np.uint8)),
        "holds 2 values per label, but fashion_mnist needs one integer label per example"),
    "a flipped data byte": (TRAIN_IMAGES, _flip_stored_byte, "CRC check failed"),
    "a flipped label byte": (TRAIN_LABELS, _flip_stored_byte, "CRC check failed"),
}


@pytest.mark.parametrize("kind", DAMAGES)
def test_damaged_local_files_are_refused_where_they_are_read(fake_fashion_mnist, tmp_path,
                                                             monkeypatch, kind):
    name, damage, message = DAMAGES[kind]
    monkeypatch.setenv("KERASBNN_DATA_DIR", str(_copy_with(fake_fashion_mnist, tmp_path, name,
                                                           damage)))
    with pytest.raises(data.DataFormatError, match=re.escape(message)) as info:
        data.load("fashion_mnist", "train", batch_size=8, limit=16)  # a few: still checked
    assert str(tmp_path / "fashion_mnist" / name) in str(info.value)
    assert isinstance(info.value, data.DataNotFoundError) and isinstance(info.value, ValueError)


def test_a_file_shorter_than_its_header_is_refused_even_when_a_limit_reads_less(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    announced = _idx_bytes(np.zeros(20, np.uint8))
    path.write_bytes(gzip.compress(announced[:-5]))  # 15 of the 20 labels
    with pytest.raises(fashion_mnist.IdxFileError, match="holds 15 data bytes, but its header "
                                                         "announces 20"):
        fashion_mnist.read_idx(path, limit=5)
    path.write_bytes(gzip.compress(announced + b"\x00"))
    with pytest.raises(fashion_mnist.IdxFileError, match="announces 20"):
        fashion_mnist.read_idx(path)


def test_a_corrupt_crc_is_refused_even_when_a_limit_reads_less(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    packed = bytearray(gzip.compress(_idx_bytes(np.arange(20, dtype=np.uint8))))
    packed[-8] ^= 0x01  # the CRC-32 field of the gzip trailer
    path.write_bytes(bytes(packed))
    with pytest.raises(fashion_mnist.IdxFileError, match="CRC check failed"):
        fashion_mnist.read_idx(path, limit=5)


def test_examples_of_another_shape_or_label_type_are_refused():
    cifar = data.DATASETS.get("cifar10")
    cifar.source = "a test"
    grey = tf.data.Dataset.from_tensor_slices((np.zeros((4, 28, 28, 1), np.uint8),
                                               np.zeros(4, np.int64)))
    with pytest.raises(data.DataFormatError, match="images of shape 28x28x1, but cifar10's "
                                                   "images are 32x32x3"):
        cifar.check_examples(grey, "train")
    float_labels = tf.data.Dataset.from_tensor_slices((np.zeros((4, 32, 32, 3), np.uint8),
                                                       np.zeros(4, np.float32)))
    with pytest.raises(data.DataFormatError, match="expected one integer label per image"):
        cifar.check_examples(float_labels, "train")
    imagenet = data.DATASETS.get("imagenet2012")
    imagenet.check_examples(tf.data.Dataset.from_tensor_slices((  # any size, 3 channels
        np.zeros((2, 300, 200, 3), np.uint8), np.zeros(2, np.int64))), "train")
    with pytest.raises(data.DataFormatError, match=r"images are \?x\?x3"):
        imagenet.check_examples(grey, "train")


def _builder(image_shape, classes):
    features = {"image": types.SimpleNamespace(shape=image_shape),
                "label": types.SimpleNamespace(num_classes=classes)}
    return types.SimpleNamespace(info=types.SimpleNamespace(supervised_keys=("image", "label"),
                                                            features=features))


@pytest.mark.parametrize("name, shape, classes, message", [
    ("cifar10", (28, 28, 1), 10, "holds images of shape 28x28x1, but cifar10's images are 32x32x3"),
    ("cifar100", (32, 32, 3), 10, "declares 10 classes, but cifar100 has 100"),
    ("imagenet2012", (None, None, 1), 1000, "images are ?x?x3"),
])
def test_a_tfds_copy_that_declares_other_images_or_classes_is_refused(name, shape, classes,
                                                                      message):
    with pytest.raises(data.DataFormatError, match=message.replace("?", r"\?")) as info:
        data.DATASETS.get(name).check_tfds_info(_builder(shape, classes), "/tfds/dir")
    assert "/tfds/dir" in str(info.value)


@pytest.mark.parametrize("name, shape, classes", [
    ("fashion_mnist", (28, 28, 1), 10), ("cifar100", (32, 32, 3), 100),
    ("imagenet2012", (None, None, 3), 1000)])
def test_a_tfds_copy_of_the_dataset_passes(name, shape, classes):
    data.DATASETS.get(name).check_tfds_info(_builder(shape, classes), "/tfds/dir")


def test_keep_must_have_one_entry_per_example():
    with pytest.raises(data.DataFormatError, match="are 512, but keep= has 1000 entries"):
        data.load("fashion_mnist", "train", 64, limit=1000, keep=np.ones(1000, bool))


def test_count_says_how_many_examples_are_here():
    assert data.count("fashion_mnist", "train") == 512
    assert data.count("fashion_mnist", "test", limit=100) == 100
    with pytest.raises(ValueError, match="Unknown split 'validation'"):
        data.count("fashion_mnist", "validation")


def test_tfds_variant_folder_warnings_are_quiet(tmp_path, monkeypatch, caplog):
    (tmp_path / "fashion_mnist" / "3.0.1").mkdir(parents=True)  # a partial tfds copy
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with caplog.at_level(logging.INFO):
        data.load("fashion_mnist", "test", 64, limit=64)
    assert not [r for r in caplog.records if "Variant folder" in r.getMessage()]


CLI_CASES = {**{kind: (*DAMAGES[kind][:2], []) for kind in ("labels outside 0..9", "32x32 images",
                                                             "a flipped data byte")},
             "train_limit above the images here": (TRAIN_LABELS, lambda p: None,
                                                   ["data.train_limit=1000"])}


@pytest.mark.parametrize("kind", CLI_CASES)
def test_pipeline_exits_3_on_bad_data_before_writing_anything(fake_fashion_mnist, tmp_path,
                                                              monkeypatch, capsys, kind):
    name, damage, sets = CLI_CASES[kind]
    directory = _copy_with(fake_fashion_mnist, tmp_path, name, damage)
    monkeypatch.setenv("KERASBNN_DATA_DIR", str(directory))
    argv = ["pipeline", "--config", "examples/configs/demo.yaml", "--set",
            f"run_dir={tmp_path / 'run'}", "--set", "data.batch_size=64",
            *[a for item in ["data.train_limit=256", "distill.feature_weight=0.2", *sets] for a in ("--set", item)]]
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert status == cli.EXIT_INPUT, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(directory) in err
    assert not os.path.exists(tmp_path / "run")
