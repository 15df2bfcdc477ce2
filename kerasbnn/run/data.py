"""The run's data and seeds: `run_data` makes the splits (`data.val_split` carved from the
training images), `RunData.train` gives the same batches for the same seed (paired arms),
and `seed_everything` seeds Python, numpy and TensorFlow."""

import dataclasses

import keras

from kerasbnn import data as datasets
from kerasbnn.run.teachers import evaluate


def note_smaller_data(config, info, train_ds, print_fn):
    """Says so when the data found holds fewer training images than the config asks for (a
    partial local copy): training then uses what is there. (With `data.val_split`, the split
    is carved from `data.train_limit` images, and a smaller copy fails when read.)"""
    d = config.data
    if d.val_split is not None:
        return
    wanted = (d.train_limit or info.splits[list(info.splits)[0]]) // d.batch_size
    steps = int(train_ds.cardinality())
    if 0 <= steps < wanted:
        print_fn(f"[data] note: {d.name} here holds fewer training images than data.train_limit="
                 f"{d.train_limit} asks for: {steps} batches of {d.batch_size} instead of "
                 f"{wanted}; training uses them all.")


@dataclasses.dataclass
class RunData:
    """The run's data splits.

    Attributes:
        val: the validation batches: `data.val_split` of the training images when set (the
            pipeline chooses on them), else the test split.
        test: the test split (`data.val_limit` images): the accuracies a report gives.
        keep: which of the training images are trained on (None: all of them).
    """

    config: object
    val: object
    test: object
    keep: object = None

    def train(self, seed, index=False):
        """Fresh training batches, shuffled and augmented from `seed`: a new dataset gives
        the same batches in the same order for the same seed (paired arms); with `index`,
        each image's index in `plain()` comes third."""
        d = self.config.data
        return datasets.load(d.name, "train", d.batch_size, augment=d.augment, seed=seed,
                             limit=d.train_limit, drop_remainder=True, keep=self.keep,
                             index=index)

    def plain(self, batch_size=None):
        """The training images in order, without augmentation (BatchNorm recomputation), in
        batches of `batch_size` (default `data.batch_size`)."""
        d = self.config.data
        return datasets.load(d.name, "train", batch_size or d.batch_size, augment=False,
                             shuffle=False, limit=d.train_limit, keep=self.keep)

    def val_result(self, model):
        """`{"val_accuracy": ...}` on the validation split, or `{}` without one."""
        return {"val_accuracy": evaluate(model, self.val)} if self.keep is not None else {}


def run_data(config, info):
    """The `RunData` of `config`: `data.val_split` carves the validation split from the
    training images (`kerasbnn.data.validation_mask`, seeded by `data.split_seed`)."""
    d = config.data
    test = datasets.load(d.name, "test", d.batch_size, limit=d.val_limit)
    if d.val_split is None:
        return RunData(config, val=test, test=test)
    count = d.train_limit or info.splits[list(info.splits)[0]]
    held = datasets.count(d.name, "train", limit=d.train_limit)
    if held is not None and held < count:  # the split is carved from exactly `count` images
        raise datasets.DataFormatError(
            f"data.val_split={d.val_split} is carved from the first {count} training images "
            f"(data.train_limit={d.train_limit}), but {d.name} here holds {held} "
            f"({datasets.DATASETS.get(d.name).source}): set data.train_limit to at most {held}, "
            "or provide the whole dataset.")
    mask = datasets.validation_mask(count, d.val_split, d.split_seed)
    val = datasets.load(d.name, "train", d.batch_size, augment=False, shuffle=False,
                        limit=d.train_limit, keep=mask)
    return RunData(config, val=val, test=test, keep=~mask)


def seed_everything(config):
    """Seeds Python, numpy and TensorFlow with `config.seed`, and with `deterministic: true`
    turns on TensorFlow's op determinism (measured: the progressive method repeats bit for
    bit only with `TF_NUM_INTEROP_THREADS=1` as well; docs/guide/pipeline.md)."""
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
