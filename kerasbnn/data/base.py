"""What every dataset shares: the tfds access, the tf.data pipeline and the augmentations.

A dataset is an `ImageDataset` instance (one per name, kept in `kerasbnn.data.registry`). It
yields raw `(uint8 image, label)` examples through tensorflow-datasets, and `load()` turns them
into a batched, prefetched pipeline of `(float32 normalised image, int32 label)`:

    examples -> take(limit) -> keep -> index -> shuffle -> batch -> augment (train)
             -> normalise -> prefetch

The examples are always read in their stored order (tfds files unshuffled, `shuffle_files=False`),
so that `keep` (a validation split) and `index` (the row of a cached table) name the same
examples in every epoch, also for datasets stored in several files (ImageNet: 1,024); the
training order comes from the seeded example-level shuffle alone, reshuffled each epoch with a
buffer of `shuffle_buffer` examples (tfds stores examples in a shuffled order when it prepares
a dataset, so windows of the stored order are already mixed).

Datasets whose images all have the same size (CIFAR, Fashion-MNIST) are augmented a batch at
a time with vectorised ops, several times faster than a per-image map on small images;
datasets of variable-size images (ImageNet) are cropped image by image before batching.
Randomness is stateless and seeded: each example is zipped with a seed pair from
`tf.data.Dataset.random` (a batch is augmented with its first example's), and with a `seed`
each pass's shuffle and seeds come from `(seed, pass)` alone (`kerasbnn.data.epochs`): the same
batches on every run, a new order and new augmentations in each epoch, and a fit resumed at
epoch k continues with epoch k's batches.
"""

import contextlib
import dataclasses
import logging
import os
import socket
import threading
import urllib.parse

import numpy as np
import tensorflow as tf

from kerasbnn.data import epochs

# A data source that cannot be reached must fail in seconds, never hang (no internet here).
_PROBE_TIMEOUT_S = 3.0
# Set to anything but "" or "0": tensorflow-datasets never downloads (prepared copies and local
# files only). The test suite sets it so that no test depends on the network.
OFFLINE_ENV = "KERASBNN_OFFLINE"


class DataNotFoundError(FileNotFoundError):
    """The dataset is neither prepared, downloadable, nor available as local files."""


class DataFormatError(DataNotFoundError, ValueError):
    """The data is there but is not what its dataset declares: images of another shape, labels
    outside `0 .. num_classes - 1`, fewer examples than asked for, or a corrupt file.

    Raised where the data is read, before any training; the message names the file (or the
    tensorflow-datasets directory) and what was expected. A `DataNotFoundError` (the data
    cannot be used: the command line exits with status 3) and a `ValueError`.
    """


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset (also readable as `info["num_classes"]`).

    Attributes:
        name: the kerasbnn name, e.g. `"cifar10"`.
        tfds_name: the tensorflow-datasets name.
        input_shape: shape of one image as `load()` yields it, channels last.
        num_classes: number of labels.
        splits: `{split: number of examples}` of the full dataset.
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation divided by after that.
    """

    name: str
    tfds_name: str
    input_shape: tuple
    num_classes: int
    splits: dict
    mean: tuple
    std: tuple

    def __getitem__(self, key):
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)


def host_reachable(url, timeout=_PROBE_TIMEOUT_S):
    """True if a TCP connection to `url`'s host opens within `timeout` seconds.

    Name resolution has no timeout of its own, so the probe runs in a daemon thread that is
    abandoned after `timeout` seconds.
    """
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    reachable = []

    def probe():
        try:
            socket.create_connection((parsed.hostname, port), timeout=timeout).close()
            reachable.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(reachable)


def _is_variant_folder_note(record):
    return not str(record.msg).startswith("Variant folder ")


@contextlib.contextmanager
def _quiet_tfds_warnings():
    """Drops tensorflow-datasets' "Variant folder ... has no dataset_info.json" warnings
    (an unprepared or partial copy; kerasbnn says itself what it found and where)."""
    logger = logging.getLogger("absl")  # tfds logs through absl.logging
    logger.addFilter(_is_variant_folder_note)
    try:
        yield
    finally:
        logger.removeFilter(_is_variant_folder_note)


def downloads_disabled():
    """True when `$KERASBNN_OFFLINE` is set to anything but `""` or `"0"`."""
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def tfds_data_dir(data_dir):
    """Where `tfds_examples` looks: `data_dir`, else `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`.

    tfds itself reads `$TFDS_DATA_DIR` once, at import; kerasbnn reads it at each load.
    """
    if data_dir is not None:
        return os.fspath(data_dir)
    default = os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
    return os.environ.get("TFDS_DATA_DIR") or default


def _shape_text(shape):
    """`(28, 28, None)` -> `"28x28x?"`."""
    return "x".join("?" if size is None else str(size) for size in shape) or "()"


def split_name(split):
    """`"train[:10%]"` -> `"train"`."""
    return split.split("[", 1)[0]


def pad_crop_flip(images, seed, pad):
    """Zero-pad by `pad`, random crop of the original size, random horizontal flip.

    The standard CIFAR augmentation (He et al. 2016, arXiv:1512.03385 §4.2: "4 pixels are
    padded on each side, and a 32x32 crop is randomly sampled from the padded image or its
    horizontal flip"), done before normalisation so the padding is black. Each image of the
    batch gets its own offsets and flip, drawn with stateless ops from `seed`.

    Args:
        images: a `(batch, rows, cols, channels)` float batch.
        seed: shape-`(2,)` integer seed.
        pad: pixels of zero padding on each side.

    Returns:
        The augmented batch, same shape as `images`.
    """
    shape = tf.shape(images)
    batch, rows, cols = shape[0], shape[1], shape[2]
    offset_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    offsets = tf.random.stateless_uniform(
        [batch, 2], offset_seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32
    )
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    row_index = offsets[:, :1] + tf.range(rows)[tf.newaxis]
    col_index = offsets[:, 1:] + tf.range(cols)[tf.newaxis]
    flip = tf.random.stateless_uniform([batch], flip_seed) < 0.5
    # A flipped crop reads its columns right to left.
    col_index = tf.where(flip[:, tf.newaxis], tf.reverse(col_index, axis=[1]), col_index)
    crops = tf.gather(padded, row_index, axis=1, batch_dims=1)
    return tf.gather(crops, col_index, axis=2, batch_dims=1)


def _keep_and_index(ds, keep, index):
    """`ds` (examples in their stored order) with example i kept iff `keep[i]` (a validation
    split, or the rest), and with `index`, each example's position among those kept appended
    (fixed before shuffling)."""
    if keep is not None:
        mask = tf.constant(keep, tf.bool)

        def kept(index, _):
            return mask[index]

        def example(_, value):
            return value

        ds = ds.enumerate().filter(kept).map(example)
        ds = ds.apply(tf.data.experimental.assert_cardinality(int(sum(keep))))
    if index:
        ds = ds.enumerate().map(lambda i, example: (*example, i))
    return ds


class ImageDataset:
    """An image classification dataset read through tensorflow-datasets.

    Subclasses set the class attributes and may override `examples` (other sources) and
    `augment` (training augmentation of float images in [0, 1]: a whole batch for fixed-size
    datasets, one image when `variable_size`), and `evaluate_transform` (deterministic
    resizing of one image for evaluation, variable-size datasets only).

    Attributes:
        name: kerasbnn name (registry key).
        tfds_name: tensorflow-datasets name.
        input_shape: shape of one output image.
        num_classes: number of labels.
        splits: `{split: size}`; the first one is the training split.
        mean, std: per-channel normalisation statistics of images scaled to [0, 1].
        shuffle_buffer: examples held by the shuffle buffer (the only shuffling: files are
            read in their stored order).
        download_url: where tfds downloads the data from (probed before downloading);
            None when tfds cannot download it (manual download).
        variable_size: the stored images differ in size, so they are transformed one by
            one before batching.
    """

    name = None
    tfds_name = None
    input_shape = None
    num_classes = None
    splits = {}
    mean = ()
    std = ()
    shuffle_buffer = 10_000
    download_url = None
    variable_size = False

    @property
    def train_split(self):
        return next(iter(self.splits))

    def info(self):
        """The `DatasetInfo` of this dataset."""
        return DatasetInfo(
            name=self.name,
            tfds_name=self.tfds_name,
            input_shape=tuple(self.input_shape),
            num_classes=self.num_classes,
            splits=dict(self.splits),
            mean=tuple(self.mean),
            std=tuple(self.std),
        )

    #: Where the last `examples` call read from (a tfds directory, or files), for messages.
    source = "nowhere yet"

    # -- checks where the data is read ---------------------------------------------------

    def check_image_shape(self, shape, where, expected=None):
        """Raises `DataFormatError` unless images of `shape` are what this dataset declares:
        `expected` (default `input_shape`; `None` entries match any size), or for
        `variable_size` datasets any height and width with `input_shape`'s channels."""
        shape = tuple(shape)
        if self.variable_size and expected is None:
            expected = (None, None, self.input_shape[-1])
        expected = tuple(self.input_shape if expected is None else expected)
        if len(shape) != len(expected) or any(
            e is not None and s is not None and s != e for s, e in zip(shape, expected)
        ):
            raise DataFormatError(
                f"{where} holds images of shape {_shape_text(shape)}, but {self.name}'s images "
                f"are {_shape_text(expected)} (rows x cols{' x channels' if len(expected) > 2 else ''}"
                f"); give the {self.name} files, or register a dataset of that shape with "
                "kerasbnn.data.register_dataset."
            )

    def check_labels(self, labels, where):
        """Raises `DataFormatError` unless `labels` (a numpy array) holds one integer label per
        example, each in `0 .. num_classes - 1`."""
        if labels.ndim != 1:
            raise DataFormatError(
                f"{where} holds {_shape_text(labels.shape[1:])} values per label, but "
                f"{self.name} needs one integer label per example (a 1-D array)."
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataFormatError(f"{where} holds labels of type {labels.dtype}, but "
                                  f"{self.name} needs integer labels.")
        bad = np.flatnonzero((labels < 0) | (labels >= self.num_classes))
        if bad.size:
            raise DataFormatError(
                f"{where} holds {bad.size} label(s) outside 0..{self.num_classes - 1} (the first: "
                f"{labels[bad[0]]} at example {bad[0]}); {self.name} has {self.num_classes} "
                "classes. The file is corrupt or of another dataset: download it again."
            )

    def check_tfds_info(self, builder, where):
        """Raises `DataFormatError` unless the image shape and the number of classes that a
        tensorflow-datasets copy declares are this dataset's (cheap: reads the metadata)."""
        keys = builder.info.supervised_keys or ("image", "label")
        image, label = (builder.info.features[key] for key in keys[:2])
        self.check_image_shape(image.shape, where)
        classes = getattr(label, "num_classes", None)
        if classes is not None and classes != self.num_classes:
            raise DataFormatError(
                f"{where} declares {classes} classes, but {self.name} has {self.num_classes}: "
                f"it holds another dataset; prepare {self.tfds_name} there again."
            )

    def check_examples(self, ds, split, keep=None):
        """Raises `DataFormatError` unless the unbatched examples `ds` (after `limit`) yield
        images of the declared shape and scalar integer labels, and, with `keep`, hold exactly
        `len(keep)` examples."""
        where = f"{self.name}'s {split!r} examples (read from {self.source})"
        image, label = ds.element_spec[:2]
        self.check_image_shape(image.shape.as_list(), where)
        if label.shape.rank != 0 or not label.dtype.is_integer:
            raise DataFormatError(f"{where} have labels of shape {label.shape} and type "
                                  f"{label.dtype.name}; expected one integer label per image.")
        count = int(ds.cardinality())
        if keep is not None and count >= 0 and count != len(keep):
            raise DataFormatError(
                f"{where} are {count}, but keep= has {len(keep)} entries, one per example: "
                f"make keep for {count} examples (e.g. validation_mask({count}, ...)), or "
                "lower limit= to the number of examples there are."
            )

    # -- sources -----------------------------------------------------------------------

    def how_to_get(self, data_dir):
        """Instructions appended to `DataNotFoundError` messages."""
        return (
            f"Prepare it with tensorflow-datasets where there is internet access "
            f"(python -c \"import tensorflow_datasets as tfds; tfds.builder('{self.tfds_name}', "
            f"data_dir='{tfds_data_dir(data_dir)}').download_and_prepare()\") and copy the "
            f"resulting {tfds_data_dir(data_dir)}/{self.tfds_name} directory to the same place "
            "on this machine, or pass data_dir= to a directory that holds a prepared copy."
        )

    def prepare(self, builder, data_dir):
        """Downloads and prepares `builder` if its source is reachable.

        Raises:
            DataNotFoundError: if downloads are disabled (`$KERASBNN_OFFLINE`), the download
                host cannot be reached or the download fails.
        """
        if downloads_disabled():
            raise DataNotFoundError(
                f"Dataset {self.name!r} is not prepared in {tfds_data_dir(data_dir)} and "
                f"downloads are disabled ({OFFLINE_ENV}={os.environ[OFFLINE_ENV]})."
            )
        if self.download_url is None or not host_reachable(self.download_url):
            raise DataNotFoundError(
                f"Dataset {self.name!r} is not prepared in {tfds_data_dir(data_dir)} and "
                f"{self.download_url or 'its source'} cannot be reached."
            )
        try:
            builder.download_and_prepare()
        except Exception as error:  # tfds raises many kinds (network, checksum, disk)
            raise DataNotFoundError(
                f"tensorflow-datasets could not download {self.name!r}: {error}."
            ) from error

    def tfds_examples(self, split, data_dir, shuffle_files, seed):
        """`(uint8 image, label)` examples of `split` from tensorflow-datasets.

        Raises:
            DataNotFoundError: if the dataset is not prepared and cannot be prepared.
        """
        import tensorflow_datasets as tfds  # noqa: PLC0415 (heavy; only needed here)

        directory = data_dir or os.environ.get("TFDS_DATA_DIR")  # as `tfds_data_dir` says
        with _quiet_tfds_warnings():
            builder = tfds.builder(self.tfds_name, data_dir=directory)
            if not builder.is_prepared():
                self.prepare(builder, data_dir)
        self.source = f"tensorflow-datasets' {self.tfds_name} in {tfds_data_dir(data_dir)}"
        self.check_tfds_info(builder, self.source)
        return builder.as_dataset(
            split=split,
            as_supervised=True,
            shuffle_files=shuffle_files,
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )

    def examples(self, split, data_dir=None, shuffle_files=False, seed=None, limit=None):
        """Unbatched `(uint8 image, label)` examples; the default reads them from tfds.

        Raises:
            DataNotFoundError: with `how_to_get` instructions, if tfds has no copy and
                cannot make one.
        """
        if limit is not None and "[" not in split:
            split = f"{split}[:{limit}]"
        try:
            return self.tfds_examples(split, data_dir, shuffle_files, seed)
        except DataFormatError:
            raise
        except DataNotFoundError as error:
            raise DataNotFoundError(f"{error.args[0]} {self.how_to_get(data_dir)}") from error

    # -- transforms ----------------------------------------------------------------------

    def augment(self, images, seed):
        """Training augmentation (identity by default).

        Args:
            images: float32 values in [0, 1]: a `(batch, *input_shape)` batch, or one image
                of any size when `variable_size`.
            seed: shape-`(2,)` integer seed of the stateless random ops.

        Returns:
            The augmented batch (or one `input_shape` image).
        """
        return images

    def evaluate_transform(self, image):
        """Deterministic transform of one float32 image in [0, 1] for evaluation."""
        return image

    def normalize(self, image):
        """x -> (x - mean) / std per channel."""
        return (image - tf.constant(self.mean, tf.float32)) / tf.constant(self.std, tf.float32)

    # -- pipeline ------------------------------------------------------------------------

    def load(self, split, batch_size, *, augment, shuffle, data_dir, seed, limit, drop_remainder,
             keep=None, index=False):
        """The batched pipeline; arguments as `kerasbnn.data.load`, which validates them.

        Returns:
            A batched, prefetched `tf.data.Dataset` of `(float32 images, int32 labels)`, with
            `int64 indices` as a third element when `index`.

        Raises:
            DataNotFoundError: if no source of the data is available.
            DataFormatError: if the examples are not what the dataset declares
                (`check_examples`).
        """
        # Files in their stored order, always: `keep` and `index` count examples by position,
        # which a per-epoch file shuffle would change on a dataset stored in several files
        # (the validation split would leak into training, cached rows would move to other
        # images), and a call with `index` must give the batches of the same call without it.
        ds = self.examples(split, data_dir=data_dir, shuffle_files=False, seed=seed, limit=limit)
        if limit is not None:
            ds = ds.take(limit)
        self.check_examples(ds, split, keep)
        ds = _keep_and_index(ds, keep, index)
        buffer = None
        if shuffle:
            buffer = self.shuffle_buffer if limit is None else min(limit, self.shuffle_buffer)
        ds, counter = epochs.with_seeds(ds, seed, buffer, seeded=augment or shuffle)
        if self.variable_size:
            ds = self._images(ds, batch_size, drop_remainder, augment)
        else:
            ds = self._batches(ds, batch_size, drop_remainder, augment)
        ds = ds.prefetch(tf.data.AUTOTUNE)
        return ds if counter is None else epochs.register(ds, counter)

    def _images(self, ds, batch_size, drop_remainder, augment):
        """`(example, seed)` pairs -> batches, transformed an image at a time (variable size)."""

        def transform_image(example, image_seed):
            image, label, *rest = example
            image = tf.image.convert_image_dtype(image, tf.float32)
            if augment:
                image = self.augment(image, image_seed)
            else:
                image = self.evaluate_transform(image)
            return (tf.ensure_shape(self.normalize(image), self.input_shape), label, *rest)

        ds = ds.map(transform_image, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        return ds.map(lambda images, labels, *rest: (images, tf.cast(labels, tf.int32), *rest))

    def _batches(self, ds, batch_size, drop_remainder, augment):
        """`(example, seed)` pairs -> batches, transformed a batch at a time (vectorised, with
        the batch's first seed)."""

        def transform_batch(batch, seeds):
            images, labels, *rest = batch
            images = tf.image.convert_image_dtype(images, tf.float32)
            if augment:
                images = self.augment(images, seeds[0])
            images = tf.ensure_shape(self.normalize(images), (None, *self.input_shape))
            return (images, tf.cast(labels, tf.int32), *rest)

        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        return ds.map(transform_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

