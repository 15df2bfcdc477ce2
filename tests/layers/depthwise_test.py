"""QuantDepthwiseConv2D: Keras parity, binarization, one-padding, gradients, serialization."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbnn.layers import QuantDepthwiseConv2D
from tests.helpers import check_layer, np_conv2d, np_sign, same_pads, train_losses

BINARY = {"input_quantizer": "ste_sign", "depthwise_quantizer": "ste_sign"}


def np_depthwise(x, w, strides=(1, 1), pads=((0, 0), (0, 0)), pad_value=0.0):
    """Depthwise conv: channel c with multiplier m gives output channel c * M + m."""
    channels, multiplier = w.shape[2:]
    out = [
        np_conv2d(x[..., c : c + 1], w[:, :, c : c + 1, m : m + 1], strides, pads, pad_value)
        for c in range(channels)
        for m in range(multiplier)
    ]
    return np.concatenate(out, axis=-1)


def test_signature_matches_keras_depthwise_conv2d():
    ours = inspect.signature(QuantDepthwiseConv2D.__init__).parameters
    keras_params = inspect.signature(keras.layers.DepthwiseConv2D.__init__).parameters
    for name, param in keras_params.items():
        assert name in ours, f"QuantDepthwiseConv2D lacks Keras argument {name!r}"
        assert ours[name].default == param.default, name
    assert set(ours) - set(keras_params) == {"input_quantizer", "depthwise_quantizer", "pad_values"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {**BINARY, "padding": "same", "pad_values": 1.0, "depthwise_constraint": "weight_clip"},
        {**BINARY, "depth_multiplier": 2, "use_bias": False},
    ],
    ids=["float", "binary_same_one", "binary_multiplier2"],
)
def test_layer_checks(kwargs, rng):
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    size = 6 if kwargs.get("padding") == "same" else 4
    check_layer(
        QuantDepthwiseConv2D,
        {"kernel_size": 3, **kwargs},
        x,
        expected_output_shape=(2, size, size, 3 * kwargs.get("depth_multiplier", 1)),
        expected_num_trainable_weights=1 + kwargs.get("use_bias", True),
    )


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_binarization_equals_float_depthwise_on_plus_minus_one(padding, rng):
    x = np_sign(rng.normal(size=(2, 6, 6, 3)))
    w = np_sign(rng.normal(size=(3, 3, 3, 2)))
    quant = QuantDepthwiseConv2D(3, padding=padding, depth_multiplier=2, use_bias=False, **BINARY)
    plain = keras.layers.DepthwiseConv2D(3, padding=padding, depth_multiplier=2, use_bias=False)
    quant.build(x.shape)
    plain.build(x.shape)
    quant.set_weights([w])
    plain.set_weights([w])
    np.testing.assert_allclose(quant(x), plain(x), atol=1e-5)


@pytest.mark.parametrize("strides", [1, 2])
def test_one_padding_matches_numpy(strides, rng):
    x = rng.normal(size=(2, 6, 6, 2)).astype("float32")
    layer = QuantDepthwiseConv2D(3, strides=strides, padding="same", pad_values=1.0, **BINARY)
    out = np.asarray(layer(x))
    pads = same_pads((6, 6), (3, 3), (strides, strides))
    expected = np_depthwise(
        np_sign(x), np_sign(np.asarray(layer.kernel)), (strides, strides), pads, 1.0
    )
    np.testing.assert_allclose(out, expected + np.asarray(layer.bias), atol=1e-4)


def test_quantized_kernel_is_binary_and_gradients_flow(rng):
    x = rng.normal(size=(2, 5, 5, 2)).astype("float32")
    layer = QuantDepthwiseConv2D(3, padding="same", pad_values=1.0, **BINARY)
    with tf.GradientTape() as tape:
        loss = keras.ops.sum(layer(x) ** 2)
    grads = tape.gradient(loss, layer.trainable_weights)
    assert all(g is not None and np.count_nonzero(g) > 0 for g in grads)
    assert layer.is_binary
    np.testing.assert_array_equal(layer.quantized_kernel, np_sign(np.asarray(layer.kernel)))
    assert not QuantDepthwiseConv2D(3, input_quantizer="ste_sign").is_binary


def test_training_lowers_loss(rng):
    x = rng.normal(size=(32, 6, 6, 4)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > 0).astype("int32")
    model = keras.Sequential(
        [
            keras.Input((6, 6, 4)),
            QuantDepthwiseConv2D(
                3, padding="same", pad_values=1.0, depthwise_constraint="weight_clip", **BINARY
            ),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    losses = train_losses(model, x, y)
    assert losses[-1] < 0.9 * losses[0]


def test_non_numeric_pad_values_raise():
    with pytest.raises(ValueError, match="pad_values must be a number"):
        QuantDepthwiseConv2D(3, padding="same", pad_values="ones")


def test_channels_first_equals_channels_last(rng):
    """(TF's CPU Conv2D has no NCHW kernel, so only the depthwise layer is checked here.)"""
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    kwargs = {"kernel_size": 3, "strides": 2, "padding": "same", "pad_values": 1.0, **BINARY}
    last = QuantDepthwiseConv2D(**kwargs)
    first = QuantDepthwiseConv2D(data_format="channels_first", **kwargs)
    last.build(x.shape)
    first.build((2, 3, 8, 8))
    weights = [last.kernel.numpy(), rng.normal(size=3).astype("float32")]
    last.set_weights(weights)
    first.set_weights(weights)
    out = np.asarray(first(np.transpose(x, (0, 3, 1, 2))))
    assert out.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(np.transpose(out, (0, 2, 3, 1)), last(x), atol=1e-5)
