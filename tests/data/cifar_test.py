"""CIFAR-10/100 pipelines on tfds mock data: shapes, dtypes, range, augmentation, seeds."""

import numpy as np
import pytest

from kerasbnn import data
from kerasbnn.data.base import pad_crop_flip


def _batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def _bounds(name):
    info = data.info(name)
    mean, std = np.asarray(info.mean), np.asarray(info.std)
    return (0.0 - mean) / std, (1.0 - mean) / std


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_batches_shapes_dtypes_and_range(mock_tfds, tmp_path, name, classes):
    got = _batches(data.load(name, "train", batch_size=3, seed=0, data_dir=tmp_path))
    assert [x.shape for x, _ in got] == [(3, 32, 32, 3)] * 2 + [(2, 32, 32, 3)]
    assert all(x.dtype == np.float32 and y.dtype == np.int32 for x, y in got)
    low, high = _bounds(name)
    images = np.concatenate([x for x, _ in got])
    assert np.all(images >= low - 1e-5) and np.all(images <= high + 1e-5)
    labels = np.concatenate([y for _, y in got])
    assert labels.shape == (8,) and np.all((labels >= 0) & (labels < classes))
    dropped = _batches(data.load(name, "train", batch_size=3, seed=0, drop_remainder=True))
    assert [x.shape[0] for x, _ in dropped] == [3, 3]


def test_augmentation_only_on_train(mock_tfds):
    def images(split, **kw):
        return np.concatenate([x for x, _ in _batches(data.load("cifar10", split, 8, **kw))])

    # Test split: no augmentation and no shuffling, so the seed changes nothing.
    np.testing.assert_array_equal(images("test", seed=1), images("test", seed=2))
    plain = images("train", augment=False, shuffle=False)
    np.testing.assert_array_equal(plain, images("test"))  # mock splits hold the same examples
    augmented = images("train", shuffle=False, seed=1)
    assert not np.array_equal(augmented, plain)


def test_same_seed_same_batches(mock_tfds):
    def run(seed):
        return _batches(data.load("cifar10", "train", batch_size=4, seed=seed))

    first, again, other = run(7), run(7), run(8)
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))


def test_augmentation_differs_between_epochs(mock_tfds):
    ds = data.load("cifar10", "train", batch_size=8, seed=3, shuffle=False)
    epoch1, epoch2 = (np.concatenate([x for x, _ in _batches(ds)]) for _ in range(2))
    assert not np.array_equal(epoch1, epoch2)


def test_pad_crop_flip_gives_each_image_a_shifted_or_flipped_copy(rng):
    images = rng.uniform(0.1, 1.0, size=(16, 32, 32, 3)).astype("float32")
    pad = 4
    out = pad_crop_flip(images, np.array([3, 0]), pad).numpy()
    assert out.shape == images.shape
    seen = set()
    for image, crop in zip(images, out):
        padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)])
        matches = [
            (dy, dx, flip)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            for flip in (False, True)
            if np.array_equal(crop, padded[dy:dy + 32, dx:dx + 32][:, ::-1 if flip else 1])
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 8  # images of one batch get different crops
    assert {flip for _, _, flip in seen} == {False, True}


def test_offline_without_prepared_copy_says_how_to_get_it(offline, tmp_path):
    with pytest.raises(data.DataNotFoundError) as error:
        data.load("cifar100", "test", data_dir=tmp_path)
    message = str(error.value)
    assert "not prepared in " + str(tmp_path) in message
    assert "download_and_prepare()" in message and "tfds.builder('cifar100'" in message
