"""benchmarks/teacher_inference.py's `inference_function` (the teacher pass
benchmarks/train_speed.py times): a frozen teacher's logits and taps, unchanged."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbnn import models
from tests.helpers import benchmark

inference = benchmark("teacher_inference")


def _teacher(bits, seed=0):
    keras.utils.set_random_seed(seed)
    model = models.resnet20((32, 32, 3), 10, bits=bits, name=f"resnet20_{bits}bit")
    # Non-trivial batch-norm statistics, so that folding and the constants are exercised.
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.3, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.2, n).astype("float32"))
    return model


def _expected(model, taps, x):
    """`model(x, training=False)` and its taps, eagerly and traced in a `tf.function` (as a
    distiller's train step runs them)."""
    extractor = keras.Model(
        model.inputs[0], [model.output] + [model.get_layer(t).output for t in taps]
    )
    eager = [np.asarray(v) for v in extractor(x, training=False)]
    graph = [np.asarray(v) for v in tf.function(lambda x: extractor(x, training=False))(x)]
    return eager, graph


def _close(actual, expected, name):
    # TensorFlow's eager and graph runs of one model already differ by ~1e-7 of the scale.
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale, err_msg=name)


# 4 bits runs the k-bit quantizers of 8 and 2 bits: in `make test-all` only.
@pytest.mark.parametrize("bits", [32, 8, pytest.param(4, marks=pytest.mark.slow), 2])
def test_outputs_equal_call_and_taps(bits):
    model = _teacher(bits)
    taps = models.taps(model)
    x = np.random.default_rng(1).normal(size=(8, 32, 32, 3)).astype("float32")
    run = inference.inference_function(model, feature_taps=taps)
    assert not run.folded
    outputs = run(x)
    assert set(outputs) == {"logits", *taps}
    eager, graph = _expected(model, taps, x)
    for name, e, g in zip(["logits", *taps], eager, graph):
        # Bitwise the teacher's call traced in a graph, as a distiller's train step runs it.
        np.testing.assert_array_equal(outputs[name], g, err_msg=name)
        if bits == 32:
            # Eagerly TensorFlow rounds some quantizers (round(x n) / n) one ulp differently,
            # which flips 8- and 4-bit activation levels: only a float model matches eager.
            _close(outputs[name], e, name)


def test_folded_float_teacher():
    """Folding BN into the convs rounds differently (conv(x, W a) vs conv(x, W) a): not
    bitwise, within 1e-5 (relative, and of each output's largest magnitude)."""
    model = _teacher(32)
    taps = models.taps(model)
    x = np.random.default_rng(1).normal(size=(8, 32, 32, 3)).astype("float32")
    run = inference.inference_function(model, feature_taps=taps, fold_batch_norm="auto")
    assert len(run.folded) == 21  # stem, 18 body convs, 2 projection shortcuts
    outputs = run(x)
    eager, graph = _expected(model, taps, x)
    for name, e, g in zip(["logits", *taps], eager, graph):
        _close(outputs[name], g, name)
        _close(outputs[name], e, name)


def test_auto_does_not_fold_a_quantized_teacher():
    assert not inference.inference_function(_teacher(4), fold_batch_norm="auto").folded


def test_unfolded_quantized_teacher_is_exact_and_refresh_reads_new_weights():
    model = _teacher(2)
    x = np.random.default_rng(2).normal(size=(4, 32, 32, 3)).astype("float32")
    run = inference.inference_function(model)
    call = tf.function(lambda x: model(x, training=False))
    np.testing.assert_array_equal(run(x)["logits"], call(x))
    other = _teacher(2, seed=5)
    model.set_weights(other.get_weights())
    run.refresh()
    call = tf.function(lambda x: model(x, training=False))
    np.testing.assert_array_equal(run(x)["logits"], call(x))


def test_bad_arguments():
    model = _teacher(32)
    with pytest.raises(ValueError, match="no layer"):
        inference.inference_function(model, feature_taps=["nope"])
    with pytest.raises(ValueError, match="fold_batch_norm"):
        inference.inference_function(model, fold_batch_norm="yes")
