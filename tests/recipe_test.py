"""The papers' recipe (issue #17): teachers and students from the float network, teacher
cache keys, the validation split, determinism and paired arms."""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbnn import config, data, methods, models, pipeline, teacher_cache
from kerasbnn.run.data import run_data
from kerasbnn.run.teachers import build
from kerasbnn.transfer import from_float
from kerasbnn.utils import batch_norm_layers

SMALL = ["distill.feature_weight=0.2", "data.train_limit=256", "data.val_limit=128", "data.batch_size=64",
         "model.width_multiplier=0.25", "teachers.bits=[32, 2]", "teachers.epochs=1",
         "student.epochs=1", "teachers.bn_batches=2", "teachers.float_epochs=1",
         "model.block=basic"]


def _config(tmp_path, *overrides):
    return config.load("examples/configs/demo.yaml",
                       [f"run_dir={tmp_path / 'run'}", *SMALL, *overrides])


def _net(bits, **options):
    return models.get("resnet20")((28, 28, 1), 10, bits=bits, width_multiplier=0.25, **options)


def _batches(count=2):
    x = np.random.default_rng(0).normal(size=(32 * count, 28, 28, 1)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, np.zeros(32 * count, "int32"))).batch(32)


def _by_path(model):
    return {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}


def test_from_float_copies_matching_weights_and_recomputes_batch_norm():
    float_model, teacher = _net(32), _net(8, quantizer="lsq")
    float_weights = _by_path(float_model)
    before = [keras.ops.convert_to_numpy(layer.moving_mean) for layer in batch_norm_layers(teacher)]
    from_float(float_model, teacher, _batches(), batches=2)
    copied = 0
    for layer in teacher.layers:
        for weight in layer.weights:
            if weight.path in float_weights and "moving" not in weight.path:
                np.testing.assert_array_equal(keras.ops.convert_to_numpy(weight),
                                              float_weights[weight.path])
                copied += 1
    assert copied > 20
    after = [keras.ops.convert_to_numpy(layer.moving_mean) for layer in batch_norm_layers(teacher)]
    assert all(not np.allclose(a, b) for a, b in zip(before, after))


def test_teacher_key_changes_with_what_changes_the_teacher(tmp_path):
    base = _config(tmp_path, "teachers.seed=0")
    key = lambda values, bits=2: teacher_cache.teacher_key(values, bits)[0]  # noqa: E731
    assert key(base).startswith("resnet20_w2a2_")
    for change in ("teachers.epochs=2", "teachers.quantizer=dorefa", "teachers.learning_rate=0.01",
                   "teachers.float_epochs=3", "data.train_limit=128", "data.val_split=0.2",
                   "model.width_multiplier=0.5", "teachers.seed=1", "teachers.bn_batches=3",
                   "model.block=bireal"):
        assert key(_config(tmp_path, "teachers.seed=0", change)) != key(base), change
    # the float teacher changes with its own budget, not with the k-bit teachers' quantizer
    assert key(_config(tmp_path, "teachers.seed=0", "teachers.quantizer=hwgq"), 32) == key(base, 32)
    # the students' settings and the run's seed (teachers.seed fixed) do not change it
    for same in ("student.epochs=5", "seed=3", "distill.kl_weight=2", "run_dir=elsewhere"):
        assert key(_config(tmp_path, "teachers.seed=0", same)) == key(base), same


@pytest.mark.parametrize("block", ["bireal", "reactnet"])
def test_model_block_builds_the_teachers_and_the_student_of_every_arm(tmp_path, block):
    values = _config(tmp_path, f"model.block={block}")
    info = data.info("fashion_mnist")
    for bits in (32, 2, 1):
        names = {layer.name for layer in build(values, info, bits).layers}
        assert "stage3_block6_conv" in names and "stem_relu" not in names, bits
    assert any(n.endswith("_rprelu") for n in names) == (block == "reactnet")
    for method in ("none", "mad", "kd"):
        assert methods.student_network(method, values)["block"] == block
    assert methods.student_network("none", _config(tmp_path, "model.block=null"))["block"] == (
        "basic")  # the builder's default


def _job(values, teachers, bn_ds=None):
    info = data.info("fashion_mnist")
    return methods.StudentJob(
        values, None, info, None, None, teachers,
        build=lambda bits, **options: build(values, info, bits, **options),
        evaluate=None, bn_ds=bn_ds)


def test_student_starts_from_the_float_teacher(tmp_path):
    values = _config(tmp_path)
    float_model = _net(32)
    student = _job(values, {32: float_model}, _batches()).student()
    float_weights = _by_path(float_model)
    kernels = [w for w in student.weights if w.path.endswith("/kernel") and w.path in float_weights]
    assert kernels
    for weight in kernels:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(weight), float_weights[weight.path])
    random = _job(_config(tmp_path, "student.init=random"), {}).student()
    assert not np.array_equal(keras.ops.convert_to_numpy(random.get_layer(kernels[0].path.split("/")[0]).kernel),
                              float_weights[kernels[0].path])


def test_student_init_is_checked():
    with pytest.raises(config.ConfigError, match="student.init='warm' is unknown; valid: float, random"):
        pipeline.check_config(config.load(None, ["student.init=warm"]))


def _images(dataset):
    return {x.tobytes() for batch, _ in dataset for x in np.asarray(batch)}


def test_val_split_is_carved_from_training_disjoint_and_deterministic(tmp_path):
    mask = data.validation_mask(200, 0.1, seed=0)
    assert mask.sum() == 20
    np.testing.assert_array_equal(mask, data.validation_mask(200, 0.1, seed=0))
    assert not np.array_equal(mask, data.validation_mask(200, 0.1, seed=1))
    values = _config(tmp_path, "data.val_split=0.25", "data.batch_size=16")
    splits = run_data(values, data.info("fashion_mnist"))
    val, train, test = _images(splits.val), _images(splits.plain()), _images(splits.test)
    assert len(val) == 64 and len(train) == 192
    assert not val & train and not val & test
    assert val == _images(run_data(values, data.info("fashion_mnist")).val)
    assert int(splits.train(0).cardinality()) == 192 // 16


def test_val_split_must_leave_a_training_batch(tmp_path):
    values = _config(tmp_path, "data.train_limit=80", "data.val_split=0.5")
    with pytest.raises(config.ConfigError, match="less data.val_split"):
        pipeline.check_config(values)


def test_deterministic_turns_on_op_determinism(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tf.config.experimental, "enable_op_determinism", lambda: calls.append(1))
    pipeline.seed_everything(_config(tmp_path))
    assert calls == []
    pipeline.seed_everything(_config(tmp_path, "deterministic=true"))
    assert calls == [1]


def test_paired_arms_start_from_the_same_weights_and_batches(tmp_path):
    values = _config(tmp_path, "student.init=random")
    splits = run_data(values, data.info("fashion_mnist"))
    first = []
    for _ in range(2):  # what _train_methods does before each arm
        pipeline.seed_everything(values)
        student = _job(values, {}).student()
        batches = [np.asarray(y) for _, y in splits.train(values.seed).take(3)]
        first.append((_by_path(student), batches))
    (weights_a, batches_a), (weights_b, batches_b) = first
    for path, value in weights_a.items():
        np.testing.assert_array_equal(value, weights_b[path])
    for a, b in zip(batches_a, batches_b):
        np.testing.assert_array_equal(a, b)


def test_teachers_come_from_the_cache_when_their_key_matches(tmp_path):
    cache = tmp_path / "cache"
    values = _config(tmp_path, f"teachers.cache_dir={cache}", "teachers.seed=0",
                     "data.val_split=0.25")
    lines = []
    pipeline.run_training(values, 2, print_fn=lines.append)
    assert sorted(p.name for p in cache.iterdir() if p.suffix == ".keras") == sorted(
        f"{teacher_cache.teacher_key(values, b)[0]}.keras" for b in (32, 2))
    record = json.loads((cache / f"{teacher_cache.teacher_key(values, 2)[0]}.json").read_text())
    result = record["result"]
    assert result["start_accuracy"] is not None and "val_accuracy" in result
    other = dataclasses.replace(values, run_dir=str(tmp_path / "other"), seed=5)
    lines.clear()
    pipeline.run_training(other, 2, print_fn=lines.append)
    assert sum("cached as" in line for line in lines) == 2, lines
    # a changed setting gives another key (test_teacher_key_...), so it trains again


def _mad_job(tmp_path, values, bits, fit=None):
    from kerasbnn import run_dir

    run = run_dir.RunDir(str(tmp_path / "run"))
    teachers = {b: _net(b, quantizer="lsq") for b in bits}
    job = _job(values, teachers, _batches(1))
    job.run, job.print_fn = run, lambda *_: None
    job.optimizer = lambda: keras.optimizers.Adam(1e-3)
    job.fit = fit or (lambda model, method, callbacks=(), data=None: None)
    job.resumed = lambda method: False
    return job


def test_delta_lr_scale_reaches_the_fusions_and_moves_delta_that_much(tmp_path):
    from kerasbnn.methods import multi_teacher_student as mad

    values = _config(tmp_path, "distill.delta_lr_scale={logits: 20, features: 5}",
                     "distill.delta_optimizer=adam", "student.init=random")
    steps = {}

    def fit(distiller, method, callbacks=(), data=None):
        x, y = next(iter(_batches(1)))
        distiller.train_on_batch(x, y)
        steps["model"] = distiller

    mad.multi_teacher_student(_mad_job(tmp_path, values, (32, 2), fit), "mad", (32, 2), "learned")
    distiller = steps["model"]
    logits_fusion = distiller.fusions["logits"]
    feature_fusions = [f for key, f in distiller.fusions.items() if key != "logits"]
    assert logits_fusion.lr_scale == 20.0
    assert feature_fusions and {f.lr_scale for f in feature_fusions} == {5.0}
    # Adam's first step moves theta by about the rate: s * theta by s times that
    logits = 20.0 * keras.ops.convert_to_numpy(logits_fusion.theta)
    np.testing.assert_allclose(np.abs(logits), 20.0 * 1e-3, rtol=0.05)
    features = 5.0 * keras.ops.convert_to_numpy(feature_fusions[0].theta)
    np.testing.assert_allclose(np.abs(features), 5.0 * 1e-3, rtol=0.05)


def test_delta_optimizer_sgd_reaches_the_distiller_at_its_rate(tmp_path):
    from kerasbnn.methods import multi_teacher_student as mad

    values = _config(tmp_path, "distill.delta_optimizer=sgd", "distill.delta_learning_rate=0.5",
                     "student.init=random")
    steps = {}

    def fit(distiller, method, callbacks=(), data=None):
        x, y = next(iter(_batches(1)))
        steps["theta"] = [keras.ops.convert_to_numpy(f.theta) for f in distiller.fusions.values()]
        distiller.train_on_batch(x, y)
        steps["model"] = distiller

    _, extra = mad.multi_teacher_student(_mad_job(tmp_path, values, (32, 2), fit), "mad", (32, 2),
                                         "learned")
    distiller = steps["model"]
    assert extra["delta_optimizer"] == "sgd"
    assert {f.lr_scale for f in distiller.fusions.values()} == {1.0}  # the rate alone sets the step
    optimizer = distiller.optimizer
    assert isinstance(optimizer, keras.optimizers.MultiOptimizer)
    (sgd,) = [o for o in optimizer.optimizers if isinstance(o, keras.optimizers.SGD)]
    assert float(keras.ops.convert_to_numpy(sgd.learning_rate)) == 0.5
    assert int(sgd.iterations.numpy()) == 1  # it took theta's step
    moved = [keras.ops.convert_to_numpy(f.theta) - before
             for f, before in zip(distiller.fusions.values(), steps["theta"])]
    assert any(np.any(m != 0) for m in moved)


def test_delta_can_start_from_the_teachers_validation_accuracies(tmp_path):
    from kerasbnn.methods import multi_teacher_student as mad

    thetas = mad.accuracy_thetas([0.90, 0.89, 0.85], lr_scale=20.0)
    delta = keras.ops.convert_to_numpy(keras.ops.softmax(20.0 * thetas))
    np.testing.assert_allclose(delta / delta[0], np.exp([0.0, -1.0, -5.0]), rtol=1e-4)
    values = _config(tmp_path, "data.val_split=0.1", "distill.delta_init=accuracy",
                     "student.init=random")
    job = _mad_job(tmp_path, values, (32, 2))
    for bits, accuracy in ((32, 0.9), (2, 0.88)):
        job.run.write_json(f"teacher_w{bits}a{bits}", {"accuracy": 0.5, "val_accuracy": accuracy})
    _, extra = mad.multi_teacher_student(job, "mad", (32, 2), "learned")
    np.testing.assert_allclose(extra["deltas"]["logits"], [1 / (1 + np.exp(-2)), 1 / (1 + np.exp(2))],
                               rtol=1e-4)


@pytest.mark.parametrize("overrides, message", [
    (["distill.delta_init=accuracy", "data.val_split=null"], "distill.delta_init=accuracy starts delta from the teachers'"),
    (["distill.delta_init=best"], "distill.delta_init='best' is unknown"),
    (["distill.compare=[none, kd]", "distill.kd_teacher=4"],
     r"kd distils from the 4-bit teacher \(distill.kd_teacher\): add 4 to teachers.bits"),
    (["distill.delta_lr_scale.logits=0"], "distill.delta_lr_scale.logits must be greater than 0"),
    (["distill.delta_optimizer=sgd", "distill.delta_lr_scale.logits=5"],
     "distill.delta_lr_scale.logits scales delta's rate under distill.delta_optimizer=adam"),
    (["distill.delta_optimizer=rmsprop"], "distill.delta_optimizer='rmsprop' is unknown; valid: sgd, adam"),
    (["distill.delta_learning_rate=0"], "distill.delta_learning_rate must be greater than 0"),
])
def test_fusion_settings_are_checked(tmp_path, overrides, message):
    with pytest.raises(config.ConfigError, match=message):
        pipeline.check_config(_config(tmp_path, *overrides))
