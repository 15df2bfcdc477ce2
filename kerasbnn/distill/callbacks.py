"""Callbacks of multi-teacher distillation."""

import csv
import os

import keras

from kerasbnn.distill.plots import plot_delta_history, read_delta_csv

__all__ = ["DeltaHistory"]


class DeltaHistory(keras.callbacks.Callback):
    """Records the fusion coefficients delta of a `MultiTeacherDistiller` after every epoch.

    Each row holds `epoch` and one `delta_<tap>_t<m>` column per distillation point and
    teacher (after softmax). The CSV is rewritten at every epoch end, so an interrupted
    run keeps its history; with `append=True` a resumed run (e.g. under
    `keras.callbacks.BackupAndRestore`) continues the existing file. At the end of
    training the history is plotted like MAD's Fig. 3 (`plot_delta_history`).

    Args:
        csv_path: file to write, or None to keep the rows in memory only (`rows`).
        plot_path: image written at the end of training, or None.
        append: continue an existing `csv_path` instead of starting a new one.

    Raises:
        ValueError: at `on_train_begin` if the model is not a `MultiTeacherDistiller`.
    """

    def __init__(self, csv_path=None, plot_path=None, append=False):
        super().__init__()
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

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": float(epoch)}
        for tap, delta in self.model.deltas().items():
            for m, value in enumerate(delta):
                row[f"delta_{tap}_t{m}"] = float(value)
        self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
        if self.csv_path is not None:
            with open(self.csv_path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(row))
                writer.writeheader()
                writer.writerows(self.rows)

    def on_train_end(self, logs=None):
        if self.plot_path is not None and self.rows:
            names = [f"t{m} {t.name}" for m, t in enumerate(self.model.teachers)]
            plot_delta_history(self.rows, self.plot_path, teacher_names=names)
