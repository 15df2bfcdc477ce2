"""`cmtkd` honours `student.binary`, `student.init`, `teachers.bits` and `teachers.quantizer`,
and refuses, by name, the fields it cannot honour."""

import types

import pytest

from kerasbnn import config, distill, methods, pipeline

TINY = ["data.train_limit=64", "data.val_limit=32", "data.batch_size=32", "distill.method=cmtkd"]


def _config(*overrides):
    """The library's defaults (the demo config tunes teacher fields cmtkd does not read)."""
    return config.load(None, [*TINY, *overrides])


class Built(Exception):
    """Stops the method once it has built its distiller."""


def _from_zoo_arguments(monkeypatch, values):
    """What `cmtkd` builds its distiller from, for the config `values`: `builds`, the
    `(bits, builder options)` of each model asked of the job's builder (the student first),
    `started`, how many of them were started by `StudentJob.started` (`student.init`), and the
    distiller's keyword arguments."""
    seen = {"builds": [], "started": 0}

    def build(bits, **options):
        seen["builds"].append((bits, options))
        return (bits, options)

    def started(job, model):
        seen["started"] += 1
        return model

    def distiller(student, teachers, **kwargs):
        seen.update(kwargs, student=student, teachers=teachers)
        raise Built

    monkeypatch.setattr(distill, "CollaborativeDistiller", distiller)
    monkeypatch.setattr(methods.StudentJob, "started", started)
    job = methods.StudentJob(
        config=values, run=None, info=types.SimpleNamespace(input_shape=(28, 28, 1),
                                                            num_classes=10),
        train_ds=None, val_ds=None, teachers={}, build=build, evaluate=None,
        print_fn=lambda *_: None)
    with pytest.raises(Built):
        methods.METHODS.get("cmtkd")(job)
    (seen["student_bits"], seen["student_options"]), *seen["teacher_builds"] = seen["builds"]
    return seen


def test_cmtkd_builds_the_runs_binary_student_and_teachers(monkeypatch):
    values = _config("student.binary=xnor", "teachers.bits=[8, 4]", "teachers.quantizer=hwgq")
    pipeline.check_config(values, names=["cmtkd"])
    seen = _from_zoo_arguments(monkeypatch, values)
    assert seen["student_bits"] == 1 and seen["student_options"] == {"binary": "xnor"}
    assert seen["teacher_builds"] == [(8, {"quantizer": "hwgq"}), (4, {"quantizer": "hwgq"})]
    assert seen["started"] == 3  # the student and both teachers start from student.init
    assert seen["fusion_lr_scale"] == 20.0  # pi learns as fast as MAD's feature fusions


def test_cmtkd_pi_learns_at_the_feature_fusions_rate(monkeypatch):
    values = _config("distill.delta_lr_scale.features=5")
    pipeline.check_config(values, names=["cmtkd"])
    assert _from_zoo_arguments(monkeypatch, values)["fusion_lr_scale"] == 5.0
    with pytest.raises(config.ConfigError, match="distill.delta_lr_scale.logits=5.0 does not "
                                                 "apply to cmtkd: only mad reads it"):
        pipeline.check_config(_config("distill.delta_lr_scale.logits=5"), names=["cmtkd"])


def test_cmtkd_builds_its_models_with_the_runs_builder(monkeypatch):
    # `job.build` (`kerasbnn.run.teachers.build`): the width and BatchNorm momentum of the other arms'
    # students, so that compared arms match; builder_kwargs reach every model
    seen = _from_zoo_arguments(monkeypatch, _config(
        "distill.cmtkd={builder_kwargs: {quantize_first_last: true}}"))
    assert all(o["quantize_first_last"] for _, o in seen["builds"])
    with pytest.raises(config.ConfigError, match="set model.width_multiplier instead"):
        pipeline.check_config(_config("distill.cmtkd={builder_kwargs: {width_multiplier: 2}}"),
                              names=["cmtkd"])


def test_cmtkd_student_bits_builds_a_k_bit_student(monkeypatch):
    seen = _from_zoo_arguments(monkeypatch, _config("distill.cmtkd={student_bits: 2}"))
    assert seen["student_bits"] == 2 and seen["student_options"] == {"quantizer": "lsq"}
    # the older spelling, distill.options, is read as the section of the run's one method
    # that declares options
    seen = _from_zoo_arguments(monkeypatch, _config("distill.method=cmtkd",
                                                    "distill.options={student_bits: 2}"))
    assert seen["student_bits"] == 2


def test_cmtkd_starts_from_the_float_teacher_with_student_init_float():
    assert pipeline.teacher_bits(_config(), ["cmtkd"]) == [32]
    assert pipeline.teacher_bits(_config("student.init=random"), ["cmtkd"]) == []
    # the float teacher's training (teachers.*) is then a setting of cmtkd's start
    pipeline.check_config(_config("teachers.epochs=1", "teachers.float_epochs=3"),
                          names=["cmtkd"])


@pytest.mark.parametrize("overrides, message", [
    (["distill.cmtkd={teacher_bits: [4]}"], "set teachers.bits instead"),
    (["distill.cmtkd={quantizer: lsq}"], "set teachers.quantizer instead"),
    (["distill.cmtkd={fusion_lr_scale: 1}"], "set distill.delta_lr_scale.features instead"),
    (["distill.cmtkd={builder_kwargs: {binary: xnor}}"], "set student.binary instead"),
    (["distill.cmtkd={student_bits: 2}", "student.binary=xnor"],
     "student.binary='xnor' applies to a binary student, but distill.cmtkd.student_bits=2"),
    (["distill.method=cmtkd", "distill.options={student_bits: 2}", "student.binary=xnor"],
     "student.binary='xnor' applies to a binary student, but distill.options.student_bits=2"),
    (["distill.cmtkd={student_bits: 40}"], "distill.cmtkd.student_bits must be at most 32"),
])
def test_cmtkd_refuses_what_it_cannot_honour_by_name(overrides, message):
    with pytest.raises(config.ConfigError, match=message):
        pipeline.check_config(_config(*overrides), names=["cmtkd"])
