"""Cached teacher logits (`kerasbnn.distill.logits_cache`): the same outputs and the same
training as the teachers run at every step, and clear errors where a cache cannot hold."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbnn.distill import (
    MultiTeacherDistiller, attach_teacher_logits, teacher_logits, with_teacher_logits)
from tests.distill.conftest import tiny_model


def _models(seed=0):
    keras.utils.set_random_seed(seed)
    student = tiny_model("student", binary=True, seed=1)
    teachers = [tiny_model("teacher_a", seed=2), tiny_model("teacher_b", seed=3)]
    return student, teachers


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 3)).astype("float32"), rng.integers(0, 5, n)


def test_teacher_logits_are_each_teachers_inference_output_in_order():
    _, teachers = _models()
    x, y = _data(50)
    table = teacher_logits(teachers, x, batch_size=16)  # 16, 16, 16, 2 rows
    assert table.shape == (50, 2, 5) and table.dtype == np.float32
    for m, teacher in enumerate(teachers):
        np.testing.assert_allclose(table[:, m], teacher(x, training=False), atol=1e-5)
    from_dataset = teacher_logits(teachers, tf.data.Dataset.from_tensor_slices((x, y)).batch(7))
    np.testing.assert_allclose(from_dataset, table, atol=1e-5)


def _trained(cached, epochs=2):
    student, teachers = _models()
    distiller = MultiTeacherDistiller(student, teachers, feature_taps=None, feature_weight=0.0,
                                      fusion="learned", fusion_lr_scale=20.0)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, y = _data()
    inputs = with_teacher_logits(x, teacher_logits(teachers, x)) if cached else x
    history = distiller.fit(inputs, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return distiller, history.history


def test_training_on_cached_logits_equals_training_with_the_teachers_run():
    computed, computed_logs = _trained(cached=False)
    cached, cached_logs = _trained(cached=True)
    for a, b in zip(computed.student.get_weights(), cached.student.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(computed.deltas()["logits"], cached.deltas()["logits"], atol=1e-6)
    assert abs(computed.deltas()["logits"][0] - 0.5) > 1e-3  # delta learned, in both
    for key in ("kl_loss", "student_loss", "loss"):
        np.testing.assert_allclose(computed_logs[key], cached_logs[key], rtol=1e-5)


def test_attached_batches_carry_each_images_own_logits():
    _, teachers = _models()
    x, y = _data(40)
    table = teacher_logits(teachers, x)
    indexed = tf.data.Dataset.from_tensor_slices((x, y, np.arange(40))).shuffle(40, seed=3)
    for inputs, labels in attach_teacher_logits(indexed.batch(8), table):
        rows = [int(np.flatnonzero((x == image).all(axis=(1, 2, 3)))[0])
                for image in inputs["inputs"].numpy()]
        np.testing.assert_array_equal(inputs["teacher_logits"].numpy(), table[rows])
        np.testing.assert_array_equal(labels.numpy(), y[rows])


def test_distiller_with_teacher_taps_refuses_cached_logits():
    student, teachers = _models()
    distiller = MultiTeacherDistiller(student, teachers, feature_taps=["stage1_out"])
    x, _ = _data(8)
    with pytest.raises(ValueError, match="also taps the teachers' features.*feature_taps=None"):
        distiller(with_teacher_logits(x, teacher_logits(teachers, x)))


@pytest.mark.parametrize("inputs, message", [
    (lambda x, t: {"teacher_logits": t}, "exactly the keys 'inputs' and 'teacher_logits'"),
    (lambda x, t: {"inputs": x, "teacher_logits": t, "labels": t}, "exactly the keys"),
    (lambda x, t: with_teacher_logits(x, t[:, :1]), r"shape \(batch, 2, classes\)"),
])
def test_malformed_cached_inputs_are_refused_by_name(inputs, message):
    student, teachers = _models()
    distiller = MultiTeacherDistiller(student, teachers, feature_taps=None, feature_weight=0.0)
    x, _ = _data(8)
    with pytest.raises(ValueError, match=message):
        distiller(inputs(x, teacher_logits(teachers, x)))


def test_attach_needs_indexed_batches():
    x, y = _data(8)
    with pytest.raises(ValueError, match="index=True"):
        attach_teacher_logits(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), np.zeros((8, 2, 5)))
