"""ImageNet-2012 (ILSVRC) through tensorflow-datasets' manual download.

ImageNet cannot be downloaded automatically: register at https://image-net.org, download
`ILSVRC2012_img_train.tar` and `ILSVRC2012_img_val.tar`, and put them in tfds' manual
directory, `<data_dir>/downloads/manual/` (data_dir defaults to `$TFDS_DATA_DIR` or
`~/tensorflow_datasets`); the first `load` then prepares the dataset, as tfds does.

Preprocessing, as in ResNet, Bi-Real Net, ReActNet and MAD's ImageNet runs:
- train: random resized crop (area 8%-100% of the image, aspect ratio 3/4-4/3; Szegedy et al.
  2015, arXiv:1409.4842 §6) resized to 224x224, random horizontal flip;
- evaluation: resize the shorter side to 256, center crop 224x224;
then per-channel normalisation with the usual ImageNet mean and std.
"""

import os

import tensorflow as tf

from kerasbnn.data.base import DataNotFoundError, ImageDataset, tfds_data_dir
from kerasbnn.data.registry import register_dataset

MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


def manual_dir(data_dir):
    """tfds' manual download directory for `data_dir`: `<data_dir>/downloads/manual`."""
    return os.path.join(tfds_data_dir(data_dir), "downloads", "manual")


class ImageNet2012(ImageDataset):
    """ILSVRC-2012: 1000 classes, 224x224x3 crops."""

    name = tfds_name = "imagenet2012"
    input_shape = (224, 224, 3)
    num_classes = 1000
    splits = {"train": 1_281_167, "validation": 50_000}
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)
    shuffle_buffer = 10_000
    variable_size = True
    image_size = 224
    resize_size = 256
    area_range = (0.08, 1.0)
    aspect_ratio_range = (3 / 4, 4 / 3)

    def how_to_get(self, data_dir):
        return (
            "ImageNet needs a manual download: register at https://image-net.org/download-images, "
            f"download {' and '.join(MANUAL_FILES)}, put them in {manual_dir(data_dir)} (or pass "
            "data_dir= to the tfds data directory whose downloads/manual holds them), and call "
            "kerasbnn.data.load again: tensorflow-datasets then prepares the dataset (hours, "
            "about 300 GB of disk)."
        )

    def prepare(self, builder, data_dir):
        import tensorflow_datasets as tfds  # noqa: PLC0415

        directory = manual_dir(data_dir)
        missing = [f for f in MANUAL_FILES if not os.path.isfile(os.path.join(directory, f))]
        if missing:
            raise DataNotFoundError(
                f"Dataset 'imagenet2012' is not prepared in {tfds_data_dir(data_dir)} and "
                f"{', '.join(missing)} are missing from {directory}."
            )
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=directory)
        )

    def augment(self, image, seed):
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image),
            bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=crop_seed,
            min_object_covered=0.0,
            aspect_ratio_range=self.aspect_ratio_range,
            area_range=self.area_range,
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        image = tf.slice(image, begin, size)
        image = tf.image.resize(image, (self.image_size, self.image_size), method="bilinear")
        return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)

    def evaluate_transform(self, image):
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = self.resize_size / tf.reduce_min(shape)
        new_size = tf.cast(tf.round(shape * scale), tf.int32)
        image = tf.image.resize(image, new_size, method="bilinear")
        offset = (new_size - self.image_size) // 2
        return tf.image.crop_to_bounding_box(
            image, offset[0], offset[1], self.image_size, self.image_size
        )


IMAGENET2012 = register_dataset(ImageNet2012())

__all__ = ["ImageNet2012", "IMAGENET2012", "MANUAL_FILES", "manual_dir"]
