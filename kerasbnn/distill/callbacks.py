"""Callbacks of multi-teacher distillation."""

import csv
import os

import keras

from kerasbnn.distill.fusion import importance_key
from kerasbnn.distill.plots import plot_delta_history, read_delta_csv

__all__ = ["DeltaHistory"]


class DeltaHistory(keras.callbacks.Callback):
    """Records the learned teacher importances (`deltas()`: MAD's fusion coefficients delta,
    CMT-KD's softmax(pi)) of a `MultiTeacherDistiller` or `CollaborativeDistiller` as
    training goes.

    Each row holds `epoch` and one `importance/<point>/t<m>` column (`importance_key`, the
    name of the training logs) per distillation point and teacher (after softmax). A fresh
    run starts with the values before training (epoch -1); then `per_epoch` rows are
    recorded in every epoch, evenly spaced over its steps, the last at its end: the row after
    step b of 0-based epoch e has epoch e - 1 + (b + 1) / steps, so end-of-epoch rows have
    integer epochs. The CSV is rewritten (atomically) at every row, so an interrupted run
    keeps its history; with `append=True` a resumed run (e.g. under
    `kerasbnn.training.fit_resumable`) continues the existing file. At the end of
    training the history is plotted like MAD's Fig. 3 (`plot_delta_history`).

    Args:
        csv_path: file to write, or None to keep the rows in memory only (`rows`).
        plot_path: image written at the end of training, or None.
        append: continue an existing `csv_path` instead of starting a new one.
        per_epoch: rows per epoch (>= 1); more show delta moving within a short run.

    Raises:
        ValueError: at `on_train_begin` if the model is not a `MultiTeacherDistiller`.
    """

    def __init__(self, csv_path=None, plot_path=None, append=False, per_epoch=1):
        super().__init__()
        if isinstance(per_epoch, bool) or not isinstance(per_epoch, int) or per_epoch < 1:
            raise ValueError(f"per_epoch must be an integer >= 1, received {per_epoch!r}.")
        self.per_epoch = per_epoch
        self._epoch, self._marks = 0, {}
        self.csv_path = None if csv_path is None else os.fspath(csv_path)
        self.plot_path = None if plot_path is None else os.fspath(plot_path)
        self.append = bool(append)
        self.rows = []

    def on_train_begin(self, logs=None):
        if not callable(getattr(self.model, "deltas", None)):
            raise ValueError(
                "DeltaHistory records the fusion weights of a kerasbnn.distill."
                f"MultiTeacherDistiller, not of {type(self.model).__name__}.")
        keep = self.append and self.csv_path is not None and os.path.exists(self.csv_path)
        self.rows = read_delta_csv(self.csv_path) if keep else []
        if not self.rows:
            self._record(-1.0)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self.rows = [r for r in self.rows if r["epoch"] <= epoch - 1]  # a resumed epoch anew
        steps = (self.params or {}).get("steps") or 0
        self._marks = {round(steps * k / self.per_epoch): steps for k in range(1, self.per_epoch)}

    def on_train_batch_end(self, batch, logs=None):
        steps = self._marks.get(batch + 1)
        if steps:
            self._record(self._epoch - 1 + (batch + 1) / steps)

    def on_epoch_end(self, epoch, logs=None):
        self._record(float(epoch))

    def _record(self, epoch):
        row = {"epoch": epoch}
        for tap, delta in self.model.deltas().items():
            for m, value in enumerate(delta):
                row[importance_key(tap, m)] = float(value)
        self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
        if self.csv_path is not None:  # atomically: a kill never leaves half a file
            with open(f"{self.csv_path}.partial", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(row))
                writer.writeheader()
                writer.writerows(self.rows)
            os.replace(f"{self.csv_path}.partial", self.csv_path)

    def on_train_end(self, logs=None):
        if self.plot_path is not None and self.rows:
            names = [f"t{m} {t.name}" for m, t in enumerate(self.model.teachers)]
            plot_delta_history(self.rows, self.plot_path, teacher_names=names)
