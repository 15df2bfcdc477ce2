"""larq quantizers, constraints and legacy-Keras options as kerasbnn / Keras 3 objects.

The configs below are the forms the legacy Keras 2 writes (see larq_models.py, whose files
import_test.py reads for real): an alias string, a class dict carrying larq's Layer keys,
and a plain-function dict.
"""

import keras
import pytest

from kerasbnn import constraints, quantizers
from kerasbnn.larq_import import LarqImportError, layers, objects

LAYER_KEYS = {"name": "q", "trainable": True, "dtype": "float32"}


def _class(name, **config):
    return {"module": "larq.quantizers", "class_name": name, "config": {**LAYER_KEYS, **config}}


def _function(name):
    return {"module": "builtins", "class_name": "function", "config": name}


@pytest.mark.parametrize(
    "serialized, expected",
    [
        ("ste_sign", quantizers.SteSign()),
        (_function("ste_sign"), quantizers.SteSign()),
        (_class("SteSign", clip_value=1.25), quantizers.SteSign(1.25)),
        (_class("SteSign", clip_value=None), quantizers.SteSign(None)),
        ("approx_sign", quantizers.ApproxSign()),
        (_class("ApproxSign"), quantizers.ApproxSign()),
        (_class("SwishSign", beta=3.0), quantizers.SwishSign(3.0)),
        ("magnitude_aware_sign", quantizers.MagnitudeAwareSign()),
        (_class("MagnitudeAwareSign", clip_value=1.5), quantizers.MagnitudeAwareSign(1.5)),
        (_class("SteHeaviside", clip_value=2.0), quantizers.SteHeaviside(2.0)),
        (_function("ste_tern"), quantizers.SteTern()),
        (
            _class("SteTern", threshold_value=0.1, ternary_weight_networks=True, clip_value=1.0),
            quantizers.SteTern(0.1, True, 1.0),
        ),
        (_class("DoReFa", k_bit=3, mode="activations"), quantizers.DoReFa(3, "activations")),
        (_class("DoReFa", k_bit=2, mode="weights"), quantizers.DoReFa(2, "weights")),
        ("dorefa_quantizer", quantizers.DoReFa(2, "activations")),
        (_class("NoOp", precision=4), quantizers.NoOp(4)),
        (None, None),
        ("linear", None),
    ],
)
def test_quantizers(serialized, expected):
    assert objects.quantizer(serialized, "layer 'x'") == expected


def test_unknown_quantizer_is_named_with_the_supported_ones():
    with pytest.raises(LarqImportError, match=r"layer 'c' \(QuantConv2D\) kernel_quantizer is the "
                       r"quantizer 'my_sign', which kerasbnn does not have.*ApproxSign"):
        objects.quantizer(_function("my_sign"), "layer 'c' (QuantConv2D) kernel_quantizer")


def test_quantizers_without_a_kerasbnn_equal():
    with pytest.raises(LarqImportError, match=r"DoReFa\(k_bit=1, mode='weights'\)"):
        objects.quantizer(_class("DoReFa", k_bit=1, mode="weights"), "layer 'x'")
    with pytest.raises(LarqImportError, match=r"layer 'x': DoReFa.*cannot be rebuilt.*\[1, 8\]"):
        objects.quantizer(_class("DoReFa", k_bit=16, mode="activations"), "layer 'x'")
    with pytest.raises(LarqImportError, match=r"SteSign\(\{'threshold': 0.1\}\) cannot be rebuilt"):
        objects.quantizer(_class("SteSign", threshold=0.1), "layer 'x'")


def test_larq_metrics_are_training_diagnostics():
    flip_ratio = _class("SteSign", clip_value=1.0, metrics=["flip_ratio"])
    assert objects.quantizer(flip_ratio, "layer 'x'") == quantizers.SteSign(1.0)


def test_constraints():
    assert objects.constraint("weight_clip", "w").clip_value == 1.0
    clip = objects.constraint({"class_name": "weight_clip", "config": {"clip_value": 1}}, "w")
    assert isinstance(clip, constraints.WeightClip) and clip.clip_value == 1.0
    clip = objects.constraint({"class_name": "WeightClip", "config": {"clip_value": 0.5}}, "w")
    assert clip.clip_value == 0.5
    max_norm = {"module": "keras.constraints", "class_name": "MaxNorm",
                "config": {"max_value": 2.0, "axis": 0}}
    assert isinstance(objects.constraint(max_norm, "w"), keras.constraints.MaxNorm)
    with pytest.raises(LarqImportError, match="the constraint 'Mystery', which Keras 3"):
        objects.constraint({"class_name": "Mystery", "config": {}}, "layer 'x'")


def test_activations_initializers_regularizers_dtypes():
    assert objects.activation("hard_tanh", "x") == "hard_tanh"
    with pytest.raises(LarqImportError, match="'leaky_tanh'"):
        objects.activation("leaky_tanh", "layer 'x'")
    glorot = {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": 3}}
    assert isinstance(objects.initializer(glorot), keras.initializers.GlorotUniform)
    assert objects.initializer(_function("blurpool_initializer")) is None  # dropped: default
    l2 = {"module": "keras.regularizers", "class_name": "L2", "config": {"l2": 1e-4}}
    assert isinstance(objects.regularizer(l2, "x"), keras.regularizers.L2)
    with pytest.raises(LarqImportError, match="the regularizer 'Mystery'"):
        objects.regularizer({"class_name": "Mystery", "config": {}}, "layer 'x'")
    policy = {"module": "keras.mixed_precision", "class_name": "Policy",
              "config": {"name": "mixed_float16"}}
    assert objects.dtype(policy) == "mixed_float16" and objects.dtype("float32") == "float32"


def test_legacy_options():
    config = {"name": "bn", "axis": [3], "fused": True, "renorm": False, "momentum": 0.9}
    kwargs = layers.translate_config(
        "BatchNormalization", keras.layers.BatchNormalization, config, "bn"
    )
    assert kwargs == {"name": "bn", "axis": [3], "momentum": 0.9}
    entry = {"class_name": "BatchNormalization", "config": config,
             "build_config": {"input_shape": [None, 8, 8, 4]}}
    assert layers.translate(entry, None).axis == -1  # not rank-4 statistics (LCE)
    entry = {**entry, "build_config": {"input_shape": [None, 8, 8, 4, 2]}}
    assert layers.translate(entry, None).axis == 3
    expected = "renorm=True; the importer rebuilds BatchNormalization only with renorm=False"
    with pytest.raises(LarqImportError, match=expected):
        layers.translate_config(
            "BatchNormalization", keras.layers.BatchNormalization, {"renorm": True}, "layer 'bn'"
        )
    kwargs = layers.translate_config("LeakyReLU", keras.layers.LeakyReLU, {"alpha": 0.2}, "x")
    assert kwargs == {"negative_slope": 0.2}
    with pytest.raises(LarqImportError, match="sets jit=True, an option Keras 3's Dense does"):
        layers.translate_config("Dense", keras.layers.Dense, {"units": 2, "jit": True}, "layer 'd'")
