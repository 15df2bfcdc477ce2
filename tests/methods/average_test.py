"""`average` is CMT-KD's "average teacher" (§4.2): plain KD from the equal-weight mean softmax
of the pipeline's separately trained teachers. (Trained end to end, next to `none` and `cmtkd`:
tests/pipeline_test.py, `test_pipeline_compares_none_average_and_cmtkd`.)"""

import types

import keras
import numpy as np
import pytest

from kerasbnn import config, data, distill, methods, pipeline, run_dir, teacher_cache
from kerasbnn.run import report as run_report
from kerasbnn.run import teachers as run_teachers

PAPER = ["teachers.bits=[4, 6, 8]", "teachers.quantizer=hwgq",
         "distill.compare=[none, average, cmtkd]"]


class Built(Exception):
    """Stops the method once it has built its distiller."""


def _built(monkeypatch, values):
    """The teachers and keyword arguments `average` builds its `MultiTeacherDistiller` with."""
    seen = {}

    def distiller(student, teachers, **kwargs):
        seen.update(kwargs, teachers=teachers)
        raise Built

    monkeypatch.setattr(distill, "MultiTeacherDistiller", distiller)
    teachers = {b: object() for b in (32, *values.teachers.bits)}
    job = types.SimpleNamespace(config=values, teachers=teachers, print_fn=lambda *_: None,
                                info=data.info(values.data.name),
                                train_student=lambda name, trainer, data=None: trainer(
                                    object(), None))
    with pytest.raises(Built):
        methods.METHODS.get("average")(job)
    return seen, teachers


def test_average_distils_the_mean_softmax_of_every_teacher_by_logits_only(monkeypatch):
    values = config.load(None, [*PAPER, "distill.temperature=4",
                                "distill.temperature_squared=true"])
    pipeline.check_config(values)
    seen, teachers = _built(monkeypatch, values)
    assert seen["teachers"] == [teachers[4], teachers[6], teachers[8]]  # not the float one
    assert (seen["fusion"], seen["fuse_probabilities"], seen["feature_taps"]) == (
        "average", True, None)
    assert (seen["temperature"], seen["scale_by_temperature_squared"]) == (4.0, True)
    assert methods.needs_teachers("average", values) is None  # every teachers.bits


def test_average_needs_the_float_teacher_only_to_make_the_others():
    values = config.load(None, PAPER)
    assert pipeline.teacher_bits(values, ["none", "average", "cmtkd"]) == [32, 4, 6, 8]


def test_average_reads_the_kd_loss_and_not_the_feature_or_delta_keys():
    keys = set(methods.config_keys("average"))
    assert {"distill.ce_weight", "distill.kl_weight", "distill.temperature",
            "distill.temperature_squared", "teachers.bits", "teachers.quantizer",
            "teachers.epochs"} <= keys
    assert not keys & {"distill.feature_weight", "distill.feature_reduction", "distill.fusion",
                       "distill.delta_init", "distill.options", "distill.kd_teacher",
                       "distill.average"}
    assert methods.option_keys("average") is None
    with pytest.raises(config.ConfigError, match="distill.feature_weight=0.5 does not apply to "
                                                 "none, average, cmtkd"):
        pipeline.check_config(config.load(None, [*PAPER, "distill.feature_weight=0.5"]))
    with pytest.raises(config.ConfigError, match="distill.fusion='average' does not apply to "
                                                 "none, average, cmtkd: only mad reads it"):
        pipeline.check_config(config.load(None, [*PAPER, "distill.fusion=average"]))


def test_average_caches_its_teachers_logits_whatever_the_feature_weight():
    # it taps no features, so distill.teacher_logits=cached holds with the default
    # feature_weight (0.2), which only kd and mad read
    cached = [*PAPER, "distill.teacher_logits=cached", "data.augment=false"]
    pipeline.check_config(config.load(None, cached))
    with pytest.raises(config.ConfigError, match="distill.feature_weight=0.2 needs the teachers'"):
        pipeline.check_config(config.load(None, [*cached, "distill.compare=[average, mad]"]))


def test_average_with_teachers_trained_apart_each_from_its_own_start(tmp_path, monkeypatch):
    # CMT-KD §4.2's version (`teachers.init: random`): no teacher is made from another one
    starts = {}

    def fit_resumable(model, train_ds, *, name, epochs, **kwargs):  # records, trains nothing
        kernel = model.get_layer("stage1_block1_conv1").kernel
        starts[name] = (keras.ops.convert_to_numpy(kernel).copy(), epochs)

    monkeypatch.setattr(run_teachers, "fit_resumable", fit_resumable)
    monkeypatch.setattr(methods.StudentJob, "fit", lambda *args, **kwargs: None)
    values = config.load(None, [
        f"run_dir={tmp_path / 'run'}", "data.train_limit=64", "data.val_limit=32",
        "data.batch_size=32", "model.width_multiplier=0.25", "teachers.bits=[8, 2]",
        "teachers.init=random", "teachers.float_epochs=3", "student.init=random",
        "student.precise_bn=0", "distill.compare=[none, average]"])
    results = pipeline.run_compare(values)
    assert list(results["teachers"]) == [8, 2]  # no float teacher: nothing starts from it
    assert [starts[f"teacher_w{b}a{b}"][1] for b in (8, 2)] == [3, 3]  # float_epochs each
    assert not np.allclose(starts["teacher_w8a8"][0], starts["teacher_w2a2"][0])
    assert [(r["init"], r["seed"], r["start_accuracy"]) for r in results["teachers"].values()] \
        == [("random", 8, None), ("random", 2, None)]
    assert results["students"]["average"]["teachers_init"] == "random"
    keys = {init: teacher_cache.teacher_key(config.load(None, [f"teachers.init={init}"]), 8)[0]
            for init in ("float", "random")}
    assert keys["float"] != keys["random"]
    assert "teachers.init: random, CMT-KD §4.2's separately trained teachers" in \
        run_report._budget_line(values)
    accuracy = {"binary, no KD": 0.5, "binary, average": 0.6}
    table = "\n".join(run_report._method_lines(run_dir.RunDir(tmp_path / "run"),
                                               ["none", "average"], accuracy))
    assert "| average (teachers trained apart, each from its own start) | 60.00% |" in table
