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
        f"importance/{tap}/t{m}" for tap in ("logits", "stage2_out") for m in range(3)
    ]
    assert list(rows[0]) == columns and [r["epoch"] for r in rows] == ["-1.0", "0.0", "1.0"]
    for key in columns[1:]:  # uniform at the start, then the epoch logs
        assert float(rows[0][key]) == pytest.approx(1 / 3)
        np.testing.assert_allclose([float(r[key]) for r in rows[1:]], history[key], rtol=1e-5)
    assert os.path.getsize(png_path) > 5000

    # A resumed run continues the file.
    resumed = DeltaHistory(csv_path, append=True)
    distiller.fit(x, y, batch_size=8, epochs=3, initial_epoch=2, verbose=0, callbacks=[resumed])
    with open(csv_path, newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["-1.0", "0.0", "1.0", "2.0"]


@pytest.mark.parametrize("per_epoch, steps", [(4, 2), (3, 4), (2, 3)])
def test_delta_history_records_within_epochs(make_model, toy_data, per_epoch, steps):
    x, y = toy_data
    distiller = MultiTeacherDistiller(make_model("student", binary=True, widths=(4, 4)),
                                      [make_model(f"t{m}", seed=m + 1) for m in range(2)],
                                      feature_taps=None)
    distiller.compile(optimizer=keras.optimizers.Adam(0.05))
    callback = DeltaHistory(per_epoch=per_epoch)
    distiller.fit(x[: 4 * steps], y[: 4 * steps], batch_size=4, epochs=2, verbose=0,
                  callbacks=[callback])
    epochs = [r["epoch"] for r in callback.rows]
    marks = sorted({round(steps * k / per_epoch) for k in range(1, per_epoch)} - {0, steps})
    within = [m / steps for m in marks]
    assert epochs == pytest.approx([-1.0, *[w - 1 for w in within], 0.0, *within, 1.0])
    assert len({r["importance/logits/t0"] for r in callback.rows}) == len(epochs)  # it moves
    with pytest.raises(ValueError, match="per_epoch must be an integer >= 1"):
        DeltaHistory(per_epoch=0)


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
        "importance/logits/t0": [0.5, 0.6],
        "importance/logits/t1": [0.5, 0.4],
        "importance/s1/t0": [0.5, 0.7],
        "importance/s1/t1": [0.5, 0.3],
        "loss": [2.0, 1.0],
    }
    figure = plot_delta_history(history, tmp_path / "fig3.png", teacher_names=["32-bit", "2-bit"])
    assert [ax.get_title() for ax in figure.axes] == ["logits", "s1"]
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["32-bit", "2-bit"]
    np.testing.assert_allclose(figure.axes[1].get_lines()[0].get_ydata(), [0.5, 0.7])
    assert (tmp_path / "fig3.png").exists()
    with pytest.raises(ValueError, match="No importance/"):
        plot_delta_history({"loss": [1.0]})


def test_a_history_written_before_the_importance_name_reads_under_it(tmp_path):
    from kerasbnn.distill.plots import read_delta_csv

    path = tmp_path / "old.csv"
    path.write_text("epoch,delta_logits_t0,delta_logits_t1,pi_stage1_out_t0,loss\n"
                    "-1.0,0.5,0.5,0.25,2.0\n")
    assert read_delta_csv(path) == [{"epoch": -1.0, "importance/logits/t0": 0.5,
                                     "importance/logits/t1": 0.5,
                                     "importance/stage1_out/t0": 0.25, "loss": 2.0}]
    figure = plot_delta_history(path)
    assert [ax.get_title() for ax in figure.axes] == ["logits", "stage1_out"]
