"""Training runs with durable artefacts: resumable `fit`, atomic saves, stops on NaN and on
divergence.

Used by the command line and the pipeline; in a notebook, plain `model.fit` does the same job.
Every file written here is written to a temporary name and moved into place (`os.replace`),
so a kill, a full disk or Ctrl-C leaves either the old file or the new one, never half of one.
"""

import gc
import io
import math
import os
import re
import shutil
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from kerasbnn.data import epochs as seeded_epochs
from kerasbnn.plateau import STATE_PREFIX, StopOnPlateau
from kerasbnn.run import layout


class TrainingFailedError(RuntimeError):
    """Training stopped because it failed (`NonFiniteLossError`, `DivergenceError`); the
    message says where, what of the run is kept, and what to do."""


class NonFiniteLossError(TrainingFailedError):
    """Training produced a NaN or infinite loss; the message says what of the run is kept."""


class DivergenceError(TrainingFailedError):
    """The training loss grew far above its first value (`StopOnDivergence`'s rule) without
    becoming NaN; the message says what of the run is kept."""


#: `StopOnDivergence`: the loss may grow to this many times its first logged value (at least 1).
DIVERGENCE_FACTOR = 1000.0
#: `StopOnDivergence`: consecutive batches above that before training stops (or an epoch's end).
DIVERGENCE_PATIENCE = 10
#: The file of an `EpochBackup` in its folder.
BACKUP_FILE = "state.npz"


DEFAULT_ADVICE = (
    "Lower the learning rate or check the inputs for NaNs, then call fit_resumable again with "
    "the same run_dir and name."
)

# `tf.debugging.check_numerics` (MultiTeacherDistiller's finiteness checks) ends its message so.
_CHECK_NUMERICS = re.compile(r"([^\n]*?) : Tensor had (NaN|Inf) values")
_STATUS_PREFIX = re.compile(r"^\s*(\(\d+\)\s*)?([A-Z_]+:\s*)?")


def _has_backup(backup_dir):
    return os.path.exists(os.path.join(backup_dir, BACKUP_FILE))


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
    where it happened and what was kept: the `EpochBackup` of the last finished epoch (an
    exception leaves it in place), or nothing when no epoch finished. Put it before
    `EpochBackup` in the callback list, so that non-finite weights are never backed up.

    Args:
        backup_dir: the `EpochBackup` directory of the fit.
        advice: what to do next, appended to the message: a string, or a function of what
            went wrong (the start of the message) returning one.
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

    def error(self, what, kind=NonFiniteLossError, stopped="training stopped"):
        """The error (`kind`) for `what` went wrong in the current batch."""
        advice = self.advice(what) if callable(self.advice) else self.advice
        return kind(f"{what} at epoch {self.epoch + 1}, batch {self.batch + 1}; {stopped}. "
                    f"{state_after_stop(self.backup_dir, self.epoch)}{advice}")

    def on_train_batch_end(self, batch, logs=None):
        for key, value in (logs or {}).items():
            if key.endswith("loss") and not math.isfinite(float(value)):
                raise self.error(f"{key} became {float(value)}")

    def on_epoch_end(self, epoch, logs=None):
        if not _all_finite(self.model):
            what = f"the weights became NaN or infinite in epoch {epoch + 1}"
            advice = self.advice(what) if callable(self.advice) else self.advice
            raise NonFiniteLossError(
                f"{what} (its losses were finite), so they were not backed up; training "
                f"stopped. {state_after_stop(self.backup_dir, epoch)}{advice}")


class StopOnDivergence(StopOnNonFiniteLoss):
    """Raises `DivergenceError` when the training loss has grown far above where it started.

    The rule: let `first` be the `loss` logged after the first batch of this fit and
    `limit = factor * max(first, 1)` (the floor of 1 keeps a fit resumed at a tiny loss from
    stopping on ordinary noise). Keras logs, after each batch, the mean loss of the epoch so
    far; training stops when that value is above `limit` after `patience` consecutive
    batches, or when an epoch ends with its mean above `limit`. A healthy fit, even one that
    starts slowly, stays within a few times its first loss (a cross-entropy starts near
    ln(classes)); a learning rate that is far too high takes the loss to 1e6 and beyond
    within an epoch. Put it before `EpochBackup`, so that a diverged epoch is not backed up.

    Args:
        backup_dir: the `EpochBackup` directory of the fit.
        advice: as in `StopOnNonFiniteLoss`.
        factor: how many times its first value the loss may reach (> 1).
        patience: consecutive batches above the limit before training stops (>= 1).
    """

    def __init__(self, backup_dir, advice=DEFAULT_ADVICE, factor=DIVERGENCE_FACTOR,
                 patience=DIVERGENCE_PATIENCE):
        super().__init__(backup_dir, advice)
        if not factor > 1 or not patience >= 1:
            raise ValueError(f"factor must be > 1 and patience >= 1, received {factor!r}, "
                             f"{patience!r}.")
        self.factor, self.patience = float(factor), int(patience)
        self.first, self.above = None, 0

    def _check(self, loss, at_epoch_end):
        if loss is None or not math.isfinite(float(loss)):
            return  # StopOnNonFiniteLoss's case
        loss = float(loss)
        if self.first is None:
            self.first = loss
        limit = self.factor * max(self.first, 1.0)
        self.above = self.above + 1 if loss > limit else 0
        if self.above >= self.patience or (at_epoch_end and loss > limit):
            raise self.error(
                f"loss {loss:.3g} is more than {self.factor:g} times its first value "
                f"{self.first:.3g} (the divergence rule of kerasbnn.training.StopOnDivergence)",
                kind=DivergenceError, stopped="training diverged and stopped")

    def on_train_batch_end(self, batch, logs=None):
        self._check((logs or {}).get("loss"), at_epoch_end=False)

    def on_epoch_end(self, epoch, logs=None):
        self._check((logs or {}).get("loss"), at_epoch_end=True)


class EpochBackup(keras.callbacks.Callback):
    """Backs up the training state at the end of every epoch, atomically: the model's weights,
    the optimizer's variables (its step count, so a learning-rate schedule goes on where it
    was) and the number of finished epochs, in one `<backup_dir>/state.npz` written to a
    temporary name and moved into place. A kill, a full disk or Ctrl-C while it writes
    leaves the previous epoch's backup; `restore_backup` reads it back.

    The backup is not removed when the fit ends: remove it (`discard_backup`) once what the
    fit made is saved, so that a kill in between loses nothing.
    """

    def __init__(self, backup_dir, plateau=None):
        super().__init__()
        self.backup_dir = os.fspath(backup_dir)
        self.plateau = plateau  # a StopOnPlateau whose state is backed up with the model's

    def on_epoch_end(self, epoch, logs=None):
        arrays = {"epoch": np.array(epoch + 1)}
        for prefix, variables in zip("wo", _state_variables(self.model)):
            arrays.update({f"{prefix}{i}": keras.ops.convert_to_numpy(v)
                           for i, v in enumerate(variables)})
        if self.plateau is not None:
            arrays.update(self.plateau.state_arrays())
        buffer = io.BytesIO()  # a failed write is then a plain OSError, naming the file
        np.savez(buffer, **arrays)
        os.makedirs(self.backup_dir, exist_ok=True)
        write_atomically(os.path.join(self.backup_dir, BACKUP_FILE), buffer.getvalue())


def _state_variables(model):
    """`(model weights, optimizer variables)` in their (deterministic) order."""
    optimizer = model.optimizer
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    return list(model.weights), list(optimizer.variables if optimizer is not None else [])


def write_atomically(path, data):
    """Writes the bytes `data` to `<path>.partial` and moves it to `path`: `path` holds the
    old content or the new one, never part of it. A failed write removes the temporary file
    and raises an `OSError` that names `path`."""
    tmp = f"{path}.partial"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as error:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise OSError(error.errno, error.strerror, path) from None
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def restore_backup(model, backup_dir, print_fn=print, plateau=None):
    """Loads the `EpochBackup` in `backup_dir` into the compiled, built `model` (and, given
    one, the state of the `kerasbnn.plateau.StopOnPlateau` saved with it); returns the
    number of epochs it had finished (0: no backup).

    A backup that cannot be read, or that does not match `model` (a truncated file, one an
    older kerasbnn wrote, another architecture), is removed with a one-line notice through
    `print_fn`, and 0 is returned: the fit starts from its first epoch.
    """
    path = os.path.join(backup_dir, BACKUP_FILE)
    if not os.path.exists(path):
        foreign = os.path.isdir(backup_dir) and [
            n for n in os.listdir(backup_dir) if os.path.isfile(os.path.join(backup_dir, n))]
        if foreign:  # e.g. keras.callbacks.BackupAndRestore's files, or a stray .partial
            _discard(backup_dir, foreign, "holds no state.npz", print_fn)
        return 0
    variables = [v for group in _state_variables(model) for v in group]
    try:
        with open(path, "rb") as f, np.load(f) as saved:
            arrays = {k: saved[k] for k in saved.files}
        epoch = int(arrays.pop("epoch"))
        extra = {k: arrays.pop(k) for k in list(arrays) if k.startswith(STATE_PREFIX)}
        names = [f"{p}{i}" for p, group in zip("wo", _state_variables(model))
                 for i in range(len(group))]
        if sorted(arrays) != sorted(names):
            raise ValueError(f"{len(arrays)} arrays for {len(names)} variables")
        for name, variable in zip(names, variables):
            if tuple(arrays[name].shape) != tuple(variable.shape):
                raise ValueError(f"{variable.path} has shape {tuple(variable.shape)}, the "
                                 f"backup {tuple(arrays[name].shape)}")
    except Exception as error:  # any failure to read it means the backup is unusable
        _discard(backup_dir, [BACKUP_FILE], f"is corrupt or from another model "
                 f"({type(error).__name__}: {error})", print_fn)
        return 0
    for name, variable in zip(names, variables):
        variable.assign(arrays[name])
    if plateau is not None:
        plateau.load_state(extra)
    return epoch


def _discard(backup_dir, files, why, print_fn):
    print_fn(f"[resume] the backup {backup_dir} {why}: discarded; this step trains from its "
             "first epoch.")
    for name in files:
        os.remove(os.path.join(backup_dir, name))


def discard_backup(run_dir, name):
    """Removes `<run_dir>/backup/<name>`, once what its fit made is saved."""
    shutil.rmtree(os.path.join(run_dir, layout.backup(name)), ignore_errors=True)


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
    """`model.save(path)` through a temporary file, so `path` is never half-written (the
    temporary `.partial.keras` is removed when the save fails; a failed write raises an
    `OSError` that names `path`)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path[: -len(".keras")] + ".partial.keras"
    failure = None
    hook, sys.unraisablehook = sys.unraisablehook, lambda unraisable: None
    try:  # Keras' zip writer, once its file failed, complains again when collected: quiet
        try:
            model.save(tmp)
        except OSError as error:
            failure = error if error.errno is None else OSError(error.errno, error.strerror, path)
        if failure is not None:
            gc.collect()
    except BaseException:  # e.g. Ctrl-C
        failure = True
        raise
    finally:
        sys.unraisablehook = hook
        if failure is not None and os.path.exists(tmp):
            os.remove(tmp)
    if failure is not None:
        raise failure
    os.replace(tmp, path)


def _stop_callbacks(backup_dir, advice, divergence):
    """The callbacks that stop a failed fit, before the backup."""
    stop = StopOnNonFiniteLoss(backup_dir, advice)
    if divergence is None:
        return stop, [stop]
    return stop, [stop, StopOnDivergence(backup_dir, advice, factor=divergence)]


def _fit_callbacks(order, stops, backup_dir, csv_logger, tensorboard_dir, callbacks, plateau):
    """Every callback of `fit_resumable`, in the order they must run, the caller's last."""
    return [
        order,  # first: it sets the pass before the epoch's iterator opens
        *stops,  # before the backup: non-finite or diverged weights are never backed up
        *([plateau] if plateau is not None else []),  # its state goes into the backup
        EpochBackup(backup_dir, plateau),
        EpochClock(),  # before the CSVLogger, which writes what it adds
        csv_logger,
        keras.callbacks.TensorBoard(tensorboard_dir),
        *callbacks,
    ]


def _fit(model, train_ds, validation_data, epochs, initial_epoch, callbacks, verbose, stop,
         csv_logger):
    """`model.fit` from `initial_epoch`; a failed finiteness check becomes `stop`'s error."""
    try:  # a tf.data pipeline shuffles itself; Keras warns if fit is asked to shuffle it too
        return model.fit(train_ds, validation_data=validation_data, epochs=epochs,
                         shuffle=not isinstance(train_ds, tf.data.Dataset),
                         callbacks=callbacks, verbose=verbose,
                         initial_epoch=min(initial_epoch, epochs))
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


class EpochOrder(keras.callbacks.Callback):
    """Starts epoch e of a fit on a seeded dataset (`kerasbnn.data.epochs`) at pass
    `first_pass + e`, before Keras opens that epoch's iterator: a fit resumed at epoch k
    sees the batches of the uninterrupted one, two fits on one dataset see the same ones,
    and an extra look at the data (Keras peeks at one batch under a `tf.distribute`
    strategy) shifts nothing. A schedule's later phase passes the epochs before it as
    `first_pass`, so it sees new orders. Does nothing on other datasets."""

    def __init__(self, dataset, first_pass=0):
        super().__init__()
        self.dataset, self.first_pass = dataset, int(first_pass)

    def on_epoch_begin(self, epoch, logs=None):
        seeded_epochs.start_at(self.dataset, self.first_pass + epoch)


def _note_order(train_ds, initial_epoch, print_fn):
    """Says when a resumed fit's dataset cannot continue its order (not seeded epochs)."""
    if initial_epoch > 0 and not seeded_epochs.is_seeded(train_ds):
        print_fn(f"[resume] epochs {initial_epoch + 1}+ see this dataset's order from its "
                 "first pass again: load the training data with kerasbnn.data.load(..., "
                 "seed=...) for a resumed fit to continue the uninterrupted fit's batches.")


def fit_resumable(model, train_ds, *, run_dir, name, epochs, validation_data=None, callbacks=(),
                  verbose="auto", advice=DEFAULT_ADVICE, divergence=DIVERGENCE_FACTOR,
                  keep_backup=False, patience=None, first_pass=0, print_fn=print):
    """`model.fit` that logs to `<run_dir>/logs/<name>.csv` and TensorBoard, and resumes.

    The CSV log holds each epoch's metrics and its wall time and batches (`EpochClock`).

    Epoch k trains on pass `first_pass + k` of a seeded `train_ds` (`kerasbnn.data.load`
    with a seed; `kerasbnn.data.epochs`), also when resumed at k (`EpochOrder`).

    The model must be compiled. State is backed up after every epoch under
    `<run_dir>/backup/<name>` by `EpochBackup` (atomically); calling this again after a
    crash, a kill or Ctrl-C continues from the last finished epoch (a backup that cannot be
    read is discarded with a notice, and the fit starts again).

    Args:
        advice: what to do after a non-finite or diverging loss, appended to the error's
            message (a string, or a function of what went wrong).
        divergence: `StopOnDivergence`'s factor, or None to train on whatever the loss does.
        keep_backup: keep the backup when the fit completes (a later call trains no epoch)
            until `discard_backup`, once the model is saved: a kill in between loses nothing.
        patience: stop once validation accuracy has not improved for this many epochs, and
            give the model back with its best epoch's weights (`kerasbnn.plateau.StopOnPlateau`,
            resumed with the backup: a fit that had stopped trains nothing more); None
            (the default) trains every epoch and keeps the last one's weights.
        first_pass: the pass of a seeded `train_ds` that epoch 0 trains on: 0 for a fit of
            its own; a later phase of a schedule on the same data passes the epochs of the
            phases before it, so that it sees new orders (and, resumed, its own).
        print_fn: where the notices about a discarded backup or an order that cannot be
            continued go.

    Returns:
        The `keras.callbacks.History` of this call.

    Raises:
        NonFiniteLossError: a loss (or, for models that check their own steps such as
            `MultiTeacherDistiller`, a loss term or gradient) became NaN or infinite.
        DivergenceError: the loss grew past `divergence` times its first value. Either
            message says which, where, what was kept, and `advice`.
    """
    backup_dir = os.path.join(run_dir, layout.backup(name))  # a name may hold a folder
    log_path = os.path.join(run_dir, layout.log(name))
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    plateau = None if patience is None else StopOnPlateau(patience)
    initial_epoch = restore_backup(model, backup_dir, print_fn, plateau)
    _note_order(train_ds, initial_epoch, print_fn)
    if plateau is not None and plateau.plateaued:
        epochs = initial_epoch  # it had stopped: train nothing, give back the best weights
    csv_logger = keras.callbacks.CSVLogger(log_path, append=initial_epoch > 0)
    stop, stops = _stop_callbacks(backup_dir, advice, divergence)
    callbacks = _fit_callbacks(EpochOrder(train_ds, first_pass), stops, backup_dir, csv_logger,
                               os.path.join(run_dir, layout.tensorboard(name)), callbacks,
                               plateau)
    history = _fit(model, train_ds, validation_data, epochs, initial_epoch, callbacks, verbose,
                   stop, csv_logger)
    if not keep_backup:
        shutil.rmtree(backup_dir, ignore_errors=True)
    return history
