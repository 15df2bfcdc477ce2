"""Seeded epochs (`kerasbnn.data.epochs`): each pass is a function of (seed, epoch), so a fit
resumed from its backup trains on the batches of the uninterrupted fit."""

import keras
import numpy as np
import pytest

from kerasbnn import data, training
from kerasbnn.data import epochs
from tests.helpers import KillAt


def _passes(ds, count):
    return [[(b[0].numpy(), b[1].numpy()) for b in ds] for _ in range(count)]


def _same(one, other):
    return len(one) == len(other) and all(
        np.array_equal(x, xo) and np.array_equal(y, yo) for (x, y), (xo, yo) in zip(one, other))


@pytest.mark.parametrize("seed", [0, 7])
def test_a_dataset_started_at_epoch_k_gives_pass_k(seed):
    options = dict(batch_size=64, seed=seed, limit=512)  # augmented: crops and flips
    uninterrupted = _passes(data.load("fashion_mnist", "train", **options), 4)
    assert not _same(uninterrupted[1], uninterrupted[2])  # a new order every pass
    for k in (1, 3):
        fresh = data.load("fashion_mnist", "train", **options)
        assert epochs.start_at(fresh, k)
        assert _same(_passes(fresh, 1)[0], uninterrupted[k])


def test_unseeded_or_unrandomised_datasets_have_no_epochs_to_set():
    unseeded = data.load("fashion_mnist", "train", 64, limit=256)
    in_order = data.load("fashion_mnist", "train", 64, seed=1, limit=256, shuffle=False,
                         augment=False)
    assert not epochs.start_at(unseeded, 2) and not epochs.start_at(in_order, 2)
    assert not epochs.start_at(np.zeros(3), 2)


def test_the_pass_counter_keeps_the_cardinality_that_fit_and_schedules_read():
    ds = data.load("fashion_mnist", "train", 100, seed=1, limit=512, drop_remainder=True)
    assert int(ds.cardinality()) == 5


def _model(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.parametrize("seed, kill_at", [(0, 1), (3, 2)])
def test_a_resumed_fit_ends_with_the_weights_of_the_uninterrupted_one(tmp_path, seed, kill_at):
    def train_ds():  # a fresh dataset per process, as after a restart
        return data.load("fashion_mnist", "train", 64, seed=seed, limit=512)

    whole = _model(seed)
    training.fit_resumable(whole, train_ds(), run_dir=str(tmp_path / "whole"), name="m",
                           epochs=3, verbose=0)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        training.fit_resumable(_model(seed), train_ds(), run_dir=str(cut), name="m", epochs=3,
                               callbacks=[KillAt(kill_at)], verbose=0)
    resumed = _model(seed + 100)  # its weights come from the backup
    history = training.fit_resumable(resumed, train_ds(), run_dir=str(cut), name="m", epochs=3,
                                     verbose=0)
    assert len(history.history["loss"]) == 3 - kill_at
    for w, r in zip(whole.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(r, w, rtol=1e-6, atol=1e-7)


def test_two_fits_on_one_dataset_object_see_the_same_batches(tmp_path):
    ds = data.load("fashion_mnist", "train", 64, seed=5, limit=256)
    first, second = _model(5), _model(5)
    for name, model in (("a", first), ("b", second)):
        training.fit_resumable(model, ds, run_dir=str(tmp_path), name=name, epochs=2, verbose=0)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


def test_a_resumed_fit_says_when_its_dataset_cannot_continue_its_order(tmp_path):
    ds = data.load("fashion_mnist", "train", 64, limit=256)  # no seed
    with pytest.raises(KeyboardInterrupt):
        training.fit_resumable(_model(1), ds, run_dir=str(tmp_path), name="m", epochs=2,
                               callbacks=[KillAt(1)], verbose=0)
    notes = []
    training.fit_resumable(_model(1), ds, run_dir=str(tmp_path), name="m", epochs=2,
                           verbose=0, print_fn=notes.append)
    assert len(notes) == 1 and "seed=" in notes[0] and "epochs 2+" in notes[0]


def test_the_order_depends_on_the_seed_alone_not_on_the_global_seed():
    def first_pass(global_seed):
        keras.utils.set_random_seed(global_seed)  # 0 once made tf.data compare tensor seeds
        return _passes(data.load("fashion_mnist", "train", 64, seed=2, limit=256), 1)[0]

    assert _same(first_pass(0), first_pass(11))


class _PeekFirst(keras.callbacks.Callback):
    """An extra pass opened before the first epoch, as Keras does under a strategy."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_train_begin(self, logs=None):
        next(iter(self.dataset))


def test_an_extra_look_at_the_data_before_the_fit_shifts_no_epoch(tmp_path):
    def fit(name, peek):
        ds = data.load("fashion_mnist", "train", 64, seed=4, limit=256)
        model = _model(4)
        training.fit_resumable(model, ds, run_dir=str(tmp_path), name=name, epochs=2,
                               callbacks=[_PeekFirst(ds)] if peek else [], verbose=0)
        return model.get_weights()

    for a, b in zip(fit("plain", False), fit("peeked", True)):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("first_pass, epoch", [(0, 2), (3, 0), (2, 1)])
def test_a_later_phase_starts_at_the_pass_after_the_phases_before_it(first_pass, epoch):
    uninterrupted = _passes(data.load("fashion_mnist", "train", 64, seed=6, limit=256), 4)
    ds = data.load("fashion_mnist", "train", 64, seed=6, limit=256)
    training.EpochOrder(ds, first_pass).on_epoch_begin(epoch)
    assert _same(_passes(ds, 1)[0], uninterrupted[first_pass + epoch])
