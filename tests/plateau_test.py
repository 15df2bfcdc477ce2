"""Early stopping that survives a resume: `kerasbnn.plateau` and `fit_resumable(patience=)`."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbnn import config as run_config
from kerasbnn import plateau, teacher_cache, training
from kerasbnn.run import checks
from tests.helpers import KillAt


def _model(learning_rate):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _data(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 4)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0).astype("int32"))).batch(16)


def _log_epochs(tmp_path, name="m"):
    rows = (tmp_path / "logs" / f"{name}.csv").read_text().strip().splitlines()
    return [int(r.split(",")[0]) for r in rows[1:]]


@pytest.mark.parametrize("accuracies, patience, stop_after, best", [
    ([0.5, 0.7, 0.6, 0.65], 2, 3, 1),
    ([0.5, 0.5, 0.5], 2, 2, 0),  # equal is no improvement
    ([0.4, 0.6, 0.5, 0.7, 0.6, 0.69], 3, None, 3),
])
def test_it_stops_after_patience_epochs_without_improvement_and_puts_back_the_best(
        accuracies, patience, stop_after, best):
    model = _model(1e-2)
    stopper = plateau.StopOnPlateau(patience)
    stopper.set_model(model)
    snapshots = []
    for epoch, accuracy in enumerate(accuracies):
        model.stop_training = False
        weights = [np.full(w.shape, epoch + 1.0, "float32") for w in model.weights]
        model.set_weights(weights)
        snapshots.append(weights)
        stopper.on_epoch_end(epoch, {"loss": 1.0, "val_accuracy": accuracy})
        if model.stop_training:
            break
    assert (epoch if model.stop_training else None) == stop_after
    stopper.on_train_end()
    for got, want in zip(model.get_weights(), snapshots[best]):
        np.testing.assert_array_equal(got, want)


def test_a_distillers_student_accuracy_is_read_and_a_missing_one_is_an_error():
    assert plateau.validation_accuracy({"val_student_accuracy": 0.8, "val_loss": 1}) == 0.8
    assert plateau.validation_accuracy({"accuracy": 0.8}) is None
    stopper = plateau.StopOnPlateau(1)
    stopper.set_model(_model(1e-2))
    with pytest.raises(ValueError, match="validation_data"):
        stopper.on_epoch_end(0, {"loss": 1.0, "accuracy": 0.5})


@pytest.mark.parametrize("patience", [0, -1, 1.5, True, "3"])
def test_patience_must_be_a_positive_integer(patience):
    with pytest.raises(ValueError, match="patience must be an integer >= 1"):
        plateau.StopOnPlateau(patience)


@pytest.mark.parametrize("seed", [0, 1])
def test_fit_resumable_stops_at_a_plateau_and_a_resumed_fit_counts_on(tmp_path, seed):
    """At learning rate 0 the validation accuracy never improves after its first epoch: with
    patience 2 the fit ends after epoch 2, whether or not it was killed in between, and a
    rerun of the finished fit trains nothing."""
    data, run_dir = _data(seed), str(tmp_path)
    fit = dict(run_dir=run_dir, name="m", epochs=10, validation_data=data, verbose=0,
               patience=2, keep_backup=True)
    with pytest.raises(KeyboardInterrupt):
        training.fit_resumable(_model(0.0), data, callbacks=[KillAt(1, at_end=True)], **fit)
    assert _log_epochs(tmp_path) == [0, 1]
    history = training.fit_resumable(_model(0.0), data, **fit)
    assert history.epoch == [2]
    assert _log_epochs(tmp_path) == [0, 1, 2]
    again = training.fit_resumable(_model(0.0), data, **fit)
    assert again.epoch == [] and _log_epochs(tmp_path) == [0, 1, 2]


@pytest.mark.parametrize("seed", [0, 1])
def test_fit_resumable_gives_back_the_best_epochs_weights(tmp_path, seed):
    """Whatever epoch was best, the model that comes back scores the best logged accuracy."""
    data = _data(seed)
    model = _model(0.5)  # a rate high enough that validation accuracy moves both ways
    history = training.fit_resumable(model, data, run_dir=str(tmp_path), name="m", epochs=8,
                                     validation_data=data, verbose=0, patience=3)
    best = max(history.history["val_accuracy"])
    assert model.evaluate(data, verbose=0, return_dict=True)["accuracy"] == pytest.approx(best)


def test_without_patience_a_backup_is_unchanged_and_every_epoch_trains(tmp_path):
    data = _data(0)
    history = training.fit_resumable(_model(0.0), data, run_dir=str(tmp_path), name="m",
                                     epochs=4, validation_data=data, verbose=0,
                                     keep_backup=True)
    assert history.epoch == [0, 1, 2, 3]
    with np.load(tmp_path / "backup" / "m" / training.BACKUP_FILE) as saved:
        assert not [k for k in saved.files if k.startswith(plateau.STATE_PREFIX)]


def test_patience_without_a_validation_split_is_refused_before_anything_runs(tmp_path):
    config = run_config.from_dict({"run_dir": str(tmp_path / "run"),
                                   "data": {"name": "fashion_mnist", "val_split": None},
                                   "student": {"patience": 3}})
    with pytest.raises(run_config.ConfigError, match=r"student.patience .* data.val_split"):
        checks._check_patience(config)
    assert not os.path.exists(tmp_path / "run")


def test_teacher_patience_is_part_of_the_cache_key_only_when_set():
    plain = run_config.from_dict({})
    assert "patience" not in teacher_cache.teacher_key(plain, 32)[1]
    patient = run_config.from_dict({"teachers": {"patience": 3}})
    assert teacher_cache.teacher_key(patient, 32)[0] != teacher_cache.teacher_key(plain, 32)[0]
    assert teacher_cache.teacher_key(patient, 4)[0] != teacher_cache.teacher_key(plain, 4)[0]


@pytest.mark.parametrize("patience", [None, 4])
def test_student_patience_reaches_every_students_fit(monkeypatch, patience):
    from kerasbnn import methods
    from kerasbnn.run_dir import RunDir

    seen = {}
    monkeypatch.setattr(training, "fit_resumable", lambda *a, **kw: seen.update(kw))
    values = run_config.from_dict({"student": {"patience": patience}})
    job = methods.StudentJob(values, RunDir("unused"), None, _data(0), None, {}, build=None,
                             evaluate=None)
    job.fit(_model(1e-2), "none")
    assert seen["patience"] == patience and seen["name"] == "student_none"
