"""`load` on a tfds dataset stored in several files: `keep` and `index` count examples in one
fixed order, so the validation split never leaks into training and cached rows stay with
their images, epoch after epoch (issue 30, item 1)."""

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

from kerasbnn.data import ImageDataset, validation_mask
from kerasbnn.distill import attach_teacher_logits, teacher_logits

EXAMPLES, SHARDS = 64, 4


class _Sharded(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """64 one-channel 2x2 images whose pixels all hold the example's number."""

    name = "kerasbnn_sharded"
    code_path = None  # written here, from no module's folder (no checksums file to look for)
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(2, 2, 1)),
                "label": tfds.features.ClassLabel(num_classes=2)}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(EXAMPLES):
            yield i, {"image": np.full((2, 2, 1), i, np.uint8), "label": i % 2}


class ShardedImages(ImageDataset):
    name = tfds_name = "kerasbnn_sharded"
    input_shape, num_classes, splits = (2, 2, 1), 2, {"train": EXAMPLES}
    mean, std = (0.0,), (1.0 / 255,)  # normalised images hold the example's number


@pytest.fixture(scope="module")
def sharded_dir(tmp_path_factory):
    """A tfds data directory holding `_sharded`, written in `SHARDS` files."""
    directory = tmp_path_factory.mktemp("tfds_sharded")
    _Sharded(data_dir=str(directory)).download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=SHARDS))
    files = list((directory / "kerasbnn_sharded" / "1.0.0").glob("*train.tfrecord*"))
    assert len(files) == SHARDS
    return directory


def _numbers(images):
    return np.rint(images.numpy()[:, 0, 0, 0]).astype(int)


def test_validation_and_training_images_stay_disjoint_over_epochs(sharded_dir):
    mask = validation_mask(EXAMPLES, 0.25, seed=0)
    options = dict(augment=False, data_dir=sharded_dir, limit=None, drop_remainder=False)
    val = ShardedImages().load("train", 8, shuffle=False, seed=None, keep=mask, **options)
    val_numbers = {n for x, _ in val for n in _numbers(x)}
    assert len(val_numbers) == mask.sum()
    train = ShardedImages().load("train", 8, shuffle=True, seed=3, keep=~mask, **options)
    epochs = [[n for x, _ in train for n in _numbers(x)] for _ in range(2)]
    for numbers in epochs:
        assert sorted(numbers) == sorted(set(range(EXAMPLES)) - val_numbers)
    assert epochs[0] != epochs[1]  # reshuffled each epoch


def test_cached_rows_belong_to_their_images_over_epochs(sharded_dir):
    keep = ~validation_mask(EXAMPLES, 0.25, seed=0)
    options = dict(data_dir=sharded_dir, limit=None, drop_remainder=False, keep=keep)
    inputs = keras.Input((2, 2, 1))  # a "teacher" whose logit is the image's number
    teacher = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    plain = ShardedImages().load("train", 8, augment=False, shuffle=False, seed=None, **options)
    table = teacher_logits(teacher, plain)
    indexed = ShardedImages().load("train", 8, augment=False, shuffle=True, seed=3, index=True,
                                   **options)
    cached = attach_teacher_logits(indexed, table)
    for _ in range(2):
        seen = 0
        for x, _ in cached:
            np.testing.assert_array_equal(x["teacher_logits"].numpy()[:, 0, 0],
                                          x["inputs"].numpy()[:, 0, 0, 0])
            seen += len(x["inputs"])
        assert seen == keep.sum()
