"""kerasbnn.binarize: the binary / k-bit twin of a user's float Keras model, and its plan."""

import keras
import numpy as np
import pytest

import kerasbnn
from kerasbnn import quantizers
from kerasbnn.layers import LearnableBias, QuantConv2D, QuantDense
from kerasbnn.layers.base import QuantizerMixin, iter_layers


def small_cnn(name="cnn"):
    """A float CNN with the places binarize must handle: ReLU before convs, a depthwise conv,
    a conv with a fused ReLU, ReLU -> BN -> conv (not non-negative), a dense hidden layer."""
    x = keras.Input((16, 16, 3))
    y = keras.layers.Conv2D(32, 3, padding="same", use_bias=False, name="stem")(x)
    y = keras.layers.BatchNormalization(name="stem_bn")(y)
    y = keras.layers.ReLU(name="stem_relu")(y)
    y = keras.layers.Conv2D(32, 3, padding="same", use_bias=False, name="conv1")(y)
    y = keras.layers.BatchNormalization(name="bn1")(y)
    y = keras.layers.Activation("relu", name="relu1")(y)
    y = keras.layers.MaxPooling2D(name="pool1")(y)
    y = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="conv2")(y)
    y = keras.layers.BatchNormalization(name="bn2")(y)
    y = keras.layers.Conv2D(64, 1, name="conv3")(y)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(y)
    y = keras.layers.Flatten(name="flatten")(y)
    y = keras.layers.Dense(32, activation="relu", name="fc1")(y)
    y = keras.layers.Dense(10, name="logits")(y)
    return keras.Model(x, y, name=name)


def small_sequential():
    return keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c0"),
            keras.layers.Conv2D(32, 3, padding="same", name="c1"),
            keras.layers.BatchNormalization(name="b1"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(10, name="out"),
        ],
        name="seq",
    )


def nested_model():
    """A functional model whose body is a nested Sequential fed by a ReLU of the outer model."""
    body = keras.Sequential(
        [
            keras.Input((12, 12, 16)),
            keras.layers.Conv2D(32, 3, padding="same", use_bias=False, name="inner_conv"),
            keras.layers.BatchNormalization(name="inner_bn"),
        ],
        name="body",
    )
    x = keras.Input((12, 12, 3))
    y = keras.layers.Conv2D(16, 3, padding="same", name="stem")(x)
    y = keras.layers.ReLU(name="stem_relu")(y)
    y = body(y)
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(x, keras.layers.Dense(10, name="logits")(y), name="nested")


def _trained_like(model, rng):
    """BatchNorm statistics and biases like a trained model's.

    A fresh BN after a ReLU stays >= 0; and with fresh BNs or zero biases, sums of binary
    products land exactly on the binarizers' thresholds, where float rounding (LCE's
    integer thresholds) decides the sign (LCE.md section 4): trained models do not do that.
    """
    for layer in iter_layers(model):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and layer.use_bias:
            layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape))
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.3, n),
                               rng.uniform(0.2, 1.0, n), rng.uniform(0.5, 2.0, n)])
    return model


def _binarized_inputs(model, x):
    """The input of every binarized layer (after any inserted shift), by layer name."""
    layers = [
        layer for layer in iter_layers(model) if isinstance(layer, QuantizerMixin)
        and layer.is_binary
    ]
    captured = {}
    for layer in layers:
        original = layer.call

        def spy(inputs, *args, _name=layer.name, _call=original, **kwargs):
            captured[_name] = keras.ops.convert_to_numpy(inputs)
            return _call(inputs, *args, **kwargs)

        layer.call = spy
    try:
        model(x)
    finally:
        for layer in layers:
            del layer.call
    return captured


def test_plan_of_a_functional_cnn_says_what_happens_to_each_layer():
    plan = kerasbnn.binarize(small_cnn(), dry_run=True)

    assert plan.converted == ["conv1", "conv2", "conv3", "fc1"]
    assert set(plan.kept_float) == {"stem", "dw", "logits"}
    assert "raw pixels" in plan.kept_float["stem"]
    assert "depthwise" in plan.kept_float["dw"]
    assert "model output" in plan.kept_float["logits"]
    # conv1 reads a ReLU, conv2 a ReLU through a max pool; conv3 reads BN(ReLU(.)), whose
    # offset can be negative, and fc1 a float depthwise output: no rewrite there.
    assert set(plan.rewritten) == {"conv1", "conv2"}
    assert "stem_relu" in plan.rewritten["conv1"] and "relu1" in plan.rewritten["conv2"]
    assert len(plan.layers) == len(small_cnn().layers) - 1  # every layer but the input
    assert plan.after["memory_mbit"] < plan.before["memory_mbit"] / 5
    assert plan.before["bops"] == 0 and plan.after["bops"] > 0
    text = str(plan)
    for name in ("stem", "conv1", "fc1", "logits", "Memory (Mbit)", "BOPs", "before", "after"):
        assert name in text


def test_binary_twin_has_float_weights_as_latent_weights_and_lce_settings():
    model = small_cnn()
    binary = kerasbnn.binarize(model)

    conv1 = binary.get_layer("conv1")
    assert isinstance(conv1, QuantConv2D) and conv1.is_binary
    assert conv1.pad_values == 1.0 and conv1.kernel_constraint is not None
    np.testing.assert_array_equal(conv1.kernel.numpy(), model.get_layer("conv1").kernel.numpy())
    fc1 = binary.get_layer("fc1")
    assert isinstance(fc1, QuantDense) and fc1.is_binary
    np.testing.assert_array_equal(fc1.bias.numpy(), model.get_layer("fc1").bias.numpy())
    for name in ("stem", "dw", "logits", "bn1"):
        assert type(binary.get_layer(name)) is type(model.get_layer(name))
        for a, b in zip(binary.get_layer(name).weights, model.get_layer(name).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert isinstance(binary.get_layer("conv1_rsign"), LearnableBias)
    assert binary.name == "cnn_w1a1"


@pytest.mark.parametrize("build", [small_cnn, small_sequential, nested_model])
def test_no_binarized_layer_sees_an_input_that_is_nonnegative_by_construction(build, rng):
    model = _trained_like(build(), rng)
    binary = kerasbnn.binarize(model)
    x = rng.standard_normal((4, *model.input_shape[1:])).astype("float32")

    inputs = _binarized_inputs(binary, x)
    assert inputs, "no binarized layer"
    for name, value in inputs.items():
        assert (value < 0).mean() > 0.05, f"{name} would binarize to +1 almost everywhere"


@pytest.mark.parametrize("build", [small_cnn, small_sequential, nested_model])
def test_binary_twin_trains_saves_and_loads_in_safe_mode(build, tmp_path, rng):
    model = build()
    binary = kerasbnn.binarize(model)
    assert type(binary) is type(model) or not isinstance(model, keras.Sequential)
    x = rng.standard_normal((8, *model.input_shape[1:])).astype("float32")
    y = np.arange(8) % 10
    binary.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.numpy().copy() for w in binary.trainable_weights]
    history = binary.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, binary.trainable_weights))

    path = tmp_path / "binary.keras"
    binary.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), binary.predict(x, verbose=0),
                               atol=1e-5)


def test_nested_model_is_binarized_inside_and_stays_nested():
    binary = kerasbnn.binarize(nested_model())
    body = binary.get_layer("body")
    assert isinstance(body, keras.Sequential)
    assert isinstance(body.get_layer("inner_conv"), QuantConv2D)
    assert isinstance(body.get_layer("inner_conv_rsign"), LearnableBias)
    assert type(binary.get_layer("stem")) is keras.layers.Conv2D


def test_k_bit_twin_uses_the_quantizer_and_no_shift():
    model = small_cnn()
    twin = kerasbnn.binarize(model, bits=8, quantizer="dorefa")
    conv1 = twin.get_layer("conv1")
    assert quantizers.precision_of(conv1.input_quantizer) == 8
    assert quantizers.precision_of(conv1.kernel_quantizer) == 8
    assert not conv1.is_binary and conv1.pad_values == 0.0
    assert not any(isinstance(layer, LearnableBias) for layer in twin.layers)
    plan = kerasbnn.binarize(model, bits=(2, 4), quantizer="hwgq", dry_run=True)
    assert plan.tag == "w2a4" and plan.converted == ["conv1", "conv2", "conv3", "fc1"]


def test_batch_norm_over_the_last_axis_is_rebuilt_with_axis_minus_one():
    # keras.applications write axis=3; LCE then folds 4-D BN constants into bconvs on 1 x 1
    # maps (ResNet50 at 32 x 32), which fail at AllocateTensors.
    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(8, 3, name="stem")(x)
    y = keras.layers.Conv2D(8, 3, name="body")(y)
    y = keras.layers.BatchNormalization(axis=3, name="bn")(y)
    model = keras.Model(x, keras.layers.Dense(3, name="head")(keras.layers.Flatten()(y)))
    model.get_layer("bn").set_weights([np.full(8, 2.0), np.ones(8), np.full(8, 0.5), np.ones(8)])
    binary = kerasbnn.binarize(model)
    assert binary.get_layer("bn").axis == -1 or binary.get_layer("bn").axis == [-1]
    data = np.random.default_rng(0).standard_normal((2, 8, 8, 8)).astype("float32")
    np.testing.assert_allclose(binary.get_layer("bn")(data), model.get_layer("bn")(data),
                               atol=1e-6)


def test_keep_options():
    model = small_cnn()
    plan = kerasbnn.binarize(model, keep_first=False, keep_last=False, keep=["conv3"],
                             dry_run=True)
    assert plan.converted == ["stem", "conv1", "conv2", "fc1", "logits"]
    assert set(plan.kept_float) == {"dw", "conv3"}
    assert "keep=" in plan.kept_float["conv3"]


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(8, 3)

    def call(self, x):
        return self.conv(x)


def test_bad_inputs_are_refused_with_what_to_do(tmp_path):
    subclassed = _Subclassed()
    subclassed(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(ValueError, match="subclassed model.*keras.Model\\(inputs, outputs\\)"):
        kerasbnn.binarize(subclassed)

    x = keras.Input((4, 4, 3))
    no_conv = keras.Model(x, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    with pytest.raises(ValueError, match="no convolution or dense layer to binarize"):
        kerasbnn.binarize(no_conv)
    pools_only = keras.Model(x, keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(ValueError, match="has none"):
        kerasbnn.binarize(pools_only)

    with pytest.raises(ValueError, match="Unknown binary scheme 'xnorr'.*plain"):
        kerasbnn.binarize(small_cnn(), binary="xnorr")
    with pytest.raises(ValueError, match="bits=32"):
        kerasbnn.binarize(small_cnn(), bits=32)

    not_a_model = tmp_path / "notes.keras"
    not_a_model.write_text("not a model")
    with pytest.raises(ValueError, match="could not load .*notes.keras.* as a Keras model"):
        kerasbnn.binarize(not_a_model)
    with pytest.raises(ValueError, match="does not exist"):
        kerasbnn.binarize(str(tmp_path / "missing.keras"))


def test_a_saved_keras_file_is_accepted(tmp_path):
    path = tmp_path / "float.keras"
    small_sequential().save(path)
    binary = kerasbnn.binarize(str(path))
    assert isinstance(binary.get_layer("c1"), QuantConv2D)


def _converts_with_one_bconv_per_binarized_layer(model, tmp_path, rng, num_samples=2):
    pytest.importorskip("larq_compute_engine")
    plan = kerasbnn.binarize(model, dry_run=True)
    binary = kerasbnn.binarize(model)
    x = rng.standard_normal((num_samples, *model.input_shape[1:])).astype("float32")
    report = kerasbnn.lce_convert(binary, tmp_path / "binary.tflite", sample=x)
    assert report.bconv_ops == len(plan.converted) == len(report.binary_layers)
    assert report.binarization_ok and report.op_counts.get("LceDequantize", 0) == 0
    return report


@pytest.mark.tflite
def test_small_cnn_converts_verified_with_one_bconv_per_binarized_layer(tmp_path, rng):
    report = _converts_with_one_bconv_per_binarized_layer(small_cnn(), tmp_path, rng)
    assert report.bconv_ops == 4


APPLICATIONS = {
    "resnet50": lambda: keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3),
                                                    classes=10),
    "mobilenetv2": lambda: keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3),
                                                          classes=10),
    "vgg16": lambda: keras.applications.VGG16(weights=None, input_shape=(32, 32, 3), classes=10),
}
EXPECTED = {"resnet50": (52, 52), "mobilenetv2": (34, 17), "vgg16": (14, 14)}


@pytest.mark.slow
@pytest.mark.tflite
@pytest.mark.parametrize("name", sorted(APPLICATIONS))
def test_keras_applications_binarize_train_save_and_convert(name, tmp_path, rng):
    model = _trained_like(APPLICATIONS[name](), rng)
    plan = kerasbnn.binarize(model, dry_run=True)
    assert (len(plan.converted), len(plan.rewritten)) == EXPECTED[name]
    binary = kerasbnn.binarize(model)
    x = rng.standard_normal((4, 32, 32, 3)).astype("float32")
    binary.compile("adam", "sparse_categorical_crossentropy")
    assert np.isfinite(binary.fit(x, np.arange(4), epochs=1, verbose=0).history["loss"][0])
    for value in _binarized_inputs(binary, x).values():
        assert (value < 0).any()
    binary.save(tmp_path / "binary.keras")
    keras.saving.load_model(tmp_path / "binary.keras", safe_mode=True)
    _converts_with_one_bconv_per_binarized_layer(model, tmp_path, rng)


def _padded_stem(size):
    x = keras.Input((size, size, 3))
    y = keras.layers.ZeroPadding2D(3, name="pad")(x)
    y = keras.layers.Conv2D(8, 7, strides=2, name="stem")(y)
    y = keras.layers.BatchNormalization(name="stem_bn")(y)
    y = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(y)
    y = keras.layers.GlobalAveragePooling2D(name="pool")(y)
    return keras.Model(x, keras.layers.Dense(10, name="logits")(y))


@pytest.mark.parametrize("size, padding", [(32, ((3, 2), (3, 2))), (33, ((3, 3), (3, 3)))])
def test_padding_no_window_reads_is_trimmed_and_the_stem_computes_the_same(size, padding, rng):
    # ResNet50's stem: ZeroPadding2D(3) + a 7x7 stride-2 "valid" conv. At an even size its
    # last padded row is never read; LCE would fold the symmetric PAD into a "same" conv.
    model = _padded_stem(size)
    binary = kerasbnn.binarize(model)
    assert binary.get_layer("pad").padding == padding
    x = rng.standard_normal((2, size, size, 3)).astype("float32")
    stem = lambda m: keras.Model(m.input, m.get_layer("stem").output)(x)  # noqa: E731
    np.testing.assert_array_equal(stem(binary), stem(model))


@pytest.mark.tflite
def test_a_padded_strided_stem_converts_verified(tmp_path):
    pytest.importorskip("larq_compute_engine")
    report = kerasbnn.lce_convert(kerasbnn.binarize(_padded_stem(32)), tmp_path / "m.tflite",
                                  seed=0)
    assert report.bconv_ops == 1 and report.max_abs_diff < 1e-4, str(report)


def test_cli_binarize_writes_the_twin_and_prints_the_plan(tmp_path, capsys):
    from kerasbnn import cli

    source, target = tmp_path / "float.keras", tmp_path / "binary.keras"
    small_cnn().save(source)
    assert cli.main(["binarize", str(source), str(tmp_path / "plan.keras"), "--dry-run"]) == 0
    assert "conv1" in capsys.readouterr().out and not (tmp_path / "plan.keras").exists()

    assert cli.main(["binarize", str(source), str(target), "--bits", "1"]) == 0
    assert "4 layers converted" in capsys.readouterr().out
    loaded = keras.saving.load_model(target, safe_mode=True)
    conv1 = loaded.get_layer("conv1")
    assert isinstance(conv1, QuantConv2D) and conv1.is_binary


def test_cli_binarize_errors_and_exit_codes(tmp_path, capsys):
    from kerasbnn import cli

    source = tmp_path / "float.keras"
    small_sequential().save(source)
    out = str(tmp_path / "out.keras")
    assert cli.main(["binarize", str(tmp_path / "none.keras"), out]) == cli.EXIT_INPUT
    assert "does not exist" in capsys.readouterr().err
    text = tmp_path / "text.keras"
    text.write_text("hello")
    assert cli.main(["binarize", str(text), out]) == cli.EXIT_INPUT
    assert "could not load" in capsys.readouterr().err
    assert cli.main(["binarize", str(source), str(tmp_path / "out.h5")]) == cli.EXIT_OUTPUT
    assert cli.main(["binarize", str(source), str(tmp_path / "no" / "o.keras")]) == cli.EXIT_OUTPUT
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["binarize", str(source), out, "--binary", "xnorr"]) == 2
    assert "Unknown binary scheme 'xnorr'" in capsys.readouterr().err
    assert cli.main(["binarize", str(source), out, "--bits", "32"]) == 2
    x = keras.Input((4, 4, 3))
    keras.Model(x, keras.layers.Dense(10)(keras.layers.Flatten()(x))).save(tmp_path / "mlp.keras")
    assert cli.main(["binarize", str(tmp_path / "mlp.keras"), out]) == cli.EXIT_INPUT
    assert "no convolution or dense layer to binarize" in capsys.readouterr().err
    assert not (tmp_path / "out.keras").exists()


def test_distiller_trains_the_binary_twin_from_the_float_model_and_its_8_bit_twin(rng):
    from kerasbnn import distill

    model = small_sequential()
    student = kerasbnn.binarize(model)
    distiller = distill.MultiTeacherDistiller(
        student, [model, kerasbnn.binarize(model, bits=8)], feature_taps=None
    )
    distiller.compile("adam")
    x = rng.standard_normal((8, 12, 12, 3)).astype("float32")
    history = distiller.fit(x, np.arange(8) % 10, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["kl_loss"][0]) and history.history["kl_loss"][0] > 0
    assert distiller.student is student
