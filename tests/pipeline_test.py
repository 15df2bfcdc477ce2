"""The command line's training surface: config errors before training, resume, the whole pipeline."""

import os
import signal
import subprocess
import sys
import time

import keras
import pytest

from kerasbnn import cli, config, pipeline

TINY = [
    "data.train_limit=256", "data.val_limit=128", "data.batch_size=64",
    "teachers.bits=[32, 2]", "teachers.epochs=1", "student.epochs=1", "benchmark.runs=2",
]


def _args(tmp_path, *extra):
    return ["--config", "examples/configs/demo.yaml", "--set", f"run_dir={tmp_path / 'run'}",
            *[a for item in TINY for a in ("--set", item)], *extra]


def test_unknown_key_fails_before_anything_is_written(tmp_path, capsys):
    status = cli.main(["pipeline", *_args(tmp_path), "--set", "student.epoch=3"])
    assert status == cli.EXIT_CONFIG
    assert "Unknown config key 'student.epoch'" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")


def test_missing_dataset_fails_before_training(tmp_path, monkeypatch, capsys):
    from kerasbnn.data import base

    monkeypatch.setenv("KERASBNN_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(base, "host_reachable", lambda url, timeout=None: False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    status = cli.main(["train", *_args(tmp_path)])
    err = capsys.readouterr().err
    assert status == cli.EXIT_INPUT, err
    assert "dataset-fashion-mnist" in err
    assert not os.path.exists(tmp_path / "run")


def test_existing_run_needs_resume_and_the_same_config(tmp_path):
    values = config.load("examples/configs/demo.yaml", [f"run_dir={tmp_path}", *TINY])
    pipeline._open_run_dir(values, resume=False)
    with pytest.raises(pipeline.RunDirectoryError, match="--resume"):
        pipeline._open_run_dir(values, resume=False)
    pipeline._open_run_dir(values, resume=True)
    changed = config.load("examples/configs/demo.yaml", [f"run_dir={tmp_path}", *TINY, "distill.beta=0.5"])
    with pytest.raises(pipeline.RunDirectoryError, match="distill"):
        pipeline._open_run_dir(changed, resume=True)


@pytest.mark.slow
def test_pipeline_end_to_end(tmp_path):
    status = cli.main(["pipeline", *_args(tmp_path)])
    assert status == cli.EXIT_OK
    run = tmp_path / "run"
    report = (run / "report.md").read_text()
    assert "binary, MAD" in report and "LceBconv2d" in report
    for name in ("accuracy.png", "delta.png", "size_latency.png"):
        assert (run / "plots" / name).stat().st_size > 1000
    for name in ("float_teacher", "mad", "plain"):
        assert (run / "tflite" / f"{name}.tflite").stat().st_size > 0
    student = keras.models.load_model(run / "students" / "mad.keras")
    assert student.output_shape == (None, 10)
    # A second call resumes: every artefact exists, so nothing retrains.
    start = time.perf_counter()
    assert cli.main(["pipeline", *_args(tmp_path), "--resume"]) == cli.EXIT_OK
    assert time.perf_counter() - start < 60


@pytest.mark.slow
def test_sigkill_then_resume_continues_from_last_epoch(tmp_path):
    args = [sys.executable, "-m", "kerasbnn.cli", "train", *_args(tmp_path),
            "--set", "teachers.epochs=3", "--bits", "32"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "run" / "logs" / "teacher_w32a32.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().strip().splitlines()) >= 2:  # epoch 1 logged
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "teachers" / "w32a32.keras").exists()
    done = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    epochs = [row.split(",")[0] for row in log.read_text().strip().splitlines()[1:]]
    assert epochs == ["0", "1", "2"]
    keras.models.load_model(tmp_path / "run" / "teachers" / "w32a32.keras")


def test_method_options_pass_through_and_unknown_method_fails(tmp_path, capsys):
    status = cli.main(["distill", *_args(tmp_path), "--method", "progressive",
                       "--set", "distill.options={nonsense: 1}"])
    assert status == cli.EXIT_CONFIG
    assert "nonsense" in capsys.readouterr().err
    values = config.load("examples/configs/demo.yaml", ["distill.options={epochs_per_stage: 2}"])
    assert values.distill.options == {"epochs_per_stage": 2}
    with pytest.raises(config.ConfigError, match="distill.options must be a mapping"):
        config.load(None, ["distill.options=3"])
    with pytest.raises(ValueError, match="Unknown distill.method 'magic'"):
        pipeline._setup(config.load("examples/configs/demo.yaml", [*TINY, "distill.method=magic"]), False)


@pytest.mark.slow
def test_distill_cmtkd_from_the_command_line(tmp_path, capsys):
    status = cli.main(["distill", *_args(tmp_path), "--method", "cmtkd",
                       "--set", "distill.options={student_bits: 2, teacher_bits: [4, 8]}"])
    assert status == cli.EXIT_OK, capsys.readouterr().err
    assert "student accuracy" in capsys.readouterr().out
    keras.models.load_model(tmp_path / "run" / "students" / "cmtkd.keras")


MIRRORED_SCRIPT = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from kerasbnn import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_train_under_mirrored_strategy_on_two_logical_cpus(tmp_path):
    args = ["train", *_args(tmp_path), "--bits", "2", "--distribute", "mirrored",
            "--set", "data.train_limit=128", "--set", "data.val_limit=64"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, *args], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MirroredStrategy over 2 replicas" in done.stdout and "CPU:1" in done.stdout
    model = keras.models.load_model(tmp_path / "run" / "teachers" / "w2a2.keras")
    assert model.output_shape == (None, 10)
    assert config.load(str(tmp_path / "run" / "config.yaml")).distribute == "mirrored"
