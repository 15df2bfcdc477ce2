"""Every quantized layer kind through Larq Compute Engine: which ops it becomes, and numerics.

One subprocess converts all models (tests.helpers.lce_convert), then each test audits one
flatbuffer as LCE.md §3 asks: binary convs are LceBconv2d, no LceDequantize, and the LCE
interpreter agrees with Keras.
"""

import keras
import numpy as np
import pytest

from kerasbnn.layers import QuantConv2D, QuantDense, QuantDepthwiseConv2D
from tests.helpers import lce_convert

pytest.importorskip("larq_compute_engine")
pytestmark = pytest.mark.tflite

BINARY = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"}


def _model(shape, *layers):
    inputs = keras.Input(shape)
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def _models():
    conv = {"filters": 32, "kernel_size": 3, "padding": "same", "pad_values": 1.0, **BINARY}
    models = {
        f"conv_{scaling}": _model((8, 8, 16), QuantConv2D(**conv, scaling=scaling))
        for scaling in (None, "xnor", "xnorpp", "xnorpp_factorized")
    }
    models["conv_stride2_valid"] = _model((9, 9, 16), QuantConv2D(32, 3, strides=2, **BINARY))
    models["conv_bn_chain"] = _model(
        (8, 8, 16),
        QuantConv2D(**conv),
        keras.layers.BatchNormalization(),
        QuantConv2D(**conv),
    )
    models["dense"] = _model((64,), QuantDense(32, **BINARY))
    models["dense_rank3"] = _model((3, 64), QuantDense(32, **BINARY))
    models["depthwise"] = _model(
        (8, 8, 16),
        QuantDepthwiseConv2D(
            3,
            padding="same",
            pad_values=1.0,
            input_quantizer="ste_sign",
            depthwise_quantizer="ste_sign",
        ),
    )
    return models


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    rng = np.random.default_rng(0)
    models = _models()
    for model in models.values():  # nonzero BN statistics and XNOR++ scales
        for weight in model.weights:
            if weight.name in ("moving_mean", "beta") or weight.name.startswith("xnorpp_"):
                weight.assign(rng.uniform(0.5, 1.5, size=weight.shape).astype("float32"))
    inputs = {
        name: rng.normal(size=(1, *m.input_shape[1:])).astype("float32")
        for name, m in models.items()
    }
    return lce_convert(models, inputs, tmp_path_factory.mktemp("lce"))


@pytest.mark.parametrize("scaling", [None, "xnor", "xnorpp", "xnorpp_factorized"])
def test_conv_with_each_scaling_is_one_bconv(converted, scaling):
    result = converted[f"conv_{scaling}"]
    ops = result["ops"]
    assert ops.count("LceBconv2d") == 1, ops
    assert "LceDequantize" not in ops
    # XNOR-Net's K map is a float 1-output box filter on |x|; nothing else may be a float conv.
    assert ops.count("CONV_2D") == (1 if scaling == "xnor" else 0), ops
    assert result["max_abs_diff"] < 1e-3


def test_strided_valid_conv(converted):
    result = converted["conv_stride2_valid"]
    assert result["ops"].count("LceBconv2d") == 1 and "CONV_2D" not in result["ops"]
    assert result["max_abs_diff"] < 1e-3


def test_conv_bn_conv_chains_bitpacked(converted):
    """bconv -> BN -> sign -> bconv: BN folds, the first bconv writes bitpacked output."""
    result = converted["conv_bn_chain"]
    assert result["ops"].count("LceBconv2d") == 2
    assert result["ops"].count("LceQuantize") == 1, result["ops"]
    assert result["max_abs_diff"] < 1e-3


@pytest.mark.parametrize("name", ["dense", "dense_rank3"])
def test_binary_dense_becomes_bconv(converted, name):
    result = converted[name]
    assert result["ops"].count("LceBconv2d") == 1, result["ops"]
    assert "FULLY_CONNECTED" not in result["ops"] and "LceDequantize" not in result["ops"]
    assert result["max_abs_diff"] < 1e-3


def test_binary_depthwise_stays_float(converted):
    """LCE has no binary depthwise kernel: documented in QuantDepthwiseConv2D."""
    result = converted["depthwise"]
    assert "DEPTHWISE_CONV_2D" in result["ops"] and "LceBconv2d" not in result["ops"]
    assert result["max_abs_diff"] < 1e-3
