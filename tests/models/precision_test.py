"""Precision resolution: bits, quantizer families and the 1-bit schemes."""

import numpy as np
import pytest

from kerasbnn import quantizers
from kerasbnn.models import Precision, resolve_precision
from kerasbnn.models.precision import RELU_THRESHOLD, split_bits


@pytest.mark.parametrize(
    "bits, expected", [(32, (32, 32)), (4, (4, 4)), ((1, 2), (1, 2)), ([2, 8], (2, 8))]
)
def test_split_bits(bits, expected):
    assert split_bits(bits) == expected


@pytest.mark.parametrize(
    "binary, input_cls, kernel_cls, extra",
    [
        ("plain", quantizers.SteSign, quantizers.SteSign, {"kernel_constraint": "weight_clip"}),
        ("xnor", quantizers.SteSign, quantizers.SteSign, {"scaling": "xnor"}),
        ("xnorpp", quantizers.SteSign, quantizers.SteSign,
         {"kernel_constraint": "weight_clip", "scaling": "xnorpp_factorized"}),
        ("bireal", quantizers.ApproxSign, quantizers.MagnitudeAwareSign, {}),
        ("dorefa", quantizers.SteSign, quantizers.MagnitudeAwareSign, {}),
    ],
)
def test_binary_schemes(binary, input_cls, kernel_cls, extra):
    precision = resolve_precision(1, binary=binary)
    kwargs = precision.conv_kwargs()
    assert type(kwargs.pop("input_quantizer")) is input_cls
    assert type(kwargs.pop("kernel_quantizer")) is kernel_cls
    assert kwargs.pop("pad_values") == 1.0
    assert kwargs == extra
    assert precision.is_binary and precision.tag == "w1a1"


def test_dorefa_binary_activations_are_round_clip_in_plus_minus_one_form():
    precision = resolve_precision(1, binary="dorefa")
    assert precision.input_shift(nonnegative=False) == -0.5
    quantizer = precision.input_quantizer()
    assert quantizer.clip_value == 0.5
    a = np.array([-0.3, 0.2, 0.49, 0.51, 0.9, 1.4], dtype="float32")
    dorefa = np.round(np.clip(a, 0.0, 1.0))  # MAD eq. 5, {0, 1}
    np.testing.assert_array_equal(np.asarray(quantizer(a - 0.5)), 2 * dorefa - 1)


def test_nonnegative_inputs_get_a_threshold_only_when_binarized():
    assert resolve_precision(1).input_shift(nonnegative=True) == -RELU_THRESHOLD
    assert resolve_precision(1).input_shift(nonnegative=False) is None
    assert resolve_precision(32).input_shift(nonnegative=True) is None


def test_float_precision_has_no_quantizers():
    precision = resolve_precision(32)
    assert precision.is_float and precision.input_quantizer() is None
    assert precision.kernel_quantizer() is None
    assert precision.conv_kwargs()["pad_values"] == 0.0


def test_real_weights_with_binary_activations():
    precision = resolve_precision((32, 1), binary="bireal")
    assert type(precision.input_quantizer()) is quantizers.ApproxSign
    assert precision.kernel_quantizer() is None and not precision.is_binary


@pytest.mark.parametrize("family", ["dorefa", "hwgq", "lsq"])
def test_k_bit_sides_use_the_quantizer_family(family):
    precision = resolve_precision((2, 4), quantizer=family)
    assert precision == Precision(2, 4, family, "plain")
    weights, activations = precision.kernel_quantizer(), precision.input_quantizer()
    assert weights.alias == family and weights.precision == 2
    assert activations.alias == family and activations.precision == 4


def _body_convs(model):
    from kerasbnn.layers import QuantConv2D

    return [layer for layer in model.layers
            if isinstance(layer, QuantConv2D) and layer.input_quantizer is not None]


@pytest.mark.parametrize("block", ["bireal", "reactnet"])
def test_one_conv_blocks_quantize_their_signed_conv_inputs_on_a_signed_grid(block):
    from kerasbnn import models

    build = models.get("resnet20")
    lsq = build((28, 28, 1), 10, bits=4, width_multiplier=0.25, block=block, quantizer="lsq")
    convs = _body_convs(lsq)
    assert len(convs) == 18
    assert {(c.input_quantizer.mode, c.input_quantizer.q_n) for c in convs} == {
        ("signed_activations", 8)}
    hardtanh = [layer.name for layer in lsq.layers if layer.name.endswith("_hardtanh")]
    assert len(hardtanh) == (18 if block == "bireal" else 0)  # as in the float network
    # DoReFa and HWGQ keep their own (non-negative) definition of an activation quantizer
    for family in ("dorefa", "hwgq"):
        other = build((28, 28, 1), 10, bits=4, width_multiplier=0.25, block=block,
                      quantizer=family)
        assert {c.input_quantizer.mode for c in _body_convs(other)} == {"activations"}
    # the basic block's convs read ReLU outputs: unsigned, as before
    basic = build((28, 28, 1), 10, bits=4, width_multiplier=0.25, block="basic", quantizer="lsq")
    assert {c.input_quantizer.mode for c in _body_convs(basic)} == {"activations"}


def test_signed_flag_changes_only_k_bit_inputs():
    for bits, expected in ((4, "signed_activations"), (8, "signed_activations")):
        assert resolve_precision(bits, "lsq").input_quantizer(signed=True).mode == expected
    assert type(resolve_precision(1, binary="bireal").input_quantizer(signed=True)) is (
        quantizers.ApproxSign)
    assert resolve_precision(32, "lsq").input_quantizer(signed=True) is None
