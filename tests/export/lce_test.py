"""lce_convert: a small binary ResNet converts, is audited and matches Keras; failures are clear."""

import os

import keras
import numpy as np
import pytest

pytest.importorskip("larq_compute_engine")

import kerasbnn  # noqa: E402
from kerasbnn import export  # noqa: E402
from kerasbnn.layers import (  # noqa: E402
    QuantConv2D,
    QuantDense,
    QuantDepthwiseConv2D,
    RPReLU,
)

pytestmark = pytest.mark.tflite

BINARY = dict(
    input_quantizer="ste_sign", kernel_quantizer="ste_sign", kernel_constraint="weight_clip"
)


def _randomize_batchnorm(model, rng):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(-1.5, 1.5, n),
                    rng.normal(0, 0.5, n),
                    rng.normal(0, 0.5, n),
                    rng.uniform(0.5, 2, n),
                ]
            )


def binary_resnet(rng, input_shape=(16, 16, 3), num_classes=5):
    """Float stem, three binary residual blocks (one strided), binary dense, float head."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    for i, (filters, stride) in enumerate([(32, 1), (64, 2), (64, 1)]):
        y = QuantConv2D(
            filters,
            3,
            strides=stride,
            padding="same",
            pad_values=1.0,
            use_bias=False,
            name=f"block{i}_bconv",
            **BINARY,
        )(x)
        y = keras.layers.BatchNormalization(name=f"block{i}_bn")(y)
        if stride != 1 or x.shape[-1] != filters:
            x = keras.layers.AveragePooling2D(stride, name=f"block{i}_pool")(x)
            x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"block{i}_shortcut")(x)
        x = keras.layers.Add(name=f"block{i}_add")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = QuantDense(32, use_bias=False, name="binary_fc", **BINARY)(x)
    x = keras.layers.BatchNormalization(name="fc_bn")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    model = keras.Model(inputs, outputs, name="tiny_binary_resnet")
    _randomize_batchnorm(model, rng)
    return model


def test_binary_resnet_converts_to_bconv_and_matches_keras(tmp_path, rng):
    model = binary_resnet(rng)
    path = tmp_path / "model.tflite"
    report = export.lce_convert(model, path, sample=rng.standard_normal((3, 16, 16, 3)))

    assert report.binary_layers == ["block0_bconv", "block1_bconv", "block2_bconv", "binary_fc"]
    assert report.bconv_ops == 4 == report.op_counts["LceBconv2d"]
    assert report.binarization_ok and report.unconverted_layers == {}
    assert report.op_counts.get("LceDequantize", 0) == 0
    assert report.float_convs_fed_by_binarizer == []
    assert report.max_abs_diff < 1e-3 and report.mismatch_fraction == 0.0
    assert report.num_samples == 3
    assert report.path == str(path) and report.file_size == os.path.getsize(path)
    with open(path, "rb") as f:
        assert f.read() == report.flatbuffer
    assert export.list_ops(path).count("LceBconv2d") == 4
    assert export.op_counts(report.flatbuffer) == report.op_counts

    data = report.to_dict()
    assert "flatbuffer" not in data and data["bconv_ops"] == 4 and data["binarization_ok"] is True
    text = str(report)
    assert "LceBconv2d ops       4 in the file" in text and "max |Keras - LCE|" in text


def test_top_level_reexport():
    assert kerasbnn.lce_convert is export.lce_convert


def _model_with(layer, rng, input_shape=(8, 8, 32)):
    inputs = keras.Input(input_shape)
    x = QuantConv2D(32, 3, padding="same", pad_values=1.0, name="good_bconv", **BINARY)(inputs)
    x = layer(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(
    "bad_layer, reason",
    [
        (
            lambda: QuantConv2D(
                32, 3, input_quantizer="ste_heaviside", kernel_quantizer="ste_sign", name="heavy"
            ),
            "ste_heaviside",
        ),
        (
            lambda: QuantDepthwiseConv2D(
                3, input_quantizer="ste_sign", depthwise_quantizer="ste_sign", name="heavy"
            ),
            "depthwise",
        ),
    ],
    ids=["ste_heaviside", "depthwise"],
)
def test_unbinarizable_layer_raises_naming_it_and_keeps_existing_file(
    tmp_path, rng, bad_layer, reason
):
    model = _model_with(bad_layer(), rng)
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous model")

    with pytest.raises(
        export.BinarizationError, match=r"not binary after conversion: heavy\."
    ) as info:
        export.lce_convert(model, path)

    assert reason in info.value.report.unconverted_layers["heavy"]
    assert info.value.report.bconv_ops == 1 and len(info.value.report.binary_layers) == 2
    assert path.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]  # no temp files left


def test_no_verify_writes_and_reports_the_unconverted_layer(tmp_path, rng):
    model = _model_with(
        QuantConv2D(
            32, 3, input_quantizer="ste_heaviside", kernel_quantizer="ste_sign", name="heavy"
        ),
        rng,
    )
    report = export.lce_convert(model, tmp_path / "m.tflite", verify=False)
    assert not report.binarization_ok and list(report.unconverted_layers) == ["heavy"]
    assert report.max_abs_diff is None
    assert (tmp_path / "m.tflite").read_bytes() == report.flatbuffer
    assert "NOT BINARY: heavy" in str(report)


class _WhereRPReLU(RPReLU):
    """RPReLU as it was first written, with a `where`: what the lowering check must catch."""

    def call(self, inputs):
        shifted = keras.ops.subtract(inputs, self.gamma)
        return keras.ops.where(shifted > 0, shifted, self.beta * shifted) + self.zeta


def _rprelu_ops(layer, rng, path):
    """The TFLite ops of a binary conv -> `layer` -> pooling model with random RPReLU weights,
    converted and verified against Keras."""
    model = _model_with(layer, rng)
    layer.gamma.assign(rng.normal(0.0, 0.5, 32))
    layer.beta.assign(rng.uniform(-0.5, 1.5, 32))
    layer.zeta.assign(rng.normal(0.0, 0.5, 32))
    report = export.lce_convert(model, path, sample=rng.standard_normal((3, 8, 8, 32)))
    assert report.binarization_ok and report.max_abs_diff < 1e-4, str(report)
    return export.list_ops(report.flatbuffer)


def test_rprelu_lowers_without_select(tmp_path, rng):
    selects = {"SELECT", "SELECT_V2", "GREATER"}
    where_ops = _rprelu_ops(_WhereRPReLU(name="rprelu"), rng, tmp_path / "where.tflite")
    assert selects & set(where_ops), where_ops  # the check can see a `where`
    ops = _rprelu_ops(RPReLU(name="rprelu"), rng, tmp_path / "relu.tflite")
    assert not selects & set(ops), ops
    assert ops.count("RELU") == 2 and ops.count("NEG") == 1, ops


def _tiny_binary_model():
    inputs = keras.Input((8, 8, 3))
    outputs = QuantConv2D(8, 3, name="bconv", **BINARY)(inputs)
    return keras.Model(inputs, outputs)


def test_unwritable_destination_raises_before_converting(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(export.lce, "convert_saved_model", lambda *a, **k: calls.append(a))
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    with pytest.raises(ValueError, match="does not exist"):
        export.lce_convert(_tiny_binary_model(), not_a_folder / "model.tflite")
    with pytest.raises(ValueError, match="is a directory"):
        export.lce_convert(_tiny_binary_model(), tmp_path)
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        if os.access(read_only, os.W_OK) and os.geteuid() != 0:
            pytest.fail("chmod 555 did not make the folder read-only")
        if os.geteuid() != 0:
            with pytest.raises(PermissionError, match="not writable"):
                export.lce_convert(_tiny_binary_model(), read_only / "model.tflite")
    finally:
        read_only.chmod(0o755)
    assert calls == []


def test_converter_crash_is_an_exception_not_a_dead_process(tmp_path):
    # A raw tf.Module SavedModel of a Keras 3 layer makes LCE 0.16 abort in LLVM
    # ("Failed to infer result type(s)", LCE.md section 4).
    import tensorflow as tf

    layer_model = _tiny_binary_model()

    class Raw(tf.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
        def __call__(self, x):
            return self.model(x)

    raw = Raw(layer_model)
    tf.saved_model.save(raw, str(tmp_path / "raw"), signatures=raw.__call__)
    with pytest.raises(export.ConverterError, match=r"crashed \(SIGABRT\).*unaffected") as info:
        export.convert_saved_model(tmp_path / "raw")
    assert "LLVM ERROR" in str(info.value)


def test_converter_failure_is_reported(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"not a protobuf")
    with pytest.raises(export.ConverterError, match="exit status 1.*Cannot parse"):
        export.convert_saved_model(tmp_path)


def test_converter_failure_leaves_existing_file(tmp_path, monkeypatch):
    def failing(*args, **kwargs):
        raise export.ConverterError("boom")

    monkeypatch.setattr(export.lce, "convert_saved_model", failing)
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous model")
    with pytest.raises(export.ConverterError, match="boom"):
        export.lce_convert(_tiny_binary_model(), path)
    assert path.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(target="x86"), "target must be one of"),
        (dict(int8="yes"), "int8 must be True or False"),
        (dict(atol=0), "atol must be positive"),
        (dict(sample=np.zeros((2, 4, 4, 3))), r"sample must have shape \(N, 8, 8, 3\)"),
    ],
)
def test_bad_arguments_raise_value_error(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export.lce_convert(_tiny_binary_model(), tmp_path / "m.tflite", **kwargs)
    assert not (tmp_path / "m.tflite").exists()


def test_model_without_image_input_is_rejected(tmp_path):
    inputs = keras.Input((16,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match=r"known shape \(H, W, C\)"):
        export.lce_convert(model, tmp_path / "m.tflite")


def test_mixed_precision_model_is_converted_in_float32(tmp_path, rng):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(32, 3, padding="same")(inputs)
        x = QuantConv2D(32, 3, padding="same", pad_values=1.0, name="bconv", **BINARY)(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(4, dtype="float32")(x))
    finally:
        keras.config.set_dtype_policy("float32")
    float_model = export.float32_model(model)
    assert float_model is not model
    assert {layer.dtype_policy.compute_dtype for layer in float_model.layers} == {"float32"}
    report = export.lce_convert(model, tmp_path / "m.tflite")
    assert report.bconv_ops == 1 and report.max_abs_diff < 1e-3
    assert any("mixed precision" in note for note in report.notes)


def test_int8_without_fake_quant_is_latency_only(tmp_path, rng):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(32, 3, padding="same")(inputs)
    x = QuantConv2D(32, 3, padding="same", pad_values=1.0, name="bconv", **BINARY)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    with pytest.warns(UserWarning, match="latency"):
        report = export.lce_convert(model, tmp_path / "m.tflite", int8=True)
    assert report.int8 == "dummy-range" and report.max_abs_diff is None
    assert report.bconv_ops == 1 and any("meaningless" in note for note in report.notes)
    graph = export.read_graph(report.flatbuffer)
    assert "INT8" in {t.dtype for t in graph.tensors}


class FakeQuant(keras.layers.Layer):
    """8-bit fake quantization to [-4, 4], as quantization-aware training leaves in a graph."""

    def call(self, x):
        return keras.quantizers.fake_quant_with_min_max_vars(x, -4.0, 4.0, num_bits=8)


def test_int8_with_fake_quant_is_a_real_int8_model(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(32, 3, padding="same")(FakeQuant()(inputs))
    x = FakeQuant()(keras.layers.BatchNormalization()(x))
    y = QuantConv2D(32, 3, padding="same", pad_values=1.0, use_bias=False, name="bconv", **BINARY)(
        x
    )
    x = FakeQuant()(keras.layers.Add()([x, keras.layers.BatchNormalization()(y)]))
    x = FakeQuant()(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, FakeQuant()(keras.layers.Dense(4)(x)))

    report = export.lce_convert(model, tmp_path / "m.tflite", int8=True)
    assert report.int8 == "qat" and report.bconv_ops == 1
    assert "INT8" in {t.dtype for t in export.read_graph(report.flatbuffer).tensors}
    # A few 8-bit steps (8/255 each) of accumulated rounding, not float agreement.
    assert 0 < report.max_abs_diff < 0.5
    with pytest.raises(export.VerificationError, match="max |diff|"):
        export.lce_convert(model, tmp_path / "m2.tflite", int8=True, atol=1e-4)
    assert not (tmp_path / "m2.tflite").exists()


def test_a_file_the_interpreter_cannot_allocate_is_a_converter_error_naming_the_op(tmp_path,
                                                                                  monkeypatch):
    """LCE's interpreter raises a bare RuntimeError when it cannot allocate a file (e.g. an op
    given a tensor type it has no kernel for); the fault is injected here with TFLite's own
    message format, on a really converted file."""
    from larq_compute_engine.tflite.python import interpreter

    class CannotAllocate:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("tensorflow/lite/kernels/.. Node number 0 (LceQuantize) failed "
                               "to prepare.\nFailed to allocate tensors.")

    monkeypatch.setattr(interpreter, "Interpreter", CannotAllocate)
    path = tmp_path / "m.tflite"
    with pytest.raises(export.ConverterError) as info:
        export.lce_convert(_tiny_binary_model(), path)
    message = str(info.value)
    op = export.read_graph(info.value.report.flatbuffer).ops[0]
    assert op.name == "LceQuantize"
    assert "op LceQuantize (node 0, writing " in message and "failed to prepare" in message
    assert export.read_graph(info.value.report.flatbuffer).tensors[op.outputs[0]].name in message
    assert not path.exists()
