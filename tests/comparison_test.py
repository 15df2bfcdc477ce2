"""Compared arms train the same student from the same weights on the same images
(`kerasbnn.comparison`, issue #30 item 3): the start and the budget of every arm are read off
the run, with training itself skipped (so that each saved student is its start)."""

import json

import keras
import numpy as np
import pytest

from kerasbnn import comparison, config, methods, pipeline, run_dir

TINY = ["data.train_limit=64", "data.val_limit=32", "data.batch_size=32",
        "model.width_multiplier=0.25", "teachers.bits=[32, 2]", "teachers.epochs=1",
        "teachers.float_epochs=1", "teachers.bn_batches=1", "student.epochs=1",
        "student.precise_bn=0"]


def _config(tmp_path, *overrides):
    return config.load(None, [f"run_dir={tmp_path / 'run'}", *TINY, *overrides])


def _without_training(monkeypatch):
    """Makes every student's `fit` a no-op that records `{method: epochs it was asked for}`:
    a saved student then holds the weights it started from."""
    asked = {}

    def fit(job, model, method, callbacks=(), *, phase=None, epochs=None, data=None,
            first_pass=0):
        epochs = job.config.student.epochs if epochs is None else epochs
        asked[method] = asked.get(method, 0) + epochs

    monkeypatch.setattr(methods.StudentJob, "fit", fit)
    return asked


def _saved(tmp_path, name):
    return keras.models.load_model(tmp_path / "run" / "students" / f"{name}.keras",
                                   compile=False)


def _assert_same_weights(a, b):
    assert [w.path for w in a.weights] == [w.path for w in b.weights]  # the same network
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("init", ["float", "random"])
def test_cmtkd_starts_its_student_from_the_weights_of_none(tmp_path, monkeypatch, shared_teachers,
                                                          init):
    _without_training(monkeypatch)
    cached = [shared_teachers] if init == "float" else []  # random: no teacher to cache
    values = _config(tmp_path, "distill.compare=[none, cmtkd]", f"student.init={init}", *cached)
    results = pipeline.run_compare(values)
    assert list(results["teachers"]) == ([32] if init == "float" else [])
    _assert_same_weights(_saved(tmp_path, "none"), _saved(tmp_path, "cmtkd"))
    if init == "float":  # the float teacher's weights, not Keras' initialization
        teacher = keras.models.load_model(tmp_path / "run" / "teachers" / "w32a32.keras")
        kernel = "stage1_block1_conv1"
        np.testing.assert_array_equal(
            _saved(tmp_path, "cmtkd").get_layer(kernel).kernel.numpy(),
            teacher.get_layer(kernel).kernel.numpy())
    assert results["students"]["cmtkd"]["init"] == init


def test_progressive_and_none_train_one_block_from_one_start_on_equal_images(
        tmp_path, monkeypatch, shared_teachers):
    epochs = _without_training(monkeypatch)
    values = _config(tmp_path, "distill.compare=[none, progressive]",
                     "distill.progressive={block: null, epochs_per_stage: 1}", shared_teachers)
    lines = []
    results = pipeline.run_compare(values, print_fn=lines.append)
    # the same network (block) from the same weights: copied and BatchNorm recomputed alike
    _assert_same_weights(_saved(tmp_path, "none"), _saved(tmp_path, "progressive"))
    # 3 stages x 1 block-wise epoch, then student.epochs=1: none trains 4 epochs too
    assert epochs == {"none": 4, "progressive": 4}
    students = results["students"]
    assert students["none"]["epochs"] == 4 and students["progressive"]["total_epochs"] == 4
    assert students["none"]["images"] == students["progressive"]["images"] == 4 * 64
    assert any("[budget] none trains 4 epoch(s) instead of student.epochs=1" in line
               for line in lines)
    saved = json.loads((tmp_path / "run" / "results" / "student_none.json").read_text())
    assert saved["images"] == 256 and "train_seconds" in saved


@pytest.mark.parametrize("overrides, message", [
    (["distill.compare=[none, progressive]"],
     "progressive's has block='double_relu' where none's has 'basic': set "
     "distill.progressive.block to 'basic'"),
    (["distill.compare=[none, progressive]", "distill.progressive={block: null}",
      "student.init=random"],
     "progressive's has init='float' where none's has 'random': progressive starts from the "
     "float teacher whatever student.init: set student.init: float"),
    (["distill.compare=[none, cmtkd]", "distill.cmtkd={student_bits: 2}"],
     "cmtkd's has bits=2 where none's has 1: set distill.cmtkd.student_bits: 1"),
    (["distill.compare=[none, cmtkd]",
      "distill.cmtkd={builder_kwargs: {block: double_relu}}"],
     "cmtkd's has block='double_relu' where none's has 'basic'"),
    (["distill.compare=[none, pkkd]"],
     "pkkd's has arch='adder_resnet20' where none's has 'resnet20': it trains another "
     "network, so compare it in a run of its own"),
])
def test_a_comparison_of_unlike_students_is_refused_before_anything_is_written(
        tmp_path, overrides, message):
    with pytest.raises(config.ConfigError, match="The compared arms") as info:
        pipeline.run_compare(_config(tmp_path, *overrides))
    assert message in str(info.value)
    assert not (tmp_path / "run").exists()


def test_a_single_arm_or_the_arms_of_one_student_pass():
    for compare in ("[progressive]", "[pkkd]", "[none, kd, mad, average, cmtkd]", "[none, at]"):
        pipeline.check_config(config.load(None, [f"distill.compare={compare}"]))
    values = config.load(None, [*TINY, "distill.compare=[none, mad]",
                                "student.schedule=two_step"])
    assert [methods.student_epochs(n, values) for n in ("none", "mad")] == [2, 2]


def test_a_resumed_comparison_with_unequal_images_says_so(tmp_path):
    run = run_dir.RunDir(tmp_path)
    for name, images in (("none", 128), ("progressive", 256)):
        run.write_json(f"student_{name}", {"accuracy": 0.5, "images": images})
    warning = comparison.unequal_images(run, ["none", "progressive"])
    assert "unequal numbers of images through their students (none 128, progressive 256)" \
        in warning
    run.write_json("student_none", {"accuracy": 0.5, "images": 256})
    assert comparison.unequal_images(run, ["none", "progressive"]) is None
    assert comparison.unequal_images(run, ["none"]) is None
