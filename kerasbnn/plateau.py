"""Early stopping on validation accuracy that survives a resume: `StopOnPlateau`.

`kerasbnn.training.fit_resumable(..., patience=N)` (and the pipeline's `student.patience`,
`teachers.patience`) stops a fit once validation accuracy has not improved for `N` epochs
and gives the model back with its best epoch's weights. Its state (the best accuracy, its
epoch and its weights) goes into the same atomic `EpochBackup` as the model's, so a kill at
any point resumes exactly: a fit that had stopped trains no further epoch when run again.
"""

import keras
import numpy as np

#: Prefix of `StopOnPlateau`'s arrays inside an `EpochBackup` (`state.npz`).
STATE_PREFIX = "plateau_"


def validation_accuracy(logs):
    """An epoch's validation accuracy from its logs (Keras' dict, or a `CSVLogger` row without
    its empty cells): `val_accuracy`, else the one
    `val_*accuracy` key (a distiller's student metric, e.g. `val_student_accuracy`), else
    None (no validation data, or several candidates)."""
    logs = logs or {}
    if logs.get("val_accuracy") is not None:
        return float(logs["val_accuracy"])
    keys = [k for k in logs
            if k.startswith("val_") and k.endswith("accuracy") and logs[k] is not None]
    return float(logs[keys[0]]) if len(keys) == 1 else None


class StopOnPlateau(keras.callbacks.Callback):
    """Stops training once validation accuracy has not improved for `patience` epochs, and
    puts back the best epoch's weights when training ends (stopped or not).

    Like `keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max",
    restore_best_weights=True)`, with two differences: its state (`state_arrays`,
    `load_state`) is saved and restored with the run's backup, so a resumed fit goes on
    counting where it was; and a metric it cannot find is an error, not a warning.

    The learning-rate schedule is not shortened: under the pipeline's cosine decay, a fit
    that stops early stops before the rate reaches 0. Give it a long budget (`epochs`) and
    let `patience` end it.

    Args:
        patience: epochs without improvement (strictly above the best so far) before the
            fit stops, >= 1.
    """

    def __init__(self, patience):
        super().__init__()
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) \
                or patience < 1:
            raise ValueError(f"patience must be an integer >= 1 (epochs without improvement), "
                             f"received {patience!r}; use None to train every epoch.")
        self.patience = int(patience)
        self.best, self.best_epoch, self.last_epoch = -np.inf, -1, -1
        self.best_weights = None

    @property
    def plateaued(self):
        """True once `patience` epochs have passed since the best one."""
        return self.best_epoch >= 0 and self.last_epoch - self.best_epoch >= self.patience

    def on_epoch_end(self, epoch, logs=None):
        value = validation_accuracy(logs)
        if value is None:
            raise ValueError(
                "patience stops training on validation accuracy, but this fit logs none "
                f"(logged: {sorted(logs or {})}); pass validation_data (the pipeline: set "
                "data.val_split), or set patience to None.")
        self.last_epoch = epoch
        if value > self.best:
            self.best, self.best_epoch = value, epoch
            self.best_weights = [keras.ops.convert_to_numpy(w) for w in self.model.weights]
        if self.plateaued:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None and self.best_epoch != self.last_epoch:
            self.model.set_weights(self.best_weights)

    def state_arrays(self):
        """The state to back up, as arrays named with `STATE_PREFIX`."""
        arrays = {f"{STATE_PREFIX}best": np.array(self.best),
                  f"{STATE_PREFIX}epochs": np.array([self.best_epoch, self.last_epoch])}
        for i, weight in enumerate(self.best_weights or []):
            arrays[f"{STATE_PREFIX}w{i}"] = weight
        return arrays

    def load_state(self, arrays):
        """Restores what `state_arrays` gave (missing: a backup made without patience, and
        the count starts afresh)."""
        if f"{STATE_PREFIX}best" not in arrays:
            return
        self.best = float(arrays[f"{STATE_PREFIX}best"])
        self.best_epoch, self.last_epoch = (int(e) for e in arrays[f"{STATE_PREFIX}epochs"])
        count = len([k for k in arrays if k.startswith(f"{STATE_PREFIX}w")])
        self.best_weights = [arrays[f"{STATE_PREFIX}w{i}"] for i in range(count)] or None
