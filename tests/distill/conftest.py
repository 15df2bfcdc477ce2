"""Tiny functional models with named distillation points for the distill tests."""

import keras
import numpy as np
import pytest

from kerasbnn.layers import QuantConv2D


def tiny_model(
    name,
    *,
    binary=False,
    widths=(4, 6),
    input_shape=(8, 8, 3),
    classes=5,
    softmax=False,
    batch_norm=True,
    seed=0,
):
    """conv -> `stage1_out` -> strided conv -> `stage2_out` -> pool -> dense logits."""
    init = keras.initializers.GlorotUniform(seed=seed)
    quant = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"} if binary else {}
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(widths[0], 3, padding="same", kernel_initializer=init, name="stem")(
        inputs
    )
    if batch_norm:
        x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("relu", name="stage1_out")(x)
    x = QuantConv2D(
        widths[1], 3, strides=2, padding="same", kernel_initializer=init, name="conv2", **quant
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name="conv2_bn")(x)
    x = keras.layers.Activation("relu", name="stage2_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(
        classes, kernel_initializer=init, activation="softmax" if softmax else None, name="logits"
    )(x)
    return keras.Model(inputs, outputs, name=name)


@pytest.fixture
def make_model():
    return tiny_model


@pytest.fixture
def toy_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 5, size=(16,)).astype("int32")
    return x, y
