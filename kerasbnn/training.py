"""Training runs with durable artefacts: resumable `fit`, atomic saves, non-finite stops.

Used by the command line and the pipeline; in a notebook, plain `model.fit` does the same job.
"""

import math
import os

import keras
import tensorflow as tf


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the last good checkpoint was kept."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `NonFiniteLossError` at the first batch whose loss is NaN or infinite.

    Unlike `keras.callbacks.TerminateOnNaN`, which ends training silently, the error says
    where it happened and where the last good checkpoint is (the `BackupAndRestore` state
    of the last finished epoch, which an exception leaves in place).
    """

    def __init__(self, checkpoint_hint=""):
        super().__init__()
        self.checkpoint_hint = checkpoint_hint
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        for key, value in (logs or {}).items():
            if key.endswith("loss") and not math.isfinite(float(value)):
                raise NonFiniteLossError(
                    f"{key} became {float(value)} at epoch {self._epoch + 1}, batch {batch + 1}; "
                    f"training stopped. {self.checkpoint_hint}Lower the learning rate or check the "
                    "inputs for NaNs, then run again with --resume."
                )


def save_atomically(model, path):
    """`model.save(path)` through a temporary file, so `path` is never half-written."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path[: -len(".keras")] + ".partial.keras"
    model.save(tmp)
    os.replace(tmp, path)


def fit_resumable(model, train_ds, *, run_dir, name, epochs, validation_data=None, callbacks=(),
                  verbose="auto"):
    """`model.fit` that logs to `<run_dir>/logs/<name>.csv` and TensorBoard, and resumes.

    The model must be compiled. State is backed up after every epoch under
    `<run_dir>/backup/<name>` by `keras.callbacks.BackupAndRestore`; calling this again
    after a crash or a kill continues from the last finished epoch. The backup is removed
    when the fit completes.

    Returns:
        The `keras.callbacks.History` of this call.
    """
    backup_dir = os.path.join(run_dir, "backup", name)
    log_dir = os.path.join(run_dir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    resuming = os.path.isdir(backup_dir)
    csv_logger = keras.callbacks.CSVLogger(os.path.join(log_dir, f"{name}.csv"), append=resuming)
    callbacks = [
        keras.callbacks.BackupAndRestore(backup_dir),
        csv_logger,
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard", name)),
        StopOnNonFiniteLoss(f"The last good state (end of the last finished epoch) is in {backup_dir}. "),
        *callbacks,
    ]
    # A tf.data pipeline shuffles itself; Keras warns if fit is asked to shuffle it too.
    shuffle = not isinstance(train_ds, tf.data.Dataset)
    try:
        return model.fit(train_ds, validation_data=validation_data, epochs=epochs, shuffle=shuffle,
                         callbacks=callbacks, verbose=verbose)
    finally:
        # CSVLogger closes its file in on_train_end, which an exception skips.
        log_file = getattr(csv_logger, "csv_file", None)
        if log_file is not None and not log_file.closed:
            log_file.close()
