"""DeltaHistory (CSV + MAD Fig. 3)."""

import csv
import os

import keras
import numpy as np
import pytest

from kerasbnn.distill import (
    DeltaHistory,
    MultiTeacherDistiller,
    plot_delta_history,
)


def test_delta_history_writes_csv_and_plot(make_model, toy_data, tmp_path):
    x, y = toy_data
    student = make_model("student", binary=True, widths=(4, 4))
    teachers = [make_model(f"t{m}", seed=m + 1) for m in range(3)]
    distiller = MultiTeacherDistiller(student, teachers, feature_taps=["stage2_out"])
    distiller.compile(optimizer=keras.optimizers.Adam(0.05), run_eagerly=True)
    csv_path, png_path = tmp_path / "delta.csv", tmp_path / "delta.png"
    callback = DeltaHistory(csv_path, plot_path=png_path)
    history = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback]).history
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = ["epoch"] + [
        f"delta_{tap}_t{m}" for tap in ("logits", "stage2_out") for m in range(3)
    ]
    assert list(rows[0]) == columns and [r["epoch"] for r in rows] == ["0.0", "1.0"]
    for key in columns[1:]:  # the CSV agrees with the epoch logs
        np.testing.assert_allclose([float(r[key]) for r in rows], history[key], rtol=1e-5)
    assert os.path.getsize(png_path) > 5000

    # A resumed run continues the file.
    resumed = DeltaHistory(csv_path, append=True)
    distiller.fit(x, y, batch_size=8, epochs=3, initial_epoch=2, verbose=0, callbacks=[resumed])
    with open(csv_path, newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0.0", "1.0", "2.0"]


def test_delta_history_needs_a_distiller(make_model, toy_data):
    x, y = toy_data
    model = make_model("plain")
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,
    )
    with pytest.raises(ValueError, match="MultiTeacherDistiller"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[DeltaHistory()])


def test_plot_delta_history_panels_and_errors(tmp_path):
    history = {
        "delta_logits_t0": [0.5, 0.6],
        "delta_logits_t1": [0.5, 0.4],
        "delta_s1_t0": [0.5, 0.7],
        "delta_s1_t1": [0.5, 0.3],
        "loss": [2.0, 1.0],
    }
    figure = plot_delta_history(history, tmp_path / "fig3.png", teacher_names=["32-bit", "2-bit"])
    assert [ax.get_title() for ax in figure.axes] == ["logits", "s1"]
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["32-bit", "2-bit"]
    np.testing.assert_allclose(figure.axes[1].get_lines()[0].get_ydata(), [0.5, 0.7])
    assert (tmp_path / "fig3.png").exists()
    with pytest.raises(ValueError, match="No delta_"):
        plot_delta_history({"loss": [1.0]})
