import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbnn import training
from tests.helpers import KillAt


def _model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(rng):
    x = rng.normal(size=(64, 4)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0).astype("int32"))).batch(16)


def test_fit_resumable_continues_after_a_crash(tmp_path, rng):
    data = _data(rng)
    model = _model()
    with pytest.raises(KeyboardInterrupt):
        training.fit_resumable(model, data, run_dir=str(tmp_path), name="m", epochs=4,
                               callbacks=[KillAt(2)], verbose=0)
    assert os.path.isdir(tmp_path / "backup" / "m")
    history = training.fit_resumable(_model(), data, run_dir=str(tmp_path), name="m", epochs=4, verbose=0)
    assert len(history.history["loss"]) == 2  # epochs 3 and 4 only
    rows = (tmp_path / "logs" / "m.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2", "3"]
    assert not os.path.exists(tmp_path / "backup" / "m")  # removed once the fit completed
    assert os.listdir(tmp_path / "tensorboard" / "m")


class _PoisonWeightsAt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            # The output layer: TensorFlow's graph-mode fused MatMul+ReLU (oneDNN) turns a NaN
            # into 0 on some CPUs (seen on an AVX-512/AMX Xeon), so a poisoned hidden layer
            # gives a finite loss there.
            kernel = self.model.layers[-1].kernel
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))


def _poison(model):
    kernel = model.layers[-1].kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))


class _PoisonAtEpochBegin(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            _poison(self.model)


class _PoisonAfterLastBatch(keras.callbacks.Callback):
    """Poisons the weights after the last batch of epoch 2, whose losses were all finite."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 3:
            _poison(self.model)


def test_non_finite_loss_stops_with_message_and_keeps_checkpoint(tmp_path, rng):
    data = _data(rng)
    with pytest.raises(training.NonFiniteLossError, match=r"loss became nan at epoch 2.*backup") as info:
        training.fit_resumable(_model(), data, run_dir=str(tmp_path), name="m", epochs=3,
                               callbacks=[_PoisonWeightsAt()], verbose=0, advice="ADVICE.")
    backup = os.path.join(str(tmp_path), "backup", "m")
    assert f"end of epoch 1 (the last finished one) is kept in {backup}" in str(info.value)
    assert str(info.value).endswith("ADVICE.")
    assert os.path.isdir(backup)  # last good state (end of epoch 1) kept
    # The hint is true: a rerun (lower learning rate) continues from epoch 2.
    model = _model()
    model.optimizer.learning_rate.assign(1e-3)
    history = training.fit_resumable(model, data, run_dir=str(tmp_path), name="m", epochs=3, verbose=0)
    assert len(history.history["loss"]) == 2


def test_non_finite_loss_in_the_first_epoch_names_no_backup(tmp_path, rng):
    with pytest.raises(training.NonFiniteLossError, match="at epoch 1, batch 1") as info:
        training.fit_resumable(_model(), _data(rng), run_dir=str(tmp_path), name="m", epochs=2,
                               callbacks=[_PoisonAtEpochBegin(0)], verbose=0)
    message = str(info.value)
    assert "No epoch of this fit had finished, so nothing of it was kept" in message
    assert "backup" not in message
    assert not os.path.exists(tmp_path / "backup" / "m" / "training_metadata.json")


def test_non_finite_weights_at_an_epoch_end_are_not_backed_up(tmp_path, rng):
    with pytest.raises(training.NonFiniteLossError, match="weights became NaN or infinite in epoch 2") as info:
        training.fit_resumable(_model(), _data(rng), run_dir=str(tmp_path), name="m", epochs=3,
                               callbacks=[_PoisonAfterLastBatch()], verbose=0)
    assert "end of epoch 1 (the last finished one)" in str(info.value)
    history = training.fit_resumable(_model(), _data(rng), run_dir=str(tmp_path), name="m",
                                     epochs=3, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()


def test_distiller_nan_becomes_a_non_finite_loss_error(tmp_path):
    from kerasbnn.distill import MultiTeacherDistiller

    def tiny(name):
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(3, name="logits")(inputs), name=name)

    teacher = tiny("teacher")
    teacher.get_layer("logits").kernel.assign(np.full((4, 3), np.inf, "float32"))
    distiller = MultiTeacherDistiller(tiny("student"), teacher, feature_taps=None)
    distiller.compile(optimizer="sgd")
    x = np.ones((16, 4), "float32")
    data = tf.data.Dataset.from_tensor_slices((x, np.zeros(16, "int32"))).batch(8)
    with pytest.raises(training.NonFiniteLossError) as info:
        training.fit_resumable(distiller, data, run_dir=str(tmp_path), name="d", epochs=1,
                               verbose=0, advice="ADVICE.")
    message = str(info.value)
    assert message.startswith("MultiTeacherDistiller: kl_loss (KL to the fused teacher logits) is "
                              "NaN or infinite")
    assert "(NaN) at epoch 1, batch 1" in message and "nothing of it was kept" in message
    assert message.endswith("ADVICE.") and "Traceback" not in message and "[[" not in message


def test_save_atomically_replaces_only_on_success(tmp_path, monkeypatch):
    path = tmp_path / "m.keras"
    model = _model()
    training.save_atomically(model, path)
    before = path.read_bytes()

    def broken_save(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        training.save_atomically(model, path)
    assert path.read_bytes() == before


def test_cosine_adam_decays_from_the_rate_to_zero_over_the_budget():
    from kerasbnn.training import cosine_adam

    def schedule(optimizer):
        return keras.optimizers.schedules.deserialize(optimizer.get_config()["learning_rate"])

    decay = schedule(cosine_adam(2e-3, epochs=3, steps_per_epoch=10))
    assert float(decay(0)) == pytest.approx(2e-3)
    assert float(decay(15)) == pytest.approx(1e-3, rel=1e-5)
    assert float(decay(30)) == pytest.approx(0.0, abs=1e-9)
    assert schedule(cosine_adam(1e-3, epochs=0, steps_per_epoch=0)).decay_steps == 1


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def test_kept_backup_lets_a_rerun_train_no_epoch_until_it_is_discarded(tmp_path, rng):
    # The pipeline keeps the backup until the trained model and its results are saved: a kill
    # between the fit's end and the save loses no epoch.
    data = _data(rng)
    model = _model()
    training.fit_resumable(model, data, run_dir=str(tmp_path), name="m", epochs=2, verbose=0,
                           keep_backup=True)
    assert os.path.exists(tmp_path / "backup" / "m" / training.BACKUP_FILE)
    again = _model()
    history = training.fit_resumable(again, data, run_dir=str(tmp_path), name="m", epochs=2,
                                     verbose=0, keep_backup=True)
    assert history.history == {}  # no epoch trained twice
    for a, b in zip(_weights(model), _weights(again)):
        np.testing.assert_array_equal(a, b)
    assert int(again.optimizer.iterations) == int(model.optimizer.iterations) == 8
    training.discard_backup(str(tmp_path), "m")
    assert not os.path.exists(tmp_path / "backup" / "m")


@pytest.mark.parametrize("content, name", [(b"PK\x03\x04 truncated", training.BACKUP_FILE),
                                           (b"\x89HDF old format", "latest.weights.h5")])
def test_unreadable_backup_is_discarded_with_a_one_line_notice(tmp_path, rng, content, name):
    backup = tmp_path / "backup" / "m"
    backup.mkdir(parents=True)
    (backup / name).write_bytes(content)
    lines = []
    history = training.fit_resumable(_model(), _data(rng), run_dir=str(tmp_path), name="m",
                                     epochs=2, verbose=0, print_fn=lines.append)
    assert len(history.history["loss"]) == 2  # from the first epoch
    assert len(lines) == 1 and lines[0].startswith(f"[resume] the backup {backup} ")
    assert lines[0].endswith("discarded; this step trains from its first epoch.")


def test_backup_of_another_model_is_discarded_before_any_weight_changes(tmp_path, rng):
    data = _data(rng)
    training.fit_resumable(_model(), data, run_dir=str(tmp_path), name="m", epochs=1, verbose=0,
                           keep_backup=True)
    wider = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16), keras.layers.Dense(3)])
    wider.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    lines = []
    assert training.restore_backup(wider, str(tmp_path / "backup" / "m"), lines.append) == 0
    assert "is corrupt or from another model (ValueError: " in lines[0]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_a_failed_write_leaves_the_old_file_and_names_the_new_one(tmp_path):
    import errno

    path = tmp_path / "state.npz"
    path.write_bytes(b"old")
    # The temporary file is /dev/full, where every write fails as on a full disk (ENOSPC).
    os.symlink("/dev/full", f"{path}.partial")
    with pytest.raises(OSError) as info:
        training.write_atomically(path, b"new" * 1000)
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["state.npz"]


def _stop_on_divergence(losses, epoch_end=None, **options):
    stop = training.StopOnDivergence("nowhere", advice="ADVICE.", **options)
    stop.on_epoch_begin(0)
    for batch, loss in enumerate(losses):
        stop.on_train_batch_begin(batch)
        stop.on_train_batch_end(batch, {"loss": loss})
    if epoch_end is not None:
        stop.on_epoch_end(0, {"loss": epoch_end})


def test_divergence_rule_fires_far_above_the_first_loss_and_not_on_a_slow_start():
    # A slow start: the loss climbs to 100x its first value, then comes down.
    _stop_on_divergence([2.3, 2.5, 5.0, 50.0, 230.0, 60.0, 3.0], epoch_end=3.0)
    _stop_on_divergence([0.001, 0.5, 900.0], epoch_end=900.0)  # the floor: 1000 x max(first, 1)
    _stop_on_divergence([2.3] + [1e4] * 9)  # 9 batches above 2300: not yet
    with pytest.raises(training.DivergenceError) as info:
        _stop_on_divergence([2.3] + [1e4] * 10)
    assert str(info.value).startswith("loss 1e+04 is more than 1000 times its first value 2.3 ")
    assert "at epoch 1, batch 11; training diverged and stopped" in str(info.value)
    assert str(info.value).endswith("ADVICE.")
    with pytest.raises(training.DivergenceError, match="batch 3"):
        _stop_on_divergence([2.3, 9e12, 6e24], epoch_end=6e24)  # a short epoch ends above
    with pytest.raises(training.DivergenceError):
        _stop_on_divergence([2.3] + [50.0] * 3, epoch_end=50.0, factor=10)


def _exploding():
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e6),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_fit_resumable_stops_a_diverging_fit_unless_told_not_to(tmp_path, rng):
    data = tf.data.Dataset.from_tensor_slices(
        (rng.normal(size=(256, 4)).astype("float32"), rng.integers(0, 3, 256))).batch(16)
    with pytest.raises(training.DivergenceError, match="epoch 1, batch") as info:
        training.fit_resumable(_exploding(), data, run_dir=str(tmp_path), name="m", epochs=3,
                               verbose=0)
    assert "nothing of it was kept" in str(info.value)
    assert not os.path.exists(tmp_path / "backup" / "m" / training.BACKUP_FILE)
    history = training.fit_resumable(_exploding(), data, run_dir=str(tmp_path), name="n",
                                     epochs=1, verbose=0, divergence=None)
    assert history.history["loss"][0] > 1e4  # what the check stops


def test_distiller_names_the_term_whose_weight_overflowed(tmp_path):
    from kerasbnn.distill import MultiTeacherDistiller

    def tiny(name):
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(3, name="logits")(inputs), name=name)

    distiller = MultiTeacherDistiller(tiny("student"), tiny("teacher"), feature_taps=None,
                                      kl_weight=1.0, ce_weight=1e38)
    distiller.compile(optimizer="sgd")
    x = np.full((16, 4), 50.0, "float32")
    data = tf.data.Dataset.from_tensor_slices((x, np.arange(16) % 3)).batch(8)
    with pytest.raises(training.NonFiniteLossError) as info:
        training.fit_resumable(distiller, data, run_dir=str(tmp_path), name="d", epochs=1,
                               verbose=0, advice=lambda what: f"ADVICE for {what[:21]}")
    message = str(info.value)
    assert message.startswith(
        "MultiTeacherDistiller: student_loss (cross-entropy with the labels) is finite, but "
        "times ce_weight=1e+38 it is NaN or infinite")
    assert "Lower that weight" in message and "learning rate" not in message
    assert message.endswith("ADVICE for MultiTeacherDistiller")
