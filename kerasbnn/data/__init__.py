"""Datasets as batched `tf.data` pipelines, through tensorflow-datasets.

```python
train = kerasbnn.data.load("cifar10", "train", batch_size=128, seed=0)
test = kerasbnn.data.load("cifar10", "test", batch_size=256)
kerasbnn.data.info("cifar10").num_classes  # 10
```

Names: `fashion_mnist` (tfds, else the local idx files of `$KERASBNN_DATA_DIR`), `cifar10`,
`cifar100`, `imagenet2012` (tfds manual download). Each module registers its datasets in
`kerasbnn.data.registry.DATASETS`.
"""

import numbers

import numpy as np

from kerasbnn.data import cifar, epochs, fashion_mnist, imagenet
from kerasbnn.data.base import (
    DataFormatError,
    DataNotFoundError,
    DatasetInfo,
    ImageDataset,
    split_name,
)
from kerasbnn.data.registry import DATASETS, register_dataset

__all__ = [
    "DATASETS",
    "DataFormatError",
    "DataNotFoundError",
    "DatasetInfo",
    "ImageDataset",
    "cifar",
    "count",
    "epochs",
    "fashion_mnist",
    "imagenet",
    "info",
    "load",
    "names",
    "register_dataset",
    "validation_mask",
]


def names():
    """The dataset names `load` accepts, sorted."""
    return DATASETS.keys()


def info(name):
    """Static facts about dataset `name`: input shape, number of classes, split sizes.

    Args:
        name: one of `names()`.

    Returns:
        A `DatasetInfo` (fields `name`, `tfds_name`, `input_shape`, `num_classes`, `splits`,
        `mean`, `std`; also readable as `info["num_classes"]`).

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    return DATASETS.get(name).info()


def _check_positive_int(value, argument, allow_none=False):
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"{argument} must be a positive integer{' or None' if allow_none else ''}, "
            f"received {value!r}."
        )


def _dataset_split(name, split):
    """The `ImageDataset` of `name`, once `split` is known to be one of its splits."""
    dataset = DATASETS.get(name)
    if not isinstance(split, str) or split_name(split) not in dataset.splits:
        raise ValueError(
            f"Unknown split {split!r} for dataset {name!r}. Valid splits: "
            f"{', '.join(dataset.splits)} (tfds slicing such as 'train[:10%]' is allowed)."
        )
    return dataset


def _check_load_arguments(batch_size, limit, seed):
    """Raises a ValueError naming the argument of `load` that is not valid."""
    _check_positive_int(batch_size, "batch_size")
    _check_positive_int(limit, "limit", allow_none=True)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"seed must be an integer or None, received {seed!r}.")


def load(name, split="train", batch_size=128, *, augment=None, shuffle=None, data_dir=None,
         seed=None, limit=None, drop_remainder=False, keep=None, index=False):
    """A batched, prefetched `tf.data.Dataset` of `(float32 image, int32 label)`.

    Images are scaled to [0, 1], augmented for training (each dataset module documents its
    recipe: pad-and-crop + flip for CIFAR and Fashion-MNIST, random resized crop + flip for
    ImageNet), resized for evaluation where needed (ImageNet: resize 256, center crop 224),
    and normalised per channel: x = (x - mean) / std.

    Args:
        name: one of `names()`: `"fashion_mnist"`, `"cifar10"`, `"cifar100"`,
            `"imagenet2012"`.
        split: `"train"`, `"test"` (`"validation"` for ImageNet); tfds slicing such as
            `"train[:10%]"` works when the data comes from tfds.
        batch_size: examples per batch.
        augment: apply the training augmentation; default True for the training split only.
        shuffle: shuffle the examples (seeded, reshuffled each epoch, through a buffer of
            the dataset's `shuffle_buffer` examples); default True for the training split.
            tfds files are always read in their stored order, so that `keep` and `index`
            name the same examples in every epoch.
        data_dir: tensorflow-datasets data directory (default: `$TFDS_DATA_DIR` or
            `~/tensorflow_datasets`); ImageNet's manual files go in its
            `downloads/manual`. Fashion-MNIST's local idx files are looked for in
            `$KERASBNN_DATA_DIR` instead (default `/usr/share/datasets/fashion-mnist`).
        seed: seeds shuffling and augmentation: the same batches on every run, pass k
            (epoch k) from `(seed, k)` alone (`kerasbnn.data.epochs`); None: random.
        limit: keep only the first `limit` examples of the split (quick runs and tests).
        drop_remainder: drop the last, smaller batch.
        keep: a boolean array over the examples (after `limit`): example i is used iff
            `keep[i]`; `validation_mask` makes one that carves a validation split.
        index: also yield each example's position among the examples used (after `limit`
            and `keep`, before shuffling), int64 of shape `(batch,)`: the row of a per-example
            table such as cached teacher logits (`kerasbnn.distill.attach_teacher_logits`).
            Shuffling and augmentation are those of the same call without `index`: for one
            seed the batches hold the same images in the same order.

    Returns:
        A `tf.data.Dataset` yielding `(images, labels)` with images of shape
        `(batch, *info(name).input_shape)`, float32, and labels of shape `(batch,)`, int32;
        `(images, labels, indices)` with `index`.

    Raises:
        ValueError: for an unknown name or split (the message lists the valid ones), or a
            non-positive `batch_size` or `limit`.
        DataNotFoundError: (a `FileNotFoundError`) if the data is neither prepared, nor
            downloadable, nor available locally; the message says how to get it.
        DataFormatError: (a `DataNotFoundError` and a `ValueError`) if the data is there
            but not what the dataset declares: images of another shape, labels outside
            `0 .. num_classes - 1`, a corrupt or truncated file (gzip checksums are
            checked), or, with `keep`, another number of examples than `len(keep)`. The
            message names the file or directory and what was expected.
    """
    dataset = _dataset_split(name, split)
    _check_load_arguments(batch_size, limit, seed)
    is_train = split_name(split) == dataset.train_split
    return dataset.load(split, batch_size, augment=is_train if augment is None else bool(augment),
                        shuffle=is_train if shuffle is None else bool(shuffle), data_dir=data_dir,
                        seed=seed, limit=limit, drop_remainder=drop_remainder, keep=keep,
                        index=bool(index))


def count(name, split="train", *, limit=None, data_dir=None):
    """How many examples `load(name, split, limit=limit)` reads from the data found here
    (a partial copy may hold fewer than `info(name).splits` says), or None when the source
    cannot tell without reading every example.

    Raises:
        ValueError: an unknown name or split, or a bad `limit` (as `load`).
        DataNotFoundError: the data is not there.
        DataFormatError: the data is not what the dataset declares.
    """
    dataset = _dataset_split(name, split)
    _check_positive_int(limit, "limit", allow_none=True)
    ds = dataset.examples(split, data_dir=data_dir, limit=limit)
    if limit is not None:
        ds = ds.take(limit)
    dataset.check_examples(ds, split)
    examples = int(ds.cardinality())
    return examples if examples >= 0 else None


def validation_mask(count, fraction, seed):
    """Which of `count` examples form a validation split of `fraction` of them.

    A fixed random choice of `round(fraction * count)` examples (at least 1, at most
    `count - 1`), drawn with numpy from `seed` alone: the same arguments give the same split on
    every machine and run. `load(..., keep=mask)` reads the validation split and
    `keep=~mask` the rest, which are disjoint.

    Returns:
        A boolean numpy array of length `count`, True for the validation examples.

    Raises:
        ValueError: if `count` < 2 or `fraction` is not in (0, 1).
    """
    if count < 2 or not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_mask needs count >= 2 and 0 < fraction < 1, received "
                         f"count={count!r}, fraction={fraction!r}.")
    size = min(max(1, round(fraction * count)), count - 1)
    mask = np.zeros(count, bool)
    mask[np.random.default_rng(seed).permutation(count)[:size]] = True
    return mask
