"""`cmtkd` honours `student.binary`, `teachers.bits` and `teachers.quantizer`, and refuses, by
name, the fields it cannot honour."""

import types

import pytest

from kerasbnn import config, methods, pipeline
from kerasbnn.distill import CollaborativeDistiller

TINY = ["data.train_limit=64", "data.val_limit=32", "data.batch_size=32", "distill.method=cmtkd"]


def _config(*overrides):
    """The library's defaults (the demo config tunes teacher fields cmtkd does not read)."""
    return config.load(None, [*TINY, *overrides])


class Built(Exception):
    """Stops the method once it has asked the zoo for its models."""


def _from_zoo_arguments(monkeypatch, values):
    """The arguments `cmtkd` builds its models with, for the config `values`."""
    seen = {}

    def from_zoo(name, input_shape, num_classes, **kwargs):
        seen.update(kwargs, name=name)
        raise Built

    monkeypatch.setattr(CollaborativeDistiller, "from_zoo", from_zoo)
    job = types.SimpleNamespace(config=values, info=types.SimpleNamespace(
        input_shape=(28, 28, 1), num_classes=10), print_fn=lambda *_: None)
    with pytest.raises(Built):
        methods.METHODS.get("cmtkd")(job)
    return seen


def test_cmtkd_builds_the_runs_binary_student_and_teachers(monkeypatch):
    values = _config("student.binary=xnor", "teachers.bits=[8, 4]", "teachers.quantizer=hwgq")
    pipeline.check_config(values, names=["cmtkd"])
    seen = _from_zoo_arguments(monkeypatch, values)
    assert seen["student_bits"] == 1 and seen["builder_kwargs"]["binary"] == "xnor"
    assert seen["teacher_bits"] == (8, 4) and seen["quantizer"] == "hwgq"
    assert seen["fusion_lr_scale"] == 20.0  # pi learns as fast as MAD's feature fusions


def test_cmtkd_pi_learns_at_the_feature_fusions_rate(monkeypatch):
    values = _config("distill.delta_lr_scale.features=5")
    pipeline.check_config(values, names=["cmtkd"])
    assert _from_zoo_arguments(monkeypatch, values)["fusion_lr_scale"] == 5.0
    with pytest.raises(config.ConfigError, match="distill.delta_lr_scale.logits=5.0 does not "
                                                 "apply to cmtkd: only mad reads it"):
        pipeline.check_config(_config("distill.delta_lr_scale.logits=5"), names=["cmtkd"])


def test_cmtkd_builds_its_models_at_the_runs_width(monkeypatch):
    # the width of the other arms' students (`pipeline._build`), so that compared arms match
    seen = _from_zoo_arguments(monkeypatch, _config("model.width_multiplier=0.25"))
    assert seen["builder_kwargs"]["width_multiplier"] == 0.25
    assert "width_multiplier" not in _from_zoo_arguments(monkeypatch, _config())["builder_kwargs"]
    with pytest.raises(config.ConfigError, match="set model.width_multiplier instead"):
        pipeline.check_config(_config("distill.options={builder_kwargs: {width_multiplier: 2}}"),
                              names=["cmtkd"])


def test_cmtkd_student_bits_builds_a_k_bit_student(monkeypatch):
    seen = _from_zoo_arguments(monkeypatch, _config("distill.options={student_bits: 2}"))
    assert seen["student_bits"] == 2 and "binary" not in seen["builder_kwargs"]


@pytest.mark.parametrize("overrides, message", [
    (["teachers.epochs=1"], "teachers.epochs=1 does not apply to cmtkd"),
    (["teachers.learning_rate=0.1"], "teachers.learning_rate=0.1 does not apply to cmtkd"),
    (["distill.options={teacher_bits: [4]}"], "set teachers.bits instead"),
    (["distill.options={quantizer: lsq}"], "set teachers.quantizer instead"),
    (["distill.options={fusion_lr_scale: 1}"], "set distill.delta_lr_scale.features instead"),
    (["distill.options={builder_kwargs: {binary: xnor}}"], "set student.binary instead"),
    (["distill.options={student_bits: 2}", "student.binary=xnor"],
     "student.binary='xnor' applies to a binary student, but distill.options.student_bits=2"),
])
def test_cmtkd_refuses_what_it_cannot_honour_by_name(overrides, message):
    with pytest.raises(config.ConfigError, match=message):
        pipeline.check_config(_config(*overrides), names=["cmtkd"])
