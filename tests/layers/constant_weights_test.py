"""constant_quantized_weights: kernels quantized once inside the block, live again after it."""

import keras
import numpy as np
import pytest

from kerasbnn.layers import QuantConv2D, QuantDense, QuantDepthwiseConv2D
from kerasbnn.layers.base import constant_quantized_weights


def model():
    inputs = keras.Input((6, 6, 4))
    x = QuantConv2D(8, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign", name="conv")(
        inputs
    )
    x = QuantDepthwiseConv2D(3, depthwise_quantizer="ste_tern", name="depthwise")(x)
    x = keras.layers.Flatten()(x)
    x = QuantDense(3, kernel_quantizer="dorefa", name="dense")(x)
    return keras.Model(inputs, x)


def test_outputs_unchanged_and_constants_are_the_quantized_kernels(rng):
    m = model()
    x = rng.standard_normal((2, 6, 6, 4)).astype("float32")
    before = keras.ops.convert_to_numpy(m(x))
    with constant_quantized_weights(m) as names:
        assert sorted(names) == ["conv", "dense", "depthwise"]
        inside = keras.ops.convert_to_numpy(m(x))
        conv = m.get_layer("conv")
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(conv._constant_weights["kernel"]),
            np.where(conv.kernel.numpy() >= 0, 1.0, -1.0),
        )
    np.testing.assert_allclose(inside, before, rtol=1e-6, atol=1e-6)


def test_inside_the_block_the_variable_is_not_read_after_the_block_it_is(rng):
    m = model()
    x = rng.standard_normal((2, 6, 6, 4)).astype("float32")
    conv = m.get_layer("conv")
    with constant_quantized_weights(m):
        first = keras.ops.convert_to_numpy(m(x))
        conv.kernel.assign(-conv.kernel)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(m(x)), first)
    assert conv._constant_weights == {}
    assert not np.allclose(keras.ops.convert_to_numpy(m(x)), first)


def test_constants_are_dropped_when_the_block_raises():
    m = model()
    m(np.zeros((1, 6, 6, 4), "float32"))
    with pytest.raises(RuntimeError, match="boom"):
        with constant_quantized_weights(m):
            raise RuntimeError("boom")
    assert all(m.get_layer(n)._constant_weights == {} for n in ("conv", "depthwise", "dense"))
