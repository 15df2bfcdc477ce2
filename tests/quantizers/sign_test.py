"""1-bit quantizers: forward values and pseudo-gradients against NumPy, element by element."""

import numpy as np
import pytest
import tensorflow as tf

from kerasbnn import quantizers


def value_and_grad(quantizer, x, dy):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantizer(x)
        loss = tf.reduce_sum(y * dy)
    return y.numpy(), tape.gradient(loss, x).numpy()


@pytest.fixture
def data(rng):
    x = (1.5 * rng.standard_normal((2, 3, 3, 4))).astype("float32")
    x.flat[:5] = [0.0, -0.0, 1.0, -1.0, 0.5]
    dy = rng.uniform(0.5, 1.5, size=x.shape).astype("float32")
    return x, dy


def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def np_swish_grad(x, beta):
    bx = beta * x
    return beta * (2 - bx * np.tanh(bx / 2)) / (1 + np.cosh(bx))


CASES = [
    (quantizers.SteSign(), np_sign, lambda x: (np.abs(x) <= 1.0) * 1.0),
    (quantizers.SteSign(clip_value=None), np_sign, np.ones_like),
    (quantizers.SteSign(clip_value=0.5), np_sign, lambda x: (np.abs(x) <= 0.5) * 1.0),
    (quantizers.ApproxSign(), np_sign, lambda x: np.maximum(2 - 2 * np.abs(x), 0)),
    (quantizers.SwishSign(), np_sign, lambda x: np_swish_grad(x, 5.0)),
    (quantizers.SwishSign(beta=2.0), np_sign, lambda x: np_swish_grad(x, 2.0)),
    (quantizers.SteHeaviside(), lambda x: (x > 0) * 1.0, lambda x: (np.abs(x) <= 1.0) * 1.0),
    (quantizers.SteHeaviside(clip_value=None), lambda x: (x > 0) * 1.0, np.ones_like),
]


# ids: the quantizer's repr and the functions' names (pytest's default for None), not a
# function's repr, which holds its address: that differs between the processes of `pytest -n`,
# and pytest-xdist refuses workers that collect different ids
@pytest.mark.parametrize("quantizer,forward,gradient", CASES,
                         ids=lambda v: repr(v) if isinstance(v, quantizers.Quantizer) else None)
def test_forward_and_gradient(quantizer, forward, gradient, data):
    x, dy = data
    y, grad = value_and_grad(quantizer, x, dy)
    np.testing.assert_array_equal(y, forward(x))
    np.testing.assert_allclose(grad, dy * gradient(x), rtol=1e-5, atol=1e-6)
    assert quantizer.precision == 1


def test_sign_of_zero_is_plus_one():
    y = quantizers.binary_sign(np.array([0.0, -0.0], "float32"))
    np.testing.assert_array_equal(np.asarray(y), [1.0, 1.0])


def test_magnitude_aware_sign_scales_per_output_channel(data):
    x, dy = data
    scale = np.abs(x).mean(axis=(0, 1, 2))
    for clip_value in (1.0, None):
        y, grad = value_and_grad(quantizers.MagnitudeAwareSign(clip_value=clip_value), x, dy)
        mask = np.ones_like(x) if clip_value is None else (np.abs(x) <= clip_value)
        np.testing.assert_allclose(y, scale * np_sign(x), rtol=1e-6)
        np.testing.assert_allclose(
            grad, dy * scale * mask, rtol=1e-5, atol=1e-6, err_msg=f"clip={clip_value}"
        )


def test_bad_arguments_fail_at_construction():
    bad_clip = "clip_value must be a positive number or None"
    cases = [
        (lambda: quantizers.SteSign(clip_value=0.0), bad_clip),
        (lambda: quantizers.SteHeaviside(clip_value=-1.0), bad_clip),
        (lambda: quantizers.MagnitudeAwareSign(clip_value=-2), bad_clip),
        (lambda: quantizers.SwishSign(beta=0.0), "beta must be positive"),
    ]
    for factory, message in cases:
        with pytest.raises(ValueError, match=message):
            factory()
