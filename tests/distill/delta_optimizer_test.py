"""`with_delta_optimizer`: SGD on MAD's fusion logits theta, the inner optimizer on the rest."""

import keras
import numpy as np
import tensorflow as tf

from kerasbnn.distill import MultiTeacherDistiller, with_delta_optimizer

TAPS = ["stage1_out", "stage2_out"]
RATE = 0.5


def _distiller(make_model, optimizer=None):
    student = make_model("student", binary=True)
    teachers = [make_model(f"t{m}", seed=m + 1) for m in range(2)]
    distiller = MultiTeacherDistiller(student, teachers, feature_taps=TAPS)
    if optimizer is not None:
        distiller.compile(optimizer=optimizer(distiller), run_eagerly=True)
    return distiller


def _composite(distiller):
    return with_delta_optimizer(distiller, keras.optimizers.Adam(1e-2), keras.optimizers.SGD(RATE))


def _values(distiller):
    return {v.path: v.numpy().copy() for v in distiller.trainable_variables}


def test_sgd_steps_theta_by_rate_times_gradient_and_adam_moves_the_rest(make_model, toy_data):
    x, y = toy_data[0][:8], toy_data[1][:8]
    composite = _distiller(make_model, _composite)
    plain = _distiller(make_model, lambda d: keras.optimizers.Adam(1e-2))
    plain.set_weights(composite.get_weights())
    assert isinstance(composite.optimizer, keras.optimizers.MultiOptimizer)
    before = _values(composite)
    with tf.GradientTape() as tape:
        loss = composite.compute_loss(x, y, composite(x, training=True))
    grads = dict(zip(before, tape.gradient(loss, composite.trainable_variables)))
    composite.train_on_batch(x, y)
    plain.train_on_batch(x, y)
    after, adam_after = _values(composite), _values(plain)
    thetas = [path for path in before if path.endswith("/theta")]
    assert len(thetas) == 3  # the logits' fusion and one per tap
    for path in before:
        if path in thetas:  # SGD: theta - rate * gradient
            expected = before[path] - RATE * grads[path].numpy()
            np.testing.assert_allclose(after[path], expected, rtol=1e-5, atol=1e-8)
            assert np.any(after[path] != before[path])
            assert not np.allclose(after[path], adam_after[path])  # Adam's step is another
        else:  # the rest: exactly Adam's first step
            np.testing.assert_allclose(after[path], adam_after[path], rtol=1e-5, atol=1e-7)


def test_the_composite_optimizer_saves_and_loads(make_model, toy_data, tmp_path):
    x, y = toy_data
    distiller = _distiller(make_model, _composite)
    distiller.train_on_batch(x[:8], y[:8])
    distiller.save(tmp_path / "distiller.keras")
    loaded = keras.models.load_model(tmp_path / "distiller.keras")
    assert [type(o).__name__ for o in loaded.optimizer.optimizers] == ["SGD", "Adam"]
    for a, b in zip(distiller.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    distiller.train_on_batch(x[8:], y[8:])  # the next step is the same from the loaded copy
    loaded.train_on_batch(x[8:], y[8:])
    for a, b in zip(distiller.trainable_variables, loaded.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)


def test_without_a_learned_fusion_the_optimizer_is_returned_as_it_is(make_model):
    student = make_model("student", binary=True)
    distiller = MultiTeacherDistiller(student, [make_model("t", seed=1), make_model("u", seed=2)],
                                      feature_taps=None, fusion="average")
    adam = keras.optimizers.Adam()
    assert with_delta_optimizer(distiller, adam, "sgd") is adam
