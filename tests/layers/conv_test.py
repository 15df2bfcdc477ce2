"""QuantConv2D: Keras parity, binarization, one-padding, gradients, training, serialization."""

import inspect

import keras
import numpy as np
import pytest

from kerasbnn import quantizers
from kerasbnn.layers import QuantConv2D
from tests.helpers import check_layer, np_conv2d, np_sign, same_pads, train_losses

BINARY = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"}


def test_signature_matches_keras_conv2d():
    ours = inspect.signature(QuantConv2D.__init__).parameters
    keras_params = inspect.signature(keras.layers.Conv2D.__init__).parameters
    for name, param in keras_params.items():
        assert name in ours, f"QuantConv2D lacks Keras argument {name!r}"
        assert ours[name].default == param.default, name
    extra = set(ours) - set(keras_params)
    assert extra == {"input_quantizer", "kernel_quantizer", "pad_values", "scaling"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {**BINARY, "padding": "same", "pad_values": 1.0, "kernel_constraint": "weight_clip"},
        {**BINARY, "strides": 2, "padding": "same", "pad_values": 1.0, "use_bias": False},
        {
            "input_quantizer": "approx_sign",
            "kernel_quantizer": "magnitude_aware_sign",
            "activation": "relu",
        },
    ],
    ids=["float", "binary_same_one", "binary_stride2", "bireal"],
)
def test_layer_checks(kwargs, rng):
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    strides = kwargs.get("strides", 1)
    size = (6 if kwargs.get("padding") == "same" else 4) // strides
    check_layer(
        QuantConv2D,
        {"filters": 4, "kernel_size": 3, **kwargs},
        x,
        expected_output_shape=(2, size, size, 4),
        expected_num_trainable_weights=1 + kwargs.get("use_bias", True),
    )


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("strides", [1, 2])
def test_binarization_equals_float_conv_on_plus_minus_one(padding, strides, rng):
    """larq's test_binarization: on ±1 inputs and ±1 weights the binary layer is the float one."""
    x = np_sign(rng.normal(size=(2, 7, 7, 5)))
    w = np_sign(rng.normal(size=(3, 3, 5, 4)))
    quant = QuantConv2D(4, 3, strides=strides, padding=padding, **BINARY)
    plain = keras.layers.Conv2D(4, 3, strides=strides, padding=padding)
    quant.build(x.shape)
    plain.build(x.shape)
    quant.set_weights([w, np.zeros(4, "float32")])
    plain.set_weights([w, np.zeros(4, "float32")])
    np.testing.assert_allclose(quant(x), plain(x), atol=1e-5)


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("size", [7, 8])
def test_one_padding_matches_numpy(strides, size, rng):
    x = rng.normal(size=(2, size, size, 3)).astype("float32")
    layer = QuantConv2D(4, 3, strides=strides, padding="same", pad_values=1.0, **BINARY)
    out = np.asarray(layer(x))
    w = np.asarray(layer.kernel)
    pads = same_pads((size, size), (3, 3), (strides, strides))
    expected = np_conv2d(np_sign(x), np_sign(w), (strides, strides), pads, pad_value=1.0)
    np.testing.assert_allclose(out, expected + np.asarray(layer.bias), atol=1e-4)
    # One-padding differs from Keras' zero padding at the border only.
    zero = np_conv2d(np_sign(x), np_sign(w), (strides, strides), pads, pad_value=0.0)
    assert not np.allclose(expected, zero)
    np.testing.assert_allclose(expected[:, 1:-1, 1:-1], zero[:, 1:-1, 1:-1])


def test_one_padding_with_dynamic_spatial_size(rng):
    inputs = keras.Input((None, None, 3))
    layer = QuantConv2D(2, 3, strides=2, padding="same", pad_values=1.0, **BINARY)
    model = keras.Model(inputs, layer(inputs))
    for size in (7, 8):
        x = rng.normal(size=(1, size, size, 3)).astype("float32")
        pads = same_pads((size, size), (3, 3), (2, 2))
        expected = np_conv2d(np_sign(x), np_sign(np.asarray(layer.kernel)), (2, 2), pads, 1.0)
        np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-4)


def test_pad_values_ignored_for_valid_padding(rng):
    x = rng.normal(size=(1, 5, 5, 2)).astype("float32")
    layer = QuantConv2D(2, 3, padding="valid", pad_values=1.0, use_bias=False, **BINARY)
    out = np.asarray(layer(x))
    np.testing.assert_allclose(
        out, np_conv2d(np_sign(x), np_sign(np.asarray(layer.kernel))), atol=1e-5
    )


def test_dilation_and_groups_match_numpy(rng):
    x = rng.normal(size=(1, 9, 9, 4)).astype("float32")
    layer = QuantConv2D(
        4, 3, dilation_rate=2, padding="same", pad_values=1.0, use_bias=False, **BINARY
    )
    out = np.asarray(layer(x))
    w = np.asarray(layer.quantized_kernel)
    pads = same_pads((9, 9), (3, 3), (1, 1), (2, 2))
    np.testing.assert_allclose(
        out, np_conv2d(np_sign(x), w, pads=pads, pad_value=1.0, dilation=(2, 2)), atol=1e-4
    )

    grouped = QuantConv2D(4, 3, groups=2, use_bias=False, **BINARY)
    out = np.asarray(grouped(x))
    w = np_sign(np.asarray(grouped.kernel))
    expected = np.concatenate(
        [
            np_conv2d(np_sign(x[..., 2 * g : 2 * g + 2]), w[..., 2 * g : 2 * g + 2])
            for g in range(2)
        ],
        axis=-1,
    )
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_quantized_kernel_and_is_binary():
    layer = QuantConv2D(3, 2, **BINARY)
    layer.build((None, 4, 4, 2))
    np.testing.assert_array_equal(layer.quantized_kernel, np_sign(np.asarray(layer.kernel)))
    assert layer.is_binary
    assert isinstance(layer.input_quantizer, quantizers.SteSign)
    float_layer = QuantConv2D(3, 2, kernel_quantizer="ste_sign")
    float_layer.build((None, 4, 4, 2))
    assert not float_layer.is_binary
    np.testing.assert_array_equal(
        float_layer.quantized_kernel, np_sign(np.asarray(float_layer.kernel))
    )
    plain = QuantConv2D(3, 2)
    plain.build((None, 4, 4, 2))
    np.testing.assert_array_equal(plain.quantized_kernel, plain.kernel)


def test_gradients_are_straight_through(rng):
    """d loss / d W equals the float conv's gradient w.r.t. sign(W), masked by |W| <= 1."""
    import tensorflow as tf

    x = rng.normal(size=(2, 5, 5, 3)).astype("float32")
    layer = QuantConv2D(4, 3, padding="same", pad_values=1.0, use_bias=False, **BINARY)
    layer.build(x.shape)
    w = rng.uniform(-1.5, 1.5, size=(3, 3, 3, 4)).astype("float32")
    layer.set_weights([w])
    upstream = rng.normal(size=(2, 5, 5, 4)).astype("float32")
    with tf.GradientTape() as tape:
        loss = keras.ops.sum(layer(x) * upstream)
    grad = np.asarray(tape.gradient(loss, layer.kernel))

    wb = tf.Variable(np_sign(w))
    with tf.GradientTape() as tape:
        padded = tf.pad(np_sign(x), [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=1.0)
        loss = tf.reduce_sum(tf.nn.conv2d(padded, wb, 1, "VALID") * upstream)
    expected = np.asarray(tape.gradient(loss, wb)) * (np.abs(w) <= 1.0)
    np.testing.assert_allclose(grad, expected, atol=1e-4)
    assert np.count_nonzero(grad) > 0


def test_learnable_quantizer_parameters_are_created_and_trained(rng):
    """A quantizer's parameter_specs become layer weights that receive gradients."""
    import tensorflow as tf

    class ScaledSign(quantizers.Quantizer):
        precision = 1

        def call(self, inputs, step):
            return step * quantizers.ste_sign(inputs)

        def parameter_specs(self, input_shape):
            return {"step": ((), "ones")}

    layer = QuantConv2D(2, 3, input_quantizer=ScaledSign(), kernel_quantizer="ste_sign")
    x = rng.normal(size=(1, 5, 5, 2)).astype("float32")
    with tf.GradientTape() as tape:
        loss = keras.ops.sum(layer(x) ** 2)
    names = [w.name for w in layer.trainable_weights]
    assert "input_quantizer_step" in names
    grads = tape.gradient(loss, layer.trainable_weights)
    assert all(g is not None for g in grads)
    assert float(np.abs(grads[names.index("input_quantizer_step")])) > 0


def test_training_lowers_loss(rng):
    x = rng.normal(size=(32, 6, 6, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > 0).astype("int32")
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            QuantConv2D(
                8, 3, padding="same", pad_values=1.0, kernel_constraint="weight_clip", **BINARY
            ),
            keras.layers.BatchNormalization(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    losses = train_losses(model, x, y)
    assert losses[-1] < 0.9 * losses[0]


def test_quantizer_config_round_trips_as_registered_names():
    layer = QuantConv2D(
        2, 3, input_quantizer=quantizers.SteSign(clip_value=2.0), kernel_quantizer="approx_sign"
    )
    config = layer.get_config()
    assert config["input_quantizer"]["registered_name"] == "kerasbnn>SteSign"
    restored = QuantConv2D.from_config(config)
    assert restored.input_quantizer == quantizers.SteSign(clip_value=2.0)
    assert isinstance(restored.kernel_quantizer, quantizers.ApproxSign)


def test_unknown_quantizer_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown quantizer 'ste_sgn'.*ste_sign"):
        QuantConv2D(2, 3, input_quantizer="ste_sgn")


@pytest.mark.parametrize("pad_values", ["one", None, True])
def test_non_numeric_pad_values_raise(pad_values):
    with pytest.raises(ValueError, match="pad_values must be a number"):
        QuantConv2D(2, 3, padding="same", pad_values=pad_values)


@pytest.mark.parametrize("cls", ["QuantConv2D", "QuantDense"])
def test_lsq_steps_are_layer_weights_that_survive_saving(cls, rng):
    """Learnable quantizer parameters are saved after Keras' own kernel and bias."""
    from kerasbnn.layers import QuantDense

    layer_cls, kwargs, shape = {
        "QuantConv2D": (QuantConv2D, {"filters": 3, "kernel_size": 3}, (2, 5, 5, 2)),
        "QuantDense": (QuantDense, {"units": 3}, (2, 6)),
    }[cls]
    kwargs.update(
        input_quantizer=quantizers.LSQ(2, "activations", initial_step=0.3),
        kernel_quantizer=quantizers.LSQ(2, "weights", initial_step=0.05),
    )
    model = check_layer(
        layer_cls,
        kwargs,
        rng.normal(size=shape).astype("float32"),
        expected_num_trainable_weights=4,
    )
    layer = model.layers[-1]
    names = [w.name for w in layer.trainable_weights]
    assert names[2:] == ["input_quantizer_step", "kernel_quantizer_step"]
