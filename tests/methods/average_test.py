"""`average` is CMT-KD's "average teacher" (§4.2): plain KD from the equal-weight mean softmax
of the pipeline's separately trained teachers. (Trained end to end, next to `none` and `cmtkd`:
tests/pipeline_test.py, `test_pipeline_compares_none_average_and_cmtkd`.)"""

import types

import pytest

from kerasbnn import config, data, distill, methods, pipeline

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
                       "distill.delta_init", "distill.options", "distill.kd_teacher"}
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
