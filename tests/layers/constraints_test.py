"""WeightClip: clipping values, optimizer integration in every quantized layer, serialization."""

import keras
import numpy as np
import pytest

from kerasbnn import constraints
from kerasbnn.layers import QuantConv2D, QuantDense, QuantDepthwiseConv2D
from tests.helpers import check_serialization


def test_clips_to_the_symmetric_interval():
    w = np.array([-3.0, -0.5, 0.0, 0.7, 2.0], "float32")
    np.testing.assert_allclose(constraints.WeightClip()(w), [-1.0, -0.5, 0.0, 0.7, 1.0])
    np.testing.assert_allclose(constraints.WeightClip(0.5)(w), [-0.5, -0.5, 0.0, 0.5, 0.5])


def test_alias_and_keras_identifiers_resolve():
    assert isinstance(constraints.get("weight_clip"), constraints.WeightClip)
    assert isinstance(constraints.get("non_neg"), keras.constraints.NonNeg)
    assert constraints.get(None) is None


def test_serialization_round_trip():
    restored = check_serialization(constraints.WeightClip(0.25))
    assert restored.clip_value == 0.25


@pytest.mark.parametrize("clip_value", [0, -1.0])
def test_non_positive_clip_value_raises(clip_value):
    with pytest.raises(ValueError, match="clip_value must be positive"):
        constraints.WeightClip(clip_value)


LAYERS = {
    "conv": (
        QuantConv2D,
        {
            "filters": 3,
            "kernel_size": 3,
            "kernel_constraint": "weight_clip",
            "kernel_quantizer": "ste_sign",
        },
        (4, 5, 5, 2),
    ),
    "dense": (
        QuantDense,
        {"units": 3, "kernel_constraint": "weight_clip", "kernel_quantizer": "ste_sign"},
        (4, 6),
    ),
    "depthwise": (
        QuantDepthwiseConv2D,
        {
            "kernel_size": 3,
            "depthwise_constraint": "weight_clip",
            "depthwise_quantizer": "ste_sign",
        },
        (4, 5, 5, 2),
    ),
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_latent_weights_are_clipped_after_an_optimizer_step(kind, rng):
    cls, kwargs, shape = LAYERS[kind]
    layer = cls(input_quantizer="ste_sign", **kwargs)
    x = rng.normal(size=shape).astype("float32")
    layer.build(shape)
    kernel = layer.kernel
    kernel.assign(rng.uniform(-0.99, 0.99, size=kernel.shape).astype("float32"))
    model = keras.Sequential([keras.Input(shape[1:]), layer])
    model.compile(keras.optimizers.SGD(100.0), "mse")  # a huge step pushes weights past 1
    target = 100.0 * np.ones(model.output_shape[1:], "float32")[None].repeat(shape[0], 0)
    model.train_on_batch(x, target)
    values = np.asarray(kernel)
    assert np.max(np.abs(values)) == pytest.approx(1.0)
    assert np.count_nonzero(np.abs(values) == 1.0) > 0
