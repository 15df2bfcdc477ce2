"""Seeded epochs: a pass over the training data is a function of `(seed, epoch)` alone.

`kerasbnn.data.load(..., seed=s)` shuffles and augments each pass over the data from the pair
`(s, pass number)`, never from a random state that only a running iterator holds. The pass
number is a counter that the dataset keeps (a `tf.Variable`) and advances as each pass begins,
so a plain `model.fit(ds, epochs=n)` still sees a new order every epoch.

Why: TensorFlow's own `shuffle(..., reshuffle_each_iteration=True)` draws each pass's order
from a generator that restarts with every new dataset, so a fit resumed at epoch k from its
backup would train epoch k on epoch 0's order, and an interrupted arm of a comparison would
no longer be paired with the others. `start_at(dataset, epoch)` sets the counter instead:
`kerasbnn.training.fit_resumable` calls it at the start of every epoch (`kerasbnn.training.
EpochOrder`), so epoch k of a fit sees the same batches whether or not the fit was
interrupted, two fits on one dataset object see the same orders, and an extra look at the
data before an epoch (Keras peeks at one batch under a `tf.distribute` strategy) shifts
nothing. Its epochs are whole passes; a plain `model.fit`
with `steps_per_epoch` shorter than a pass counts passes, not epochs.

Datasets loaded with `seed=None` keep TensorFlow's stateful reshuffling (a new order on every
run, when no global seed is set); `start_at` cannot continue their order. Under
`tf.data.experimental.enable_debug_mode()` the passes still follow their counter, but their
orders also depend on the global seed.

A resumed fit ends with the weights of the uninterrupted one where training is deterministic:
on CPU as here (tests/data/epochs_test.py); on GPU with op determinism; not with Dropout,
whose random state is not backed up.
"""

import weakref

import tensorflow as tf

# The counter of each dataset that `load` (or a kerasbnn wrapper of its result) returned.
_COUNTERS = weakref.WeakKeyDictionary()


def seeded_passes(seed, one_pass):
    """A dataset whose n-th pass (0, 1, ...) is `one_pass(pass_seed)`, and its counter.

    Args:
        seed: the dataset's integer seed.
        one_pass: a function of a shape-`(2,)` int64 seed tensor returning one pass's
            `tf.data.Dataset` (shuffled and zipped with augmentation seeds from it, with
            `reshuffle_each_iteration=False`: its order depends on the seed alone).

    Returns:
        `(dataset, counter)`: pass n uses the seed pair `stateless_uniform([2], (seed, n))`;
        `counter` is the int64 `tf.Variable` holding the last pass begun (-1 before the
        first), which `register` attaches to the dataset that `load` returns.
    """
    # Created eagerly, never inside a traced function; under a `tf.distribute` strategy's
    # scope it is that strategy's variable (tested with MirroredStrategy on two logical CPUs).
    with tf.init_scope():
        counter = tf.Variable(-1, dtype=tf.int64, trainable=False, name="kerasbnn_epoch")
    seed = tf.constant(seed, tf.int64)

    def begin_pass(_):
        return counter.assign_add(1)

    def pass_of(epoch):  # full-range int64s, a function of (seed, epoch) only
        # Traced in a graph of its own, whose graph-level seed (copied from the global one)
        # is removed: tf.data's ops then take the tensor seeds as they are, so the order
        # depends on `seed` alone (and a global seed of 0 raises nothing). In a trace,
        # `set_seed` sets that graph's seed only; eagerly (tf.data debug mode) it is skipped.
        if not tf.executing_eagerly():
            tf.random.set_seed(None)
        return one_pass(tf.random.stateless_uniform(
            [2], tf.stack([seed, epoch]), minval=None, maxval=None, dtype=tf.int64))

    start = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).map(begin_pass)
    return start.flat_map(pass_of), counter


def with_seeds(ds, seed, buffer, seeded):
    """`ds`'s examples, shuffled through `buffer` examples (None: in order), each zipped with
    a shape-`(2,)` seed of the stateless augmentations, and the pass counter.

    With a seed (and anything random), each pass is a function of `(seed, pass)`
    (`seeded_passes`): a resumed fit continues the order. Without one, TensorFlow's
    stateful reshuffling; the counter is then None. `ImageDataset.load`'s source of order.
    """

    def one_pass(pass_seed, rerandomize=False):
        examples = ds
        if buffer is not None:
            examples = ds.shuffle(buffer, seed=pass_seed[0], reshuffle_each_iteration=rerandomize)
        seeds = tf.data.Dataset.random(seed=pass_seed[1], rerandomize_each_iteration=rerandomize)
        return tf.data.Dataset.zip((examples, seeds.batch(2)))

    if seed is None or not seeded:
        return one_pass((None, None) if seed is None else (seed, seed), rerandomize=True), None
    passes, counter = seeded_passes(seed, one_pass)
    size = ds.cardinality()
    if size >= 0:  # a flat_map forgets how many examples a pass holds; fit's progress needs it
        passes = passes.apply(tf.data.experimental.assert_cardinality(size))
    return passes, counter


def register(dataset, counter):
    """Attaches `counter` (from `seeded_passes`) to `dataset`; returns `dataset`."""
    _COUNTERS[dataset] = counter
    return dataset


def _counter(dataset):
    """`dataset`'s pass counter, or None (not a seeded dataset, or not a dataset at all)."""
    return _COUNTERS.get(dataset) if isinstance(dataset, tf.data.Dataset) else None


def derived(dataset, source):
    """`dataset`, made from `source` by a per-batch map, keeps `source`'s counter (if any):
    `start_at(dataset, k)` then sets the pass of `source`'s shuffle. Returns `dataset`."""
    counter = _counter(source)
    if counter is not None:
        _COUNTERS[dataset] = counter
    return dataset


def start_at(dataset, epoch):
    """Makes `dataset`'s next pass the one of `epoch` (0-based); returns False when
    `dataset` has no seeded epochs (not from `kerasbnn.data.load` with a seed, or unshuffled
    and unaugmented), whose order cannot be continued."""
    counter = _counter(dataset)
    if counter is None:
        return False
    counter.assign(int(epoch) - 1)
    return True


def is_seeded(dataset):
    """Whether `dataset`'s passes are seeded epochs that `start_at` can set."""
    return _counter(dataset) is not None
