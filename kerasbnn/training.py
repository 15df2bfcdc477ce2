"""Training runs with durable artefacts: resumable `fit`, atomic saves, non-finite stops.

Used by the command line and the pipeline; in a notebook, plain `model.fit` does the same job.
"""

import math
import os
import re
import time

import keras
import numpy as np
import tensorflow as tf


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the message says what of the run is kept."""


DEFAULT_ADVICE = (
    "Lower the learning rate or check the inputs for NaNs, then call fit_resumable again with "
    "the same run_dir and name."
)

# `tf.debugging.check_numerics` (MultiTeacherDistiller's finiteness checks) ends its message so.
_CHECK_NUMERICS = re.compile(r"([^\n]*?) : Tensor had (NaN|Inf) values")
_STATUS_PREFIX = re.compile(r"^\s*(\(\d+\)\s*)?([A-Z_]+:\s*)?")


def _has_backup(backup_dir):
    return os.path.isdir(backup_dir) and bool(os.listdir(backup_dir))


def state_after_stop(backup_dir, epoch):
    """What a stopped fit left: the backup of the last finished epoch, or nothing."""
    if epoch > 0 and _has_backup(backup_dir):
        return (f"The state at the end of epoch {epoch} (the last finished one) is kept in "
                f"{backup_dir}; resuming continues from there. ")
    return ("No epoch of this fit had finished, so nothing of it was kept: resuming starts it "
            "again from the beginning. ")


def _all_finite(model):
    return all(np.isfinite(keras.ops.convert_to_numpy(w)).all()
               for w in model.weights if np.issubdtype(w.dtype, np.floating))


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `NonFiniteLossError` at the first batch whose loss is NaN or infinite, and at
    the end of an epoch whose weights are no longer finite.

    Unlike `keras.callbacks.TerminateOnNaN`, which ends training silently, the error says
    where it happened and what was kept: the `BackupAndRestore` state of the last finished
    epoch (an exception leaves it in place), or nothing when no epoch finished. Put it before
    `BackupAndRestore` in the callback list, so that non-finite weights are never backed up.

    Args:
        backup_dir: the `BackupAndRestore` directory of the fit.
        advice: what to do next, appended to the message.
    """

    def __init__(self, backup_dir, advice=DEFAULT_ADVICE):
        super().__init__()
        self.backup_dir = backup_dir
        self.advice = advice
        self.epoch = 0
        self.batch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.batch = batch

    def error(self, what):
        """The `NonFiniteLossError` for `what` went wrong in the current batch."""
        return NonFiniteLossError(
            f"{what} at epoch {self.epoch + 1}, batch {self.batch + 1}; training stopped. "
            f"{state_after_stop(self.backup_dir, self.epoch)}{self.advice}"
        )

    def on_train_batch_end(self, batch, logs=None):
        for key, value in (logs or {}).items():
            if key.endswith("loss") and not math.isfinite(float(value)):
                raise self.error(f"{key} became {float(value)}")

    def on_epoch_end(self, epoch, logs=None):
        if not _all_finite(self.model):
            raise NonFiniteLossError(
                f"the weights became NaN or infinite in epoch {epoch + 1} (its losses were "
                f"finite), so they were not backed up; training stopped. "
                f"{state_after_stop(self.backup_dir, epoch)}{self.advice}")


class EpochClock(keras.callbacks.Callback):
    """Adds `epoch_seconds` (the epoch's wall time, its validation included) and
    `epoch_steps` (the training batches it ran) to each epoch's logs.

    `fit_resumable` puts it before its `CSVLogger`, so every training log of a run says how
    long each epoch took and how many batches it saw: accuracy against minutes and images
    (`benchmarks/time_to_accuracy.py`). A resumed fit times its own epochs only; the epochs
    logged before the interruption keep their times.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self.start
            logs["epoch_steps"] = self.steps


def cosine_adam(learning_rate, epochs, steps_per_epoch):
    """Adam whose rate decays from `learning_rate` to 0 (cosine) over `epochs` epochs: the
    optimizer every teacher and student of a run trains with."""
    steps = max(1, epochs * steps_per_epoch)
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps))


def save_atomically(model, path):
    """`model.save(path)` through a temporary file, so `path` is never half-written."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path[: -len(".keras")] + ".partial.keras"
    model.save(tmp)
    os.replace(tmp, path)


def fit_resumable(model, train_ds, *, run_dir, name, epochs, validation_data=None, callbacks=(),
                  verbose="auto", advice=DEFAULT_ADVICE):
    """`model.fit` that logs to `<run_dir>/logs/<name>.csv` and TensorBoard, and resumes.

    The CSV log holds each epoch's metrics and its wall time and batches (`EpochClock`).

    The model must be compiled. State is backed up after every epoch under
    `<run_dir>/backup/<name>` by `keras.callbacks.BackupAndRestore`; calling this again
    after a crash or a kill continues from the last finished epoch. The backup is removed
    when the fit completes.

    Args:
        advice: what to do after a non-finite loss, appended to the error's message.

    Returns:
        The `keras.callbacks.History` of this call.

    Raises:
        NonFiniteLossError: a loss (or, for models that check their own steps such as
            `MultiTeacherDistiller`, a loss term or gradient) became NaN or infinite; the
            message says which, where, what was kept, and `advice`.
    """
    backup_dir = os.path.join(run_dir, "backup", name)
    log_path = os.path.join(run_dir, "logs", f"{name}.csv")  # a name may hold a folder
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    resuming = os.path.isdir(backup_dir)
    csv_logger = keras.callbacks.CSVLogger(log_path, append=resuming)
    stop = StopOnNonFiniteLoss(backup_dir, advice)
    callbacks = [
        stop,  # before BackupAndRestore: non-finite weights are never backed up
        keras.callbacks.BackupAndRestore(backup_dir),
        EpochClock(),  # before the CSVLogger, which writes what it adds
        csv_logger,
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard", name)),
        *callbacks,
    ]
    # A tf.data pipeline shuffles itself; Keras warns if fit is asked to shuffle it too.
    shuffle = not isinstance(train_ds, tf.data.Dataset)
    try:
        return model.fit(train_ds, validation_data=validation_data, epochs=epochs, shuffle=shuffle,
                         callbacks=callbacks, verbose=verbose)
    except tf.errors.InvalidArgumentError as error:
        found = _CHECK_NUMERICS.search(str(error))
        if found is None:
            raise
        what = _STATUS_PREFIX.sub("", found.group(1)).strip()
        raise stop.error(f"{what} ({found.group(2)})") from None
    finally:
        # CSVLogger closes its file in on_train_end, which an exception skips.
        log_file = getattr(csv_logger, "csv_file", None)
        if log_file is not None and not log_file.closed:
            log_file.close()
