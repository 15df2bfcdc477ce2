"""QuantDense: Keras parity, binary product as a 1x1 conv, gradients, training, serialization."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbnn.layers import QuantDense
from tests.helpers import check_layer, np_sign, train_losses

BINARY = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"}


def test_signature_matches_keras_dense():
    ours = inspect.signature(QuantDense.__init__).parameters
    keras_params = inspect.signature(keras.layers.Dense.__init__).parameters
    for name, param in keras_params.items():
        assert name in ours, f"QuantDense lacks Keras argument {name!r}"
        assert ours[name].default == param.default, name
    assert set(ours) - set(keras_params) == {"input_quantizer", "kernel_quantizer"}


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({}, (3, 6)),
        ({**BINARY, "kernel_constraint": "weight_clip"}, (3, 6)),
        ({**BINARY, "use_bias": False}, (3, 4, 6)),
        ({"kernel_quantizer": "ste_sign", "activation": "relu"}, (3, 2, 4, 6)),
    ],
    ids=["float", "binary", "binary_rank3", "binary_weights_rank4"],
)
def test_layer_checks(kwargs, shape, rng):
    x = rng.normal(size=shape).astype("float32")
    check_layer(
        QuantDense,
        {"units": 5, **kwargs},
        x,
        expected_output_shape=(*shape[:-1], 5),
        expected_num_trainable_weights=1 + kwargs.get("use_bias", True),
    )


@pytest.mark.parametrize("shape", [(4, 7), (2, 3, 7), (2, 3, 2, 7)])
def test_binary_equals_sign_matmul(shape, rng):
    x = rng.normal(size=shape).astype("float32")
    layer = QuantDense(5, **BINARY)
    out = np.asarray(layer(x))
    expected = np_sign(x) @ np_sign(np.asarray(layer.kernel)) + np.asarray(layer.bias)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_binary_with_dynamic_inner_dimensions(rng):
    inputs = keras.Input((None, 7))
    layer = QuantDense(3, **BINARY)
    model = keras.Model(inputs, layer(inputs))
    for steps in (2, 5):
        x = rng.normal(size=(2, steps, 7)).astype("float32")
        expected = np_sign(x) @ np_sign(np.asarray(layer.kernel)) + np.asarray(layer.bias)
        np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)


def test_non_binary_is_a_matmul_of_the_quantized_operands(rng):
    x = rng.normal(size=(4, 7)).astype("float32")
    layer = QuantDense(5, kernel_quantizer="ste_sign", use_bias=False)
    np.testing.assert_allclose(layer(x), x @ np_sign(np.asarray(layer.kernel)), atol=1e-5)
    assert not layer.is_binary
    np.testing.assert_array_equal(layer.quantized_kernel, np_sign(np.asarray(layer.kernel)))


def _op_types(layer, shape):
    fn = tf.function(layer).get_concrete_function(tf.TensorSpec(shape, tf.float32))
    return {op.type for op in fn.graph.get_operations()}


def test_binary_graph_is_reshape_sign_conv_reshape():
    """LCE.md §2: LCE has no binary FC; a 1x1 conv on [N, 1, 1, C] becomes LceBconv2d."""
    binary = QuantDense(5, **BINARY)
    types = _op_types(binary, (2, 7))
    assert "Conv2D" in types and "MatMul" not in types
    assert binary.is_binary
    float_types = _op_types(QuantDense(5), (2, 7))
    assert "MatMul" in float_types and "Conv2D" not in float_types


def test_gradients_are_straight_through(rng):
    x = rng.normal(size=(4, 6)).astype("float32")
    layer = QuantDense(3, use_bias=False, **BINARY)
    layer.build(x.shape)
    w = rng.uniform(-1.5, 1.5, size=(6, 3)).astype("float32")
    layer.set_weights([w])
    upstream = rng.normal(size=(4, 3)).astype("float32")
    with tf.GradientTape() as tape:
        loss = keras.ops.sum(layer(x) * upstream)
    grad = np.asarray(tape.gradient(loss, layer.kernel))
    expected = (np_sign(x).T @ upstream) * (np.abs(w) <= 1.0)
    np.testing.assert_allclose(grad, expected, atol=1e-5)


def test_training_lowers_loss(rng):
    x = rng.normal(size=(64, 16)).astype("float32")
    y = (x[:, :4].sum(axis=1) > 0).astype("int32")
    model = keras.Sequential(
        [
            keras.Input((16,)),
            QuantDense(32, kernel_quantizer="ste_sign", kernel_constraint="weight_clip"),
            keras.layers.BatchNormalization(),
            QuantDense(2, kernel_constraint="weight_clip", **BINARY),
        ]
    )
    losses = train_losses(model, x, y)
    assert losses[-1] < 0.9 * losses[0]


def test_keras_int8_quantize_skips_quant_dense_and_still_quantizes_dense(rng):
    """We override none of Keras' quantize() machinery: it refuses Dense subclasses."""
    inputs = keras.Input((6,))
    hidden = QuantDense(4, name="binary", **BINARY)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="plain")(hidden))
    x = rng.normal(size=(2, 6)).astype("float32")
    before = np.asarray(model(x))
    with pytest.warns(UserWarning, match="quantize"):
        model.quantize("int8")
    assert model.get_layer("plain").quantization_mode == "int8"
    assert model.get_layer("binary").quantization_mode is None
    np.testing.assert_allclose(model(x), before, atol=0.05)


def test_lora_adds_to_the_latent_kernel(rng):
    x = rng.normal(size=(2, 6)).astype("float32")
    layer = QuantDense(3, lora_rank=2, **BINARY)
    layer.build(x.shape)
    layer.lora_kernel_b.assign(rng.normal(size=(2, 3)).astype("float32"))
    latent = np.asarray(layer.kernel)
    np.testing.assert_allclose(
        layer(x), np_sign(x) @ np_sign(latent) + np.asarray(layer.bias), atol=1e-5
    )


def test_bad_units_raise():
    with pytest.raises(ValueError, match="units"):
        QuantDense(0, **BINARY)
