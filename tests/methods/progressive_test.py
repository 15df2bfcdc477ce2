"""`progressive` as a plug-in of the pipeline: the float teacher, per-phase logs and backups,
and a resume that trains only the phases not finished."""

import inspect
import json
import re

import keras
import pytest

from kerasbnn import config, methods, pipeline
from kerasbnn.methods import progressive

TINY = ["distill.feature_weight=0.2", "data.train_limit=64", "data.val_limit=32", "data.batch_size=32", "teachers.bits=[32]",
        "teachers.epochs=1", "student.epochs=1", "distill.method=progressive",
        "model.block=null"]  # the thesis' layout, which progressive's double_relu student shares


def _config(tmp_path, *overrides):
    return config.load("examples/configs/demo.yaml",
                       [f"run_dir={tmp_path / 'run'}", *TINY, *overrides])


@pytest.mark.parametrize("teachers, student", [("reactnet", "double_relu"),
                                               ("basic", "bireal")])
def test_a_student_laid_out_unlike_its_teachers_is_refused_before_anything_is_written(
        tmp_path, teachers, student):
    values = _config(tmp_path, f"model.block={teachers}", f"distill.progressive={{block: {student}}}")
    with pytest.raises(config.ConfigError, match="lay out their convs differently"):
        progressive._options(values)  # `kerasbnn distill --method progressive` alone
    for same in ([f"model.block={teachers}", "distill.progressive={block: null}"],
                 ["model.block=double_relu"]):
        pipeline.check_config(_config(tmp_path, *same))
    # alone (no arm to equal), a student of the teachers' layout is accepted
    progressive._options(_config(tmp_path, "model.block=reactnet",
                                 "distill.progressive={block: bireal}"))


def test_the_old_ce_weight_option_names_kd_label_fraction(tmp_path):
    values = _config(tmp_path, "distill.options={ce_weight: 0.7}")
    with pytest.raises(config.ConfigError, match="distill.options.ce_weight is now "
                                                 "distill.options.kd_label_fraction.*0.7"):
        progressive._options(values)
    assert progressive._options(_config(tmp_path, "distill.options={kd_label_fraction: 0.7}"))[
        "kd_label_fraction"] == 0.7


class Killed(Exception):
    """Stands for a kill between two phases."""


TRAIN_PHASE = progressive._train_phase


def _recording(monkeypatch, trained, stop_at=None):
    """Records the phases `progressive` trains; raises `Killed` before phase `stop_at`."""

    def train_phase(job, distiller, phase, epochs, first_pass):
        if progressive._tag(phase) == stop_at:
            raise Killed(stop_at)
        trained.append((progressive._tag(phase), first_pass))
        return TRAIN_PHASE(job, distiller, phase, epochs, first_pass)

    monkeypatch.setattr(progressive, "_train_phase", train_phase)


def test_progressive_is_registered_with_the_float_teacher_and_its_options():
    assert methods.needs_teachers("progressive") == (32,)
    assert methods.option_keys("progressive") == set(progressive.OPTIONS)
    assert {"distill.progressive", "distill.options"} <= set(methods.config_keys("progressive"))


def test_the_pipeline_and_the_distiller_share_the_thesis_default_of_trainable():
    from kerasbnn.distill import ProgressiveDistiller

    default = inspect.signature(ProgressiveDistiller).parameters["trainable"].default
    assert progressive.OPTIONS["trainable"] == default == "cumulative"


@pytest.mark.parametrize("overrides, message", [
    (["distill.progressive={variant: IV}"],
     "distill.progressive.variant='IV' is unknown; valid: I, II, III"),
    (["distill.progressive={varient: II}"], "Did you mean 'variant'?"),
    (["distill.progressive={feature_weight: 2}"],
     "distill.progressive.feature_weight must be at most 1.0, got 2.0"),
    (["distill.progressive={epochs_per_stage: -1}"],
     "distill.progressive.epochs_per_stage must be at least 0"),
    (["distill.progressive={epochs_per_stage: 1.5}"],
     "distill.progressive.epochs_per_stage must be an integer"),
    (["distill.fusion=average"], "distill.fusion='average' does not apply to progressive"),
    (["teachers.bits=[8]"], "progressive distils from the 32-bit teacher: add 32"),
])
def test_progressive_values_are_checked_before_anything_trains(tmp_path, overrides, message):
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        pipeline.run_method(_config(tmp_path, *overrides))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # 38 s; run_phases resume is covered by schedule_test and pkkd_test
def test_a_killed_progressive_run_resumes_after_its_last_finished_phase(tmp_path, monkeypatch):
    values = _config(tmp_path, "distill.progressive={variant: II, epochs_per_stage: 1}")
    run = tmp_path / "run"
    trained = []
    _recording(monkeypatch, trained, stop_at="final")
    with pytest.raises(Killed):
        pipeline.run_method(values)
    assert trained == [("lit", 0)]
    assert (run / "backup" / "student_progressive" / "finished" / "lit.npz").exists()
    lit_log = (run / "logs" / "student_progressive" / "lit.csv").read_text()
    assert len(lit_log.strip().splitlines()) == 4  # the header and LIT's S x 1 = 3 epochs
    trained.clear()
    _recording(monkeypatch, trained)
    lines = []
    result = pipeline.run_method(values, resume=True, print_fn=lines.append)
    # the LIT phase is not trained again; the final one sees the passes after LIT's 3 epochs
    assert trained == [("final", 3)]
    assert any("phases lit finished" in line for line in lines)
    assert (run / "logs" / "student_progressive" / "lit.csv").read_text() == lit_log
    assert (run / "logs" / "student_progressive" / "final.csv").exists()
    assert not (run / "backup" / "student_progressive").exists()
    assert result["method"] == "progressive" and 0.0 <= result["accuracy"] <= 1.0
    assert result["variant"] == "II" and result["phases"] == ["lit", "final"]
    assert result["teachers"] == [32] and result["epochs"] == 1
    keras.models.load_model(run / "students" / "progressive.keras")
    # A finished run resumed trains nothing.
    trained.clear()
    saved = json.loads((run / "results" / "student_progressive.json").read_text())
    assert pipeline.run_method(values, resume=True) == saved
    assert trained == []


@pytest.mark.slow
def test_distill_temperature_squared_reaches_method_two(tmp_path, monkeypatch):
    seen = []

    def train_phase(job, distiller, phase, epochs):
        seen.append((distiller.scale_by_temperature_squared, phase["loss"]))
        raise Killed(phase["phase"])

    monkeypatch.setattr(progressive, "_train_phase", train_phase)
    values = _config(tmp_path, "distill.progressive={variant: II}", "distill.temperature_squared=true")
    with pytest.raises(Killed):
        pipeline.run_method(values)
    (squared, loss), = seen
    assert squared and "T^2*KL" in loss
