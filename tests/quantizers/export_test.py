"""1-bit weight quantizers with a per-tensor or per-channel scale still become LceBconv2d."""

import keras
import pytest

from kerasbnn import export, layers, quantizers

pytestmark = pytest.mark.tflite


def test_scaled_one_bit_kernels_convert_to_binary_convs(tmp_path):
    pytest.importorskip("larq_compute_engine")
    kernels = {
        "dorefa_1bit": quantizers.DoReFa(1, "weights"),  # mean|W| sign(W), per tensor
        "hwgq_1bit": quantizers.HWGQ(1, "weights"),  # 0.798 std(W) sign(W), per tensor
        "magnitude_aware": quantizers.MagnitudeAwareSign(),  # per output channel
    }
    # Parallel branches: chained random binary layers can flip signs through float summation
    # order (LCE.md section 4), which would hide what this test checks.
    inputs = keras.Input((6, 6, 32))
    branches = [
        layers.QuantConv2D(
            32,
            3,
            padding="same",
            pad_values=1.0,
            input_quantizer="ste_sign",
            kernel_quantizer=kernel_quantizer,
            name=name,
        )(inputs)
        for name, kernel_quantizer in kernels.items()
    ]
    outputs = keras.layers.Concatenate()(branches)
    model = keras.Model(inputs, outputs)
    assert all(model.get_layer(name).is_binary for name in kernels)

    report = export.lce_convert(model, tmp_path / "scaled.tflite", num_samples=2)

    assert report.binarization_ok, str(report)
    assert report.bconv_ops == 3 and sorted(report.binary_layers) == sorted(kernels)
    assert report.max_abs_diff <= 1e-4
