"""benchmarks/time_to_accuracy.py: curves from the training logs' clock, its last line, and a
tiny run through the pipeline on the synthetic Fashion-MNIST of tests/conftest.py."""

import csv
import json
import os

import pytest

from kerasbnn import config as run_config
from tests.helpers import benchmark

TINY = ["distill.feature_weight=0.2", "data.train_limit=256", "data.val_limit=64", "data.batch_size=32", "data.val_split=0.25",
        "teachers.bits=[32]", "teachers.float_epochs=1", "student.epochs=2",
        "model.width_multiplier=0.25", "student.precise_bn=0", "model.block=basic"]


def _write_log(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_curve_sums_minutes_and_images_over_the_phases_in_the_order_they_ran(tmp_path):
    bench = benchmark("time_to_accuracy")
    step1 = tmp_path / "logs" / "student_mad" / "step1.csv"
    step2 = tmp_path / "logs" / "student_mad" / "step2.csv"
    _write_log(step2, [{"epoch": 0, "epoch_seconds": 30, "epoch_steps": 10,
                        "val_student_accuracy": 0.7}])
    _write_log(step1, [{"epoch": 0, "epoch_seconds": 60, "epoch_steps": 10,
                        "val_student_accuracy": 0.5},
                       {"epoch": 1, "epoch_seconds": 90, "epoch_steps": 12,
                        "val_student_accuracy": 0.6}])
    os.utime(step1, (1, 1))  # step1 ran first
    rows = bench.curve(bench.log_files(tmp_path, "student_mad"), batch_size=8)
    assert [r["phase"] for r in rows] == ["step1", "step1", "step2"]
    assert [r["minutes"] for r in rows] == pytest.approx([1.0, 2.5, 3.0])
    assert [r["images"] for r in rows] == [80, 176, 256]
    assert [r["val_accuracy"] for r in rows] == pytest.approx([0.5, 0.6, 0.7])
    assert bench.minutes_to(rows, 0.6) == pytest.approx(2.5)
    assert bench.minutes_to(rows, 0.9) is None


def test_a_log_without_the_clock_is_refused_with_the_fix(tmp_path):
    bench = benchmark("time_to_accuracy")
    _write_log(tmp_path / "logs" / "student_none.csv", [{"epoch": 0, "val_accuracy": 0.5}])
    with pytest.raises(ValueError, match="no epoch_seconds column.*new --root"):
        bench.curve(bench.log_files(tmp_path, "student_none"), batch_size=8)


def test_last_line_gives_test_accuracy_minutes_and_the_gap_to_the_float_teacher():
    bench = benchmark("time_to_accuracy")
    config = run_config.from_dict({"model": {"width_multiplier": 1.0}})
    record = {"arms": {"none": {"test_accuracy": 0.894, "minutes": 58.2},
                       "mad": {"test_accuracy": 0.9, "minutes": 61.0}},
              "float_teacher": {"test_accuracy": 0.912}}
    assert bench.line(config, "none", record) == (
        "binary resnet20 w1.0: 89.4% test after 58 min (float teacher 91.2%, gap 1.8 pt)")
    assert bench.line(config, "mad", record).startswith("binary resnet20 w1.0 (mad): 90.0% test")


def test_arms_must_name_a_method(tmp_path):
    with pytest.raises(SystemExit):
        benchmark("time_to_accuracy").parse_args(["--root", str(tmp_path), "--arms", ","])


@pytest.mark.slow  # an 18-s pipeline run; the curve, line and refusal tests above are fast
def test_tiny_run_writes_curves_and_resumes_without_training_again(tmp_path):
    bench = benchmark("time_to_accuracy")
    root, lines = tmp_path / "run", []
    argv = ["--config", "examples/configs/demo.yaml", "--root", str(root), "--arms", "none",
            *[a for item in TINY for a in ("--set", item)]]
    record = bench.main(argv, print_fn=lines.append)
    none = record["arms"]["none"]
    assert [r["epoch"] for r in none["curve"]] == [1, 2]
    assert [r["images"] for r in none["curve"]] == [192, 384]  # 6 batches of 32 per epoch
    assert 0 < none["curve"][0]["minutes"] < none["curve"][1]["minutes"] == none["minutes"]
    assert len(record["float_teacher"]["curve"]) == 1
    assert lines[-1].startswith("binary resnet20 w0.25: ") and ", gap " in lines[-1]
    saved = json.loads((root / "time_to_accuracy.json").read_text())
    assert saved["lines"][-1] == lines[-1]
    assert (root / "time_to_accuracy.png").stat().st_size > 0
    again = bench.main(argv, print_fn=lambda *_: None)  # finished: reused, not retrained
    assert again["arms"]["none"]["curve"] == none["curve"]
