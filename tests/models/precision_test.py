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
