"""`--distribute multiworker`: TF_CONFIG checks, and two local workers of one cluster.

The worker processes are real `TF_CONFIG` clusters on localhost ports: each runs the same
command, as users would on each host.
"""

import json
import os

import keras
import numpy as np
import pytest

from kerasbnn import cli, distribution
from tests.helpers import REPO_ROOT, run_local_workers


def _tf_config(index=0, cluster=None, task_type="worker"):
    cluster = cluster or {"worker": ["localhost:1", "localhost:2"]}
    task = {"type": task_type, "index": index}
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})}


def test_single_process_strategies_are_the_chief():
    for name in ("none", "mirrored"):
        worker = distribution.worker(name, environ={})
        assert worker.is_chief and worker.count == 1
        assert worker.run_dir("runs/a") == "runs/a"


def test_worker_zero_is_chief_unless_a_chief_task_exists():
    first = distribution.worker("multiworker", environ=_tf_config(0))
    second = distribution.worker("multiworker", environ=_tf_config(1))
    assert first.is_chief and not second.is_chief and second.count == 2
    assert first.run_dir("runs/a") == "runs/a"
    assert second.run_dir("runs/a") == os.path.join("runs/a", "workers", "worker_1")
    with_chief = {"chief": ["localhost:0"], "worker": ["localhost:1"]}
    assert distribution.worker("multiworker", environ=_tf_config(0, with_chief, "chief")).is_chief
    assert not distribution.worker("multiworker", environ=_tf_config(0, with_chief)).is_chief


@pytest.mark.parametrize(
    "environ, message",
    [
        ({}, "needs the TF_CONFIG environment variable"),
        ({"TF_CONFIG": "{not json"}, "TF_CONFIG is not a cluster description"),
        ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["h:1"]}})}, "'task' with 'type'"),
        (_tf_config(2), "task index 2 is outside cluster['worker'], which lists 2 host"),
        (_tf_config(0, {"ps": ["h:1"], "worker": ["h:2"]}, "ps"), "task type 'ps' cannot train"),
    ],
)
def test_bad_tf_config_names_the_problem_and_the_fix(environ, message):
    with pytest.raises(distribution.DistributeError, match="TF_CONFIG") as error:
        distribution.worker("multiworker", environ=environ)
    assert message in str(error.value)


def test_unknown_strategy_is_refused():
    with pytest.raises(distribution.DistributeError, match="valid: none, mirrored, multiworker"):
        distribution.worker("horovod")


def test_cli_without_tf_config_fails_before_writing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    status = cli.main(["train", "--config", "examples/configs/demo.yaml", "--bits", "2",
                       "--set", f"run_dir={tmp_path / 'run'}", "--distribute", "multiworker",
                       "--set", "distill.feature_weight=0.2"])
    assert status == cli.EXIT_CONFIG
    assert "TF_CONFIG" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_train_on_two_local_workers(tmp_path):
    run_dir = tmp_path / "run"
    argv = ["-m", "kerasbnn.cli", "train", "--config", "examples/configs/demo.yaml", "--bits", "2",
            "--distribute", "multiworker", "--set", f"run_dir={run_dir}",
            "--set", "distill.feature_weight=0.2", "--set", "data.train_limit=128", "--set", "data.val_limit=64",
            "--set", "data.batch_size=32", "--set", "teachers.epochs=1",
            "--set", "model.block=basic",
            "--set", "teachers.float_epochs=1",
            # 32 validation images: whole batches (a partial one differs between workers)
            "--set", "data.val_split=0.25"]
    results = run_local_workers(argv, cwd=REPO_ROOT, timeout=300)
    for status, out, err in results:
        assert status == 0, err[-3000:]
        assert "MultiWorkerMirroredStrategy" in out and "over 2 replicas" in out
    chief = keras.models.load_model(run_dir / "teachers" / "w2a2.keras")
    other = keras.models.load_model(run_dir / "workers" / "worker_1" / "teachers" / "w2a2.keras")
    # One synchronous training, two copies. BatchNormalization's moving statistics are each
    # worker's own (Keras' default synchronized=False, as under MirroredStrategy).
    assert len(chief.trainable_weights) > 10
    for a, b in zip(chief.trainable_weights, other.trainable_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.mark.slow
def test_mad_step_on_two_workers_equals_the_single_process_step():
    script = REPO_ROOT / "tests" / "distill" / "mad_step.py"
    results = run_local_workers([str(script), "multiworker"], cwd=REPO_ROOT, timeout=300)
    for status, out, err in results:
        assert status == 0, err[-3000:]
        report = json.loads(out.strip().splitlines()[-1])
        assert report["replicas"] == 2 and report["loss"] > 0
        assert {"loss", "kl_loss", "feature_loss"} <= set(report["log_diff"])
        for key, diff in report["log_diff"].items():
            assert diff <= 1e-5, (key, diff)
        assert report["weight_diff"] <= 1e-5


@pytest.mark.slow
def test_pipeline_on_two_local_workers_only_the_chief_reports(tmp_path):
    run_dir = tmp_path / "run"
    tiny = ["data.train_limit=128", "data.val_limit=64", "data.batch_size=32", "data.val_split=0.25",
            "teachers.bits=[32, 2]", "teachers.epochs=1", "teachers.float_epochs=1", "student.epochs=1",
            "benchmark.runs=2", "model.block=basic"]
    argv = ["-m", "kerasbnn.cli", "pipeline", "--config", "examples/configs/demo.yaml",
            "--distribute", "multiworker", "--set", f"run_dir={run_dir}",
            *[a for item in [*tiny, "distill.feature_weight=0.2"] for a in ("--set", item)]]
    results = run_local_workers(argv, cwd=REPO_ROOT, timeout=600)
    for status, _, err in results:
        assert status == 0, err[-3000:]
    assert "Report written to" in results[0][1]
    assert (run_dir / "report.md").exists() and (run_dir / "tflite").is_dir()
    worker_dir = run_dir / "workers" / "worker_1"
    assert (worker_dir / "students" / "mad.keras").exists()
    assert not (worker_dir / "report.md").exists() and not (worker_dir / "tflite").exists()
    assert "the chief converts" in results[1][1]
