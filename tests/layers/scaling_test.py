"""QuantConv2D output scaling: XNOR-Net K * alpha, XNOR++ Gamma (full and factorised)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbnn.layers import SCALINGS, QuantConv2D
from tests.helpers import check_layer, np_conv2d, np_sign, same_pads, train_losses

BINARY = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"}


def xnor_reference(x, w, strides, padding, groups=1):
    """XNOR-Net (thesis eqs. 2.6-2.8): conv(sign x, sign W) * K * alpha, K = A * k."""
    kh, kw, per_group, filters = w.shape
    pads = same_pads(x.shape[1:3], (kh, kw), strides) if padding == "same" else ((0, 0), (0, 0))
    outputs, scales = [], []
    for g in range(groups):
        xg = x[..., g * per_group : (g + 1) * per_group]
        wg = w[..., g * filters // groups : (g + 1) * filters // groups]
        outputs.append(np_conv2d(np_sign(xg), np_sign(wg), strides, pads, pad_value=1.0))
        a = np.abs(xg).mean(axis=-1, keepdims=True)
        k = np.full((kh, kw, 1, 1), 1.0 / (kh * kw))
        scales.append(
            np.repeat(np_conv2d(a, k, strides, pads, pad_value=0.0), filters // groups, axis=-1)
        )
    alpha = np.abs(w).mean(axis=(0, 1, 2))
    return np.concatenate(outputs, -1) * np.concatenate(scales, -1) * alpha


@pytest.mark.parametrize(
    "strides, padding, groups", [(1, "same", 1), (2, "same", 1), (1, "valid", 1), (2, "same", 2)]
)
def test_xnor_matches_numpy(strides, padding, groups, rng):
    x = rng.normal(size=(2, 7, 7, 4)).astype("float32")
    layer = QuantConv2D(
        6,
        3,
        strides=strides,
        padding=padding,
        pad_values=1.0,
        groups=groups,
        scaling="xnor",
        **BINARY,
    )
    out = np.asarray(layer(x))
    expected = xnor_reference(x, np.asarray(layer.kernel), (strides, strides), padding, groups)
    np.testing.assert_allclose(out, expected + np.asarray(layer.bias), rtol=1e-4, atol=1e-5)
    assert len(layer.weights) == 2  # XNOR-Net adds no parameters


def test_xnorpp_full_gamma_matches_numpy(rng):
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    layer = QuantConv2D(5, 3, strides=2, padding="same", pad_values=1.0, scaling="xnorpp", **BINARY)
    layer.build(x.shape)
    assert tuple(layer.xnorpp_scale.shape) == (3, 3, 5)  # (h_out, w_out, o) in NHWC
    np.testing.assert_array_equal(layer.xnorpp_scale, np.ones((3, 3, 5)))
    gamma = rng.uniform(0.5, 2.0, size=(3, 3, 5)).astype("float32")
    layer.xnorpp_scale.assign(gamma)
    pads = same_pads((6, 6), (3, 3), (2, 2))
    conv = np_conv2d(np_sign(x), np_sign(np.asarray(layer.kernel)), (2, 2), pads, 1.0)
    np.testing.assert_allclose(
        layer(x), conv * gamma + np.asarray(layer.bias), rtol=1e-5, atol=1e-5
    )


def test_xnorpp_factorized_matches_numpy(rng):
    x = rng.normal(size=(2, 6, 5, 3)).astype("float32")
    layer = QuantConv2D(4, 3, scaling="xnorpp_factorized", use_bias=False, **BINARY)
    layer.build(x.shape)
    shapes = {w.name: tuple(w.shape) for w in layer.weights}
    assert shapes == {
        "kernel": (3, 3, 3, 4),
        "xnorpp_alpha": (4,),
        "xnorpp_beta": (4,),
        "xnorpp_gamma": (3,),
    }
    alpha, beta, gamma = (rng.uniform(0.5, 2.0, size=n).astype("float32") for n in (4, 4, 3))
    layer.xnorpp_alpha.assign(alpha)
    layer.xnorpp_beta.assign(beta)
    layer.xnorpp_gamma.assign(gamma)
    conv = np_conv2d(np_sign(x), np_sign(np.asarray(layer.kernel)))
    big_gamma = np.einsum("o,h,w->hwo", alpha, beta, gamma)  # Gamma = alpha (x) beta (x) gamma
    np.testing.assert_allclose(layer(x), conv * big_gamma, rtol=1e-5)


@pytest.mark.parametrize("scaling", ["xnor", "xnorpp", "xnorpp_factorized"])
def test_gradients_reach_kernel_and_scales(scaling, rng):
    x = rng.normal(size=(2, 5, 5, 3)).astype("float32")
    layer = QuantConv2D(4, 3, padding="same", pad_values=1.0, scaling=scaling, **BINARY)
    with tf.GradientTape() as tape:
        loss = keras.ops.sum(layer(x) ** 2)
    grads = tape.gradient(loss, layer.trainable_weights)
    for weight, grad in zip(layer.trainable_weights, grads):
        assert grad is not None and np.count_nonzero(grad) > 0, weight.name


def test_xnorpp_gamma_gradient_is_conv_times_upstream(rng):
    """dL/dGamma = sum over the batch of upstream * conv(sign x, sign W)."""
    x = rng.normal(size=(2, 4, 4, 2)).astype("float32")
    layer = QuantConv2D(3, 3, scaling="xnorpp", use_bias=False, **BINARY)
    layer.build(x.shape)
    upstream = rng.normal(size=(2, 2, 2, 3)).astype("float32")
    with tf.GradientTape() as tape:
        loss = keras.ops.sum(layer(x) * upstream)
    grad = tape.gradient(loss, layer.xnorpp_scale)
    conv = np_conv2d(np_sign(x), np_sign(np.asarray(layer.kernel)))
    np.testing.assert_allclose(grad, (conv * upstream).sum(axis=0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scaling", ["xnor", "xnorpp", "xnorpp_factorized"])
def test_layer_checks_and_keras_round_trip(scaling, rng):
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    check_layer(
        QuantConv2D,
        {
            "filters": 4,
            "kernel_size": 3,
            "padding": "same",
            "pad_values": 1.0,
            "scaling": scaling,
            **BINARY,
        },
        x,
        expected_output_shape=(2, 6, 6, 4),
        expected_num_trainable_weights={"xnor": 2, "xnorpp": 3, "xnorpp_factorized": 5}[scaling],
    )


def test_xnorpp_training_lowers_loss(rng):
    x = rng.normal(size=(32, 6, 6, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > 0).astype("int32")
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            QuantConv2D(
                8, 3, padding="same", pad_values=1.0, scaling="xnorpp_factorized", **BINARY
            ),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    losses = train_losses(model, x, y)
    assert losses[-1] < 0.9 * losses[0]


def test_scales_multiply_the_output_not_the_binarized_input(rng):
    """LCE.md §1: the conv must see exact ±1 inputs; the scale comes after it."""
    x = rng.normal(size=(1, 5, 5, 2)).astype("float32")
    layer = QuantConv2D(2, 3, scaling="xnor", use_bias=False, **BINARY)
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec(x.shape, tf.float32)).graph
    convs = [op for op in graph.get_operations() if op.type == "Conv2D"]
    binary_conv = [
        op for op in convs if op.inputs[1].shape[-1] == 2
    ]  # the K box filter has 1 output
    assert len(binary_conv) == 1
    producer = binary_conv[0].inputs[0].op
    while producer.type in ("Identity", "IdentityN"):  # what LCE strips before matching
        producer = producer.inputs[0].op
    assert producer.type == "SelectV2"


def test_unknown_scaling_lists_valid_values():
    with pytest.raises(ValueError, match=r"Unknown scaling 'xnor\+\+'.*'xnorpp_factorized'"):
        QuantConv2D(2, 3, scaling="xnor++")
    assert SCALINGS == (None, "xnor", "xnorpp", "xnorpp_factorized")


@pytest.mark.parametrize("scaling", ["xnorpp", "xnorpp_factorized"])
def test_xnorpp_needs_a_known_spatial_size(scaling):
    layer = QuantConv2D(2, 3, scaling=scaling, **BINARY)
    with pytest.raises(ValueError, match="needs a known input height and width"):
        layer(keras.Input((None, None, 3)))


def test_xnor_with_magnitude_aware_kernel_would_scale_twice():
    with pytest.raises(ValueError, match="scaled twice"):
        QuantConv2D(
            2,
            3,
            scaling="xnor",
            input_quantizer="ste_sign",
            kernel_quantizer="magnitude_aware_sign",
        )
