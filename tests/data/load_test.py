"""`kerasbnn.data.load` / `info`: names, argument checks, the registry and the network probe."""

import socket
import time

import numpy as np
import pytest

import kerasbnn
from kerasbnn import data
from kerasbnn.data.base import host_reachable


def test_names_and_info():
    assert data.names() == ["cifar10", "cifar100", "fashion_mnist", "imagenet2012"]
    expected = {
        "fashion_mnist": ((28, 28, 1), 10, {"train": 60_000, "test": 10_000}),
        "cifar10": ((32, 32, 3), 10, {"train": 50_000, "test": 10_000}),
        "cifar100": ((32, 32, 3), 100, {"train": 50_000, "test": 10_000}),
        "imagenet2012": ((224, 224, 3), 1000, {"train": 1_281_167, "validation": 50_000}),
    }
    for name, (shape, classes, splits) in expected.items():
        info = data.info(name)
        assert (info.input_shape, info.num_classes, info.splits) == (shape, classes, splits)
        assert info["num_classes"] == classes
        assert len(info.mean) == len(info.std) == shape[-1]
    assert kerasbnn.data is data


def test_unknown_name_lists_valid_names():
    valid = "Valid datasets: cifar10, cifar100, fashion_mnist, imagenet2012"
    with pytest.raises(ValueError, match=valid):
        data.load("mnist")
    with pytest.raises(ValueError, match="Unknown dataset 'svhn'"):
        data.info("svhn")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"split": "validation"}, "Valid splits: train, test"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"batch_size": 2.5}, "batch_size must be a positive integer"),
        ({"limit": -1}, "limit must be a positive integer or None"),
        ({"seed": "a"}, "seed must be an integer"),
    ],
)
def test_bad_arguments_fail_before_reading(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load("cifar10", **kwargs)


def test_host_probe_sees_a_listening_server():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert host_reachable(f"http://127.0.0.1:{port}/", timeout=2.0) is True
    assert host_reachable(f"http://127.0.0.1:{port}/", timeout=2.0) is False


def test_host_probe_fails_fast_for_an_unresolvable_host():
    start = time.monotonic()
    assert host_reachable("http://kerasbnn-test.invalid/", timeout=1.0) is False
    assert time.monotonic() - start < 5.0


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10", "cifar100", "imagenet2012"])
def test_every_pipeline_is_deterministic_given_a_seed(mock_tfds, tmp_path, name):
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    for file in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        (manual / file).write_bytes(b"")

    def first_batch(seed):
        ds = data.load(name, "train", batch_size=4, seed=seed, data_dir=tmp_path, limit=4)
        x, y = next(iter(ds))
        return x.numpy(), y.numpy()

    (x1, y1), (x2, y2), (x3, _) = first_batch(5), first_batch(5), first_batch(6)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert x1.shape == (4, *data.info(name).input_shape)


@pytest.mark.parametrize("name, augment", [("fashion_mnist", False), ("cifar10", True)])
def test_index_adds_each_images_position_without_changing_the_batches(mock_tfds, tmp_path, name,
                                                                      augment):
    keep = np.array([True, False, True, True, True, False, True, True])  # 6 of 8 examples
    options = dict(batch_size=3, data_dir=tmp_path, keep=keep)
    stored = data.load(name, "train", shuffle=False, augment=False, **options)
    stored = np.concatenate([x.numpy() for x, _ in stored])
    plain = list(data.load(name, "train", seed=4, augment=augment, **options))
    indexed = list(data.load(name, "train", seed=4, augment=augment, index=True, **options))
    assert len(plain) == len(indexed) == 2
    for (x, y), (xi, yi, i) in zip(plain, indexed):
        np.testing.assert_array_equal(x.numpy(), xi.numpy())
        np.testing.assert_array_equal(y.numpy(), yi.numpy())
        if not augment:
            np.testing.assert_array_equal(xi.numpy(), stored[i.numpy()])
    order = np.concatenate([i.numpy() for *_, i in indexed])
    assert sorted(order) == list(range(6)) and list(order) != list(range(6))  # shuffled
