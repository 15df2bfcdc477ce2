"""Layer-by-layer verification: what passes (rounding flips) and what fails (real differences).

The "LCE" side is the converted file of a second model that differs from the Keras model in
one known way, so each case has a known answer.
"""

import keras
import numpy as np
import pytest

pytest.importorskip("larq_compute_engine")

from kerasbnn import export  # noqa: E402
from kerasbnn.export import verify  # noqa: E402
from kerasbnn.layers import QuantConv2D  # noqa: E402

pytestmark = pytest.mark.tflite

SHIFT = 0.5


def shifted_model(shift, dense_scale=1.0):
    """Input -> float 1x1 conv adding `shift` per channel -> binary conv -> dense.

    With the identity kernel the binarized value is exactly `x + shift`, so an input equal
    to -SHIFT is an exact zero in the model with `shift=SHIFT`.
    """
    inputs = keras.Input((4, 4, 32))
    x = keras.layers.Conv2D(32, 1, name="shift")(inputs)
    x = QuantConv2D(8, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                    kernel_quantizer="ste_sign", name="bconv")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    model.get_layer("shift").set_weights(
        [np.eye(32, dtype="float32")[None, None], np.full(32, shift, "float32")]
    )
    model.get_layer("bconv").set_weights(
        [rng.standard_normal((3, 3, 32, 8)).astype("float32"), np.zeros(8, "float32")]
    )
    kernel = rng.standard_normal((128, 3)).astype("float32")
    model.get_layer("head").set_weights([kernel * dense_scale, np.zeros(3, "float32")])
    return model


def sample(zeros):
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, (2, 4, 4, 32)).astype("float32")
    x.reshape(-1)[rng.choice(x.size, zeros, replace=False)] = -SHIFT  # exact zeros after shift
    return x


def converted(model, tmp_path):
    return export.lce_convert(model, tmp_path / "other.tflite", verify=False).flatbuffer


def run(keras_model, lce_model, x, tmp_path):
    layers = [keras_model.get_layer("bconv")]
    return verify.verify(keras_model, converted(lce_model, tmp_path), x, layers)


def test_unpack_bits_reads_lce_bitpacking():
    rng = np.random.default_rng(0)
    signs = rng.choice([-1.0, 1.0], size=(2, 3, 3, 40))
    bits = (signs < 0).astype(np.uint64)  # LCE: bit 1 means -1, channel c in bit c % 32
    words = np.zeros((2, 3, 3, 2), np.uint64)
    for c in range(40):
        words[..., c // 32] |= bits[..., c] << np.uint64(c % 32)
    packed = words.astype(np.uint32).view(np.int32)
    np.testing.assert_array_equal(verify.unpack_bits(packed, 40), signs)


def test_exposed_bconv_inputs_keep_the_model_output(tmp_path):
    model = shifted_model(SHIFT)
    flatbuffer = converted(model, tmp_path)
    exposed, count = verify.expose_bconv_inputs(flatbuffer)
    assert count == 1
    graph, original = export.read_graph(exposed), export.read_graph(flatbuffer)
    assert [op.name for op in graph.ops] == [op.name for op in original.ops]


def test_identical_conversion_has_no_flips(tmp_path):
    model = shifted_model(SHIFT)
    result = run(model, model, sample(zeros=0), tmp_path)
    assert result.failure is None and result.flipped_bits == {} and result.first_flip is None
    assert result.max_abs_diff < 1e-4 and result.top1_agreement == 1.0


def test_rounding_flip_at_exact_zero_passes_and_is_reported(tmp_path):
    # LCE's model adds 1e-6 less: Keras' exact zeros are -1e-6 there and binarize to -1.
    keras_model, lce_model = shifted_model(SHIFT), shifted_model(SHIFT - 1e-6)
    result = run(keras_model, lce_model, sample(zeros=2), tmp_path)
    assert result.failure is None
    assert result.flipped_bits == {"bconv": 2} and result.first_flip == ("bconv", 2)
    assert result.max_flip_margin == 0.0
    assert result.max_abs_diff > 1e-3  # the free outputs differ: flips move the logits
    assert result.forced_max_abs_diff < 1e-4


def test_many_flips_at_zero_are_a_sign_convention_error(tmp_path):
    # Rounding flips are rare; LCE binarizing every exact zero to -1 is a convention error,
    # even though each flipped value is zero up to rounding.
    keras_model, lce_model = shifted_model(SHIFT), shifted_model(SHIFT - 1e-6)
    x = sample(zeros=60)
    assert verify.allowed_flips(x[..., :32].size, len(x)) == 2
    result = run(keras_model, lce_model, x, tmp_path)
    assert result.flipped_bits == {"bconv": 60} and result.max_flip_margin == 0.0
    assert result.failure is not None and "'bconv'" in result.failure
    assert "another sign convention" in result.failure


def test_one_outlier_does_not_widen_the_rounding_bound(tmp_path):
    # A real shift of 0.3 must fail even when one input value is huge: the bound is relative
    # to the 99th percentile of |x|, not to its maximum.
    keras_model, lce_model = shifted_model(SHIFT), shifted_model(SHIFT - 0.3)
    x = sample(zeros=0)
    x[:, 0, 0, 0] = 1e4
    result = run(keras_model, lce_model, x, tmp_path)
    assert result.failure is not None and "far from zero" in result.failure


def test_quantizers_are_restored_after_verification(tmp_path):
    keras_model, lce_model = shifted_model(SHIFT), shifted_model(SHIFT - 0.3)
    layer = keras_model.get_layer("bconv")
    quantizer = layer.input_quantizer
    assert run(keras_model, keras_model, sample(zeros=0), tmp_path).failure is None
    assert layer.input_quantizer is quantizer
    assert run(keras_model, lce_model, sample(zeros=0), tmp_path).failure is not None
    assert layer.input_quantizer is quantizer


def test_a_binarizer_that_does_not_switch_at_zero_is_refused(tmp_path):
    from kerasbnn import quantizers

    class Threshold(quantizers.Quantizer):
        precision = 1

        def call(self, inputs):
            return quantizers.ste_sign(inputs - 0.5)

    model = shifted_model(SHIFT)
    layer = model.get_layer("bconv")
    layer.input_quantizer = Threshold()
    with pytest.raises(ValueError, match="does not switch sign at 0"):
        verify.verify(model, converted(model, tmp_path), sample(zeros=0), [layer])


def test_flip_far_from_zero_fails_naming_the_layer(tmp_path):
    keras_model, lce_model = shifted_model(SHIFT), shifted_model(SHIFT - 0.3)
    result = run(keras_model, lce_model, sample(zeros=0), tmp_path)
    assert result.failure is not None
    assert "'bconv'" in result.failure and "conversion error" in result.failure
    assert result.max_flip_margin > 1e-2


def test_float_part_difference_fails_with_identical_bits(tmp_path):
    keras_model, lce_model = shifted_model(SHIFT), shifted_model(SHIFT, dense_scale=1.01)
    result = run(keras_model, lce_model, sample(zeros=0), tmp_path)
    assert result.flipped_bits == {}
    assert result.failure is not None and "float part" in result.failure


def test_lce_convert_raises_on_a_real_difference_and_writes_nothing(tmp_path, monkeypatch):
    keras_model, lce_model = shifted_model(SHIFT), shifted_model(SHIFT - 0.3)
    other = converted(lce_model, tmp_path)
    monkeypatch.setattr(export.lce, "convert_saved_model", lambda *a, **k: other)
    path = tmp_path / "model.tflite"
    with pytest.raises(export.VerificationError, match="'bconv'") as info:
        export.lce_convert(keras_model, path, sample=sample(zeros=0))
    assert not path.exists()
    assert info.value.report.first_flip[0] == "bconv"


def test_output_tolerance_is_relative_to_each_examples_largest_value():
    # quicknet's fresh logits reach 700: float32 rounding of 1.6e-3 there is not an error,
    # while the same difference on logits near 1 is.
    expected = np.array([[700.0, -3.0], [1.0, -0.5]], "float32")
    actual = expected + np.array([[1.6e-3, 1.6e-3], [0.0, 0.0]], "float32")
    assert verify._output_check(expected, actual, verify.ATOL, verify.RTOL)[2]
    actual = expected + np.array([[0.0, 0.0], [1.6e-3, 0.0]], "float32")
    max_diff, mismatch, ok = verify._output_check(expected, actual, verify.ATOL, verify.RTOL)
    assert not ok and mismatch == 0.25 and max_diff == pytest.approx(1.6e-3, rel=1e-3)


def test_negative_and_positive_zeros_binarize_alike_in_keras_and_lce(tmp_path):
    # LCE packs the sign bit; both implementations must still map -0.0 and +0.0 to +1.
    inputs = keras.Input((4, 4, 32))
    outputs = QuantConv2D(8, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                          kernel_quantizer="ste_sign", name="bconv")(inputs)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(2).uniform(-1, 1, (2, 4, 4, 32)).astype("float32")
    x[0, :2] = -0.0
    x[1, :2] = 0.0
    assert np.signbit(x[0, 0, 0, 0])
    result = verify.verify(model, converted(model, tmp_path), x, [model.get_layer("bconv")])
    assert result.failure is None and result.flipped_bits == {}
    assert result.max_abs_diff == 0.0


def test_bconv_ops_are_matched_by_shape_when_the_order_differs():
    rng = np.random.default_rng(3)
    decided = [np.where(rng.standard_normal(shape) >= 0, 1.0, -1.0).astype("float32")
               for shape in ((2, 4, 4, 32), (2, 2, 2, 64))]

    def pack(bits):  # LCE's layout: bit c % 32 of word c // 32 is 1 for -1
        words = np.zeros((*bits.shape[:3], bits.shape[3] // 32), np.uint64)
        for c in range(bits.shape[3]):
            words[..., c // 32] |= (bits[..., c] < 0).astype(np.uint64) << np.uint64(c % 32)
        return words.astype(np.uint32).view(np.int32)

    layers = [object(), object()]
    assert verify._match_layers(layers, decided, [pack(d) for d in decided]) == [0, 1]
    assert verify._match_layers(layers, decided, [pack(d) for d in decided[::-1]]) == [1, 0]
    assert verify._match_layers(layers, decided, [pack(decided[0])]) == [0, None]
    assert verify._match_layers(layers, decided[:1], [pack(decided[1])]) is None
