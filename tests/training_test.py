import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbnn import training


def _model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(rng):
    x = rng.normal(size=(64, 4)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0).astype("int32"))).batch(16)


class _CrashAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("simulated kill")


def test_fit_resumable_continues_after_a_crash(tmp_path, rng):
    data = _data(rng)
    model = _model()
    with pytest.raises(KeyboardInterrupt):
        training.fit_resumable(model, data, run_dir=str(tmp_path), name="m", epochs=4,
                               callbacks=[_CrashAt(2)], verbose=0)
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


def test_non_finite_loss_stops_with_message_and_keeps_checkpoint(tmp_path, rng):
    data = _data(rng)
    with pytest.raises(training.NonFiniteLossError, match=r"loss became nan at epoch 2.*backup"):
        training.fit_resumable(_model(), data, run_dir=str(tmp_path), name="m", epochs=3,
                               callbacks=[_PoisonWeightsAt()], verbose=0)
    assert os.path.isdir(tmp_path / "backup" / "m")  # last good state (end of epoch 1) kept


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
