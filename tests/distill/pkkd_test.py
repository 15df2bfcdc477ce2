"""PKKD: kernels, loss wiring and the jointly trained CNN teacher."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbnn.distill.pkkd import (
    KernelStatistics, PKKDDistiller, kernel_student, kernel_teacher, pkkd_layers)
from kerasbnn.models import adder_resnet20

SHAPE = (8, 8, 1)


def nets():
    student = adder_resnet20(SHAPE, 3, blocks_per_stage=1)
    teacher = adder_resnet20(SHAPE, 3, layer="conv", blocks_per_stage=1)
    return student, teacher


def batch(rng, n=4):
    return rng.normal(size=(n, *SHAPE)).astype("float32"), rng.integers(0, 3, n)


def test_kernels_with_fixed_sigma_match_the_formulas(rng):
    y = rng.normal(scale=3.0, size=(2, 3, 3, 4)).astype("float32")
    np.testing.assert_allclose(kernel_teacher(y, sigma=1.5), np.exp(-y / (2 * 1.5**2)), rtol=1e-5)
    y_adder = -np.abs(y)
    np.testing.assert_allclose(kernel_student(y_adder, sigma=2.0), np.exp(y_adder / 2.0), rtol=1e-5)
    assert np.all(kernel_student(y_adder, sigma=2.0).numpy() <= 1.0)


def test_auto_kernels_shift_and_scale_per_channel(rng):
    y = rng.normal(loc=-300.0, scale=40.0, size=(4, 3, 3, 2)).astype("float32")  # an adder output
    mean = y.mean(axis=(0, 1, 2), keepdims=True)
    std = y.std(axis=(0, 1, 2), keepdims=True) + 1e-6
    high, low = y.max(axis=(0, 1, 2), keepdims=True), y.min(axis=(0, 1, 2), keepdims=True)
    np.testing.assert_allclose(kernel_student(y, offset="mean"), np.exp((y - mean) / std), rtol=1e-4)
    np.testing.assert_allclose(kernel_teacher(y, offset="mean"), np.exp(-(y - mean) / std), rtol=1e-4)
    np.testing.assert_allclose(kernel_student(y), np.exp((y - high) / std), rtol=1e-4)
    np.testing.assert_allclose(kernel_teacher(y), np.exp(-(y - low) / std), rtol=1e-4)
    assert np.isfinite(kernel_teacher(y * 100, offset="mean").numpy()).all()
    # The literal formula underflows on the same input: why "auto" is the default.
    assert np.all(kernel_student(y, sigma=1.0).numpy() < 1e-12)


@pytest.mark.parametrize("kernel", [kernel_student, kernel_teacher])
def test_max_offset_bounds_the_kernels_where_the_mean_offset_explodes(rng, kernel):
    # A heavy-tailed channel (one value 40 standard deviations out) and a plain one.
    y = rng.normal(size=(8, 4, 4, 2)).astype("float32")
    y[0, 0, 0, 0] = 40.0 if kernel is kernel_student else -40.0
    bounded = kernel(y).numpy()
    assert np.all(bounded > 0) and np.all(bounded <= 1.0)
    np.testing.assert_allclose(bounded.max(axis=(0, 1, 2)), 1.0)  # each channel's top value
    assert kernel(y, offset="mean").numpy().max() > 1e4


def test_feature_term_is_bounded_with_the_max_offset(rng):
    student, teacher = nets()
    x, _ = batch(rng, 8)
    x[0] *= 1e3  # one outlying image
    terms = {}
    for offset in ("max", "mean"):
        distiller = PKKDDistiller(student, teacher, kernel_offset=offset, transform="none")
        out = distiller(x, training=True)
        pairs = distiller.kernel_features(out["student_features"], [t for (t,) in out["teacher_features"]])
        terms[offset] = [float(np.mean(np.square(a - c))) for a, c in pairs]
    assert all(0 <= t <= 1 for t in terms["max"])  # both kernels in (0, 1], r = identity
    assert max(terms["mean"]) > 1e3 * max(terms["max"])


def _numpy_statistics(z):
    return z.max(axis=(0, 1, 2)), z.std(axis=(0, 1, 2)) + 1e-6


def test_kernel_statistics_are_a_moving_average_used_before_their_update(rng):
    stats = KernelStatistics("max", momentum=0.75)
    z1, z2, z3 = (rng.normal(loc=k, scale=k, size=(4, 3, 3, 2)).astype("float32") for k in (1, 2, 3))
    for used, expected in zip(stats(z1, training=True), _numpy_statistics(z1)):  # no estimate yet:
        np.testing.assert_allclose(used, expected, rtol=1e-5)  # the batch's, then the running ones
    running = _numpy_statistics(z1)
    for used, expected in zip(stats(z2, training=True), running):  # used, then updated
        np.testing.assert_allclose(used, expected, rtol=1e-5)
    running = [0.75 * r + 0.25 * b for r, b in zip(running, _numpy_statistics(z2))]
    for used, expected in zip(stats(z3, training=False), running):  # inference: no update
        np.testing.assert_allclose(used, expected, rtol=1e-5)
    np.testing.assert_allclose(stats.moving_centre.numpy(), running[0], rtol=1e-5)
    np.testing.assert_allclose(stats.moving_scale.numpy(), running[1], rtol=1e-5)
    restored = KernelStatistics.from_config(stats.get_config())
    assert (restored.offset, restored.momentum) == ("max", 0.75)


def test_an_examples_kernel_target_does_not_depend_on_the_rest_of_its_batch(rng):
    student, teacher = nets()
    distiller = PKKDDistiller(student, teacher, transform="none")
    shapes = [tuple(teacher.get_layer(t).output.shape[1:]) for t in distiller.feature_taps]

    def features(n, scale):
        return [rng.normal(loc=-5.0, scale=scale, size=(n, *shape)).astype("float32") for shape in shapes]

    distiller.kernel_features(features(8, 1.0), features(8, 1.0), training=True)  # an estimate
    state = [v.numpy() for v in distiller.non_trainable_variables]
    first_s, first_t = features(1, 1.0), features(1, 1.0)
    targets = []
    for scale in (1.0, 20.0):  # the same first example among different others
        others_s, others_t = features(7, scale), features(7, scale)
        pairs = distiller.kernel_features(
            [np.concatenate([a, b]) for a, b in zip(first_s, others_s)],
            [np.concatenate([a, b]) for a, b in zip(first_t, others_t)], training=True)
        targets.append([(a.numpy()[0], c.numpy()[0]) for a, c in pairs])
        for variable, value in zip(distiller.non_trainable_variables, state):
            variable.assign(value)
    for (a1, c1), (a2, c2) in zip(*targets):
        np.testing.assert_allclose(a1, a2, rtol=1e-6)
        np.testing.assert_allclose(c1, c2, rtol=1e-6)


def test_default_layers_are_the_last_adder_of_each_stage():
    student = adder_resnet20(SHAPE, 3, blocks_per_stage=2)
    assert pkkd_layers(student) == ["stage1_block2_conv2", "stage2_block2_conv2", "stage3_block2_conv2"]


def _grads(distiller, x, y, term=None):
    """Gradients per role: {"student": {path: g}, "teacher": {...}, "transforms": {...}}."""
    roles = {
        "student": distiller.student.trainable_variables,
        "teacher": distiller.teacher.trainable_variables,
        "transforms": [v for v in distiller.trainable_variables if v.path.startswith("pkkd")],
    }
    with tf.GradientTape(persistent=True) as tape:
        out = distiller(x, training=True)
        if term == "feature":
            pairs = distiller.kernel_features(out["student_features"], [t for (t,) in out["teacher_features"]])
            loss = sum(tf.reduce_mean(tf.square(a - c)) for a, c in pairs)
        else:
            loss = distiller.compute_loss(x, y, out)
    return {
        role: {v.path: g for v, g in zip(variables, tape.gradient(loss, variables))}
        for role, variables in roles.items()
    }


def _nonzero(grads, prefix):
    return [path for path, g in grads.items() if path.startswith(prefix) and g is not None and np.any(g.numpy())]


def test_both_networks_and_the_transforms_get_gradients(rng):
    student, teacher = nets()
    distiller = PKKDDistiller(student, teacher, transform="both", teacher_kl_weight=0.5)
    x, y = batch(rng)
    grads = _grads(distiller, x, y)
    for role in ("student", "teacher"):
        for name in ("stage1_block1_conv1", "stage3_block1_conv2", "stem_conv", "classifier"):
            assert _nonzero(grads[role], f"{name}/kernel"), (role, name)
    assert _nonzero(grads["transforms"], "pkkd_student_transform_0")
    assert _nonzero(grads["transforms"], "pkkd_teacher_transform_2")


def test_feature_term_does_not_pull_the_teacher(rng):
    student, teacher = nets()
    distiller = PKKDDistiller(student, teacher)
    x, y = batch(rng)
    grads = _grads(distiller, x, y, term="feature")
    assert not _nonzero(grads["teacher"], "")
    assert _nonzero(grads["student"], "stage2_block1_conv2/kernel")  # reaches the adder student
    assert _nonzero(grads["transforms"], "pkkd_student_transform_1")


def test_fit_trains_both_and_logs_the_terms(rng):
    student, teacher = nets()
    distiller = PKKDDistiller(student, teacher, sigma_student=50.0, sigma_teacher=5.0)
    distiller.compile(keras.optimizers.SGD(0.05), metrics=["accuracy"], run_eagerly=True)
    before = [w.numpy().copy() for w in (student.get_layer("stage1_block1_conv1").kernel,
                                        teacher.get_layer("stage1_block1_conv1").kernel)]
    x, y = batch(rng, 8)
    history = distiller.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    expected = {"loss", "student_loss", "distillation_loss", "feature_loss", "teacher_loss", "teacher_accuracy", "accuracy"}
    assert expected <= set(history)
    assert all(np.isfinite(v[0]) for v in history.values())
    assert history["teacher_loss"][0] > 0
    after = [student.get_layer("stage1_block1_conv1").kernel, teacher.get_layer("stage1_block1_conv1").kernel]
    for b, a in zip(before, after):
        assert not np.allclose(b, a.numpy())


def test_frozen_teacher_is_the_np_ablation(rng):
    student, teacher = nets()
    distiller = PKKDDistiller(student, teacher, progressive_teacher=False)
    assert not teacher.trainable_variables
    x, y = batch(rng)
    out = distiller(x, training=True)
    distiller.compute_loss(x, y, out)
    assert float(distiller.trackers["teacher_loss"].result()) == 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sigma_student=0), "sigma_student"),
        (dict(sigma_teacher="big"), "sigma_teacher"),
        (dict(transform="teacher"), "transform"),
        (dict(kernel_offset="median"), "kernel_offset"),
        (dict(kernel_momentum=1.0), "kernel_momentum"),
        (dict(feature_weight=-1), "feature_weight"),
        (dict(temperature=0), "temperature"),
        (dict(feature_taps=["stage9_block1_conv2"]), "no layer"),
    ],
)
def test_bad_arguments(kwargs, message):
    student, teacher = nets()
    with pytest.raises(ValueError, match=message):
        PKKDDistiller(student, teacher, **kwargs)


def test_different_architectures_raise():
    student = adder_resnet20(SHAPE, 3, blocks_per_stage=1)
    teacher = adder_resnet20(SHAPE, 4, layer="conv", blocks_per_stage=1)
    with pytest.raises(ValueError, match="logits"):
        PKKDDistiller(student, teacher)


@pytest.mark.slow
def test_pkkd_distiller_saves_and_loads_with_its_settings(tmp_path):
    student, teacher = nets()
    distiller = PKKDDistiller(student, teacher, transform="both", teacher_kl_weight=0.5)
    distiller.compile(optimizer="adam")
    x = np.zeros((2, *student.input_shape[1:]), "float32")
    distiller.fit(x, np.zeros(2, "int32"), epochs=1, verbose=0)
    distiller.save(tmp_path / "pkkd.keras")
    restored = keras.saving.load_model(tmp_path / "pkkd.keras")
    assert type(restored) is PKKDDistiller
    assert restored.get_config()["teacher_kl_weight"] == 0.5
    assert restored.get_config()["transform"] == "both"
    np.testing.assert_allclose(restored.student.predict(x, verbose=0),
                               distiller.student.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_every_distiller_is_registered_for_keras_saving():
    from kerasbnn import distill
    from kerasbnn.distill.base import TeacherStudent

    def subclasses(cls):
        return {cls} | {s for sub in cls.__subclasses__() for s in subclasses(sub)}

    assert distill.PKKDDistiller in subclasses(TeacherStudent)
    for cls in subclasses(TeacherStudent):
        if cls.__module__.startswith("kerasbnn."):
            assert keras.saving.get_registered_name(cls).startswith("kerasbnn>"), cls
