"""`pkkd` as a plug-in of the pipeline: the adder twin of `model.arch`, its co-trained CNN, the
pipeline's evaluation and saving, and a resume that does not train a finished phase again."""

import json
import re

import keras
import pytest

from kerasbnn import config, methods, pipeline
from kerasbnn.methods import pkkd

TINY = ["data.train_limit=64", "data.val_limit=32", "data.batch_size=32", "student.epochs=1",
        "distill.method=pkkd",
        "distill.pkkd={blocks_per_stage: 1, width_multiplier: 0.25}", "student.precise_bn=32"]


def _config(tmp_path, *overrides):
    """The library's defaults (the demo config tunes teacher fields pkkd does not read)."""
    return config.load(None, [f"run_dir={tmp_path / 'run'}", *TINY, *overrides])


def test_pkkd_trains_its_own_teacher_and_reads_only_its_fields():
    assert methods.needs_teachers("pkkd") == ()
    assert {"pkkd", "feature_weight", "kl_weight", "temperature"} <= methods.option_keys("pkkd")
    assert pkkd.adder_twin("resnet20") == pkkd.adder_twin("adder_resnet20") == "adder_resnet20"


@pytest.mark.parametrize("overrides, message", [
    (["student.binary=xnor"], "student.binary='xnor' does not apply to pkkd"),
    (["teachers.bits=[32, 2]"], "teachers.bits=[32, 2] does not apply to pkkd"),
    (["distill.kl_weight=0.5"], "distill.kl_weight=0.5 does not apply to pkkd"),
    (["model.arch=alexnet"], "model.arch='alexnet' has no adder twin"),
    (["distill.pkkd={optimizer: rmsprop}"],
     "distill.pkkd.optimizer='rmsprop' is unknown; valid: adam, sgd"),
    (["distill.pkkd={blocks_per_stage: 0}"], "distill.pkkd.blocks_per_stage must be at least 1"),
    (["distill.pkkd={feature_wieght: 1}"], "Did you mean 'feature_weight'?"),
    (["distill.pkkd={pkkd: 1}"], "distill.pkkd.pkkd must be true or false"),
    (["distill.pdkk={pkkd: false}"], "Unknown config key 'distill.pdkk'"),
])
def test_pkkd_values_are_checked_before_anything_trains(tmp_path, overrides, message):
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        pipeline.run_method(_config(tmp_path, *overrides))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_pkkd_resumes_without_training_a_finished_phase_again(tmp_path, monkeypatch):
    from kerasbnn.utils import batch_norm

    run = tmp_path / "run"
    values = _config(tmp_path)

    class Killed(Exception):
        """Stands for a kill while the BatchNormalization statistics are recalibrated."""

    def killed(*args, **kwargs):
        raise Killed

    recalibrate = batch_norm.recalibrate_batch_norm
    monkeypatch.setattr(batch_norm, "recalibrate_batch_norm", killed)
    with pytest.raises(Killed):
        pipeline.run_method(values)
    assert (run / "backup" / "student_pkkd" / "finished" / "train.npz").exists()
    log = (run / "logs" / "student_pkkd" / "train.csv").read_text()
    assert "teacher_loss" in log and "feature_loss" in log
    monkeypatch.setattr(batch_norm, "recalibrate_batch_norm", recalibrate)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished phase was trained again")

    monkeypatch.setattr(methods.StudentJob, "fit", no_training)
    result = pipeline.run_method(values, resume=True)
    assert result["method"] == "pkkd" and result["pkkd"] is True
    for key in ("accuracy", "accuracy_moving_stats", "teacher_accuracy"):
        assert 0.0 <= result[key] <= 1.0
    assert result["precise_bn"] == 32  # the pipeline's recomputation, in one batch
    assert result["epochs"] == 1 and result["learning_rate"] == values.student.learning_rate
    assert result["feature_weight"] == values.distill.sections["pkkd"].get("feature_weight", 10.0)
    assert result["temperature"] == 1.0  # every setting of the distiller is recorded
    student = keras.models.load_model(run / "students" / "pkkd.keras")
    assert student.get_layer("stage1_block1_conv1").__class__.__name__ == "AdderConv2D"
    assert not (run / "backup" / "student_pkkd").exists()
    saved = json.loads((run / "results" / "student_pkkd.json").read_text())
    assert pipeline.run_method(values, resume=True) == saved  # a finished run trains nothing
