"""Every zoo builder through the same checks: precisions, taps, training, saving, parts, LCE."""

import keras
import numpy as np
import pytest

import kerasbnn
from kerasbnn import models
from kerasbnn.layers import LearnableBias, QuantConv2D, ScaledAbs
from tests.helpers import lce_convert

NUM_CLASSES = 5

# The one list of builders: small inputs (32x32 for CIFAR models, the smallest size the
# stem allows otherwise) and narrow widths keep the default run fast.
BUILDERS = {
    "resnet20": {"input_shape": (32, 32, 3), "width_multiplier": 0.5},
    "resnet18": {"input_shape": (32, 32, 3), "width_multiplier": 0.125},
    "bireal_resnet18": {"input_shape": (32, 32, 3), "width_multiplier": 0.125},
    "reactnet_resnet18": {"input_shape": (32, 32, 3), "width_multiplier": 0.125},
    "vgg_small": {"input_shape": (32, 32, 3), "width_multiplier": 0.125},
    "alexnet": {
        "input_shape": (32, 32, 3), "width_multiplier": 0.125, "stem": "cifar", "fc_units": 64
    },
    "reactnet_a": {"input_shape": (32, 32, 3), "width_multiplier": 0.125},
    "quicknet": {"input_shape": (32, 32, 3), "width_multiplier": 0.125},
}

# Binary convs (QuantConv2D with 1-bit input and kernel) of each builder at bits=1.
EXPECTED_BCONV = {
    "resnet20": 18,
    "resnet18": 16,
    "bireal_resnet18": 16,
    "reactnet_resnet18": 16,
    "vgg_small": 5,
    "alexnet": 6,  # conv2..conv5 and the two hidden FCs (1x1 convs)
    "reactnet_a": 31,  # 13 3x3 + 13 1x1 + 5 second 1x1 of the widening blocks
    "quicknet": 13,
}
# Costly checks run on these in the default run and on every builder with `-m slow`.
FAST = ("resnet20", "bireal_resnet18", "vgg_small")
SOME = [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in sorted(BUILDERS)]
NUM_TAPS = {"resnet20": 3, "vgg_small": 3, "alexnet": 3, "reactnet_a": 5}


def build(name, **overrides):
    kwargs = dict(BUILDERS[name], num_classes=NUM_CLASSES)
    kwargs.update(overrides)
    return models.get(name)(**kwargs)


def batch(name, n=2, seed=0):
    shape = BUILDERS[name]["input_shape"]
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, size=(n, *shape)).astype("float32")


def tap_shapes(model):
    return {t: tuple(model.get_layer(t).output.shape) for t in models.taps(model)}


def test_registry_lists_every_builder():
    assert set(BUILDERS) <= set(models.names())
    assert models.get("resnet20") is models.resnet20


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builds_at_every_precision_with_aligned_taps(name):
    x = batch(name)
    reference = None
    for bits in (32, 8, 4, 2, 1):
        model = build(name, bits=bits)
        assert model.name == f"{name}_w{bits}a{bits}"
        assert tuple(model(x).shape) == (2, NUM_CLASSES)
        shapes = tap_shapes(model)
        assert len(shapes) == NUM_TAPS.get(name, 4)
        reference = reference or shapes
        assert shapes == reference, f"taps of {name} at {bits} bits differ from 32 bits"
        binary = [layer for layer in model.layers if getattr(layer, "is_binary", False)]
        assert len(binary) == (EXPECTED_BCONV[name] if bits == 1 else 0)


@pytest.mark.parametrize("name", SOME)
def test_training_steps_lower_the_loss(name):
    # A binary network's loss is piecewise constant in its latent weights: a single step
    # can flip signs either way, so a few Adam steps on one tiny batch are checked.
    model = build(name, bits=1)
    x = batch(name, n=8)
    y = np.arange(8) % NUM_CLASSES
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    # Eager: tracing a whole network's train step costs more than running it on 8 images.
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss_fn, run_eagerly=True)
    before = float(loss_fn(y, model(x, training=True)))
    for _ in range(5):
        model.train_on_batch(x, y)
    after = float(loss_fn(y, model(x, training=True)))
    assert after < before


@pytest.mark.parametrize("name", SOME)
def test_keras_round_trip_gives_identical_outputs(name, tmp_path):
    model = build(name, bits=1)
    x = batch(name)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    restored = keras.saving.load_model(path)  # safe_mode on, no custom_objects
    np.testing.assert_array_equal(np.asarray(restored(x)), np.asarray(model(x)))
    assert models.taps(restored) == models.taps(model)


def test_keras_round_trip_of_a_multibit_model(tmp_path):
    model = build("resnet20", bits=(2, 4))
    x = batch("resnet20")
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(np.asarray(restored(x)), np.asarray(model(x)))


@pytest.mark.parametrize("quantizer", ["hwgq", "lsq"])
def test_other_quantizer_families_build_and_round_trip(quantizer, tmp_path):
    model = build("resnet20", bits=2, quantizer=quantizer)
    conv = model.get_layer("stage2_block1_conv1")
    assert conv.kernel_quantizer.alias == quantizer and conv.input_quantizer.alias == quantizer
    assert model.get_layer("stem_conv").kernel_quantizer is None  # first layer stays float
    x = batch("resnet20")
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(np.asarray(restored(x)), np.asarray(model(x)))


def test_quantize_first_last_binarizes_the_stem_and_the_classifier():
    model = build("resnet20", bits=1, quantize_first_last=True)
    assert model.get_layer("stem_conv").is_binary and model.get_layer("logits_conv").is_binary
    binary = [layer for layer in model.layers if getattr(layer, "is_binary", False)]
    assert len(binary) == EXPECTED_BCONV["resnet20"] + 2
    assert tuple(model(batch("resnet20")).shape) == (2, NUM_CLASSES)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_parts_compose_to_the_whole_model(name):
    model = build(name, bits=1)
    x = batch(name)
    parts = models.parts(model)
    stages = [f"stage{i}" for i in range(1, len(models.taps(model)) + 1)]
    assert list(parts) == ["stem", *stages, "head"]
    y = x
    for part in parts.values():
        y = part(y)
    np.testing.assert_allclose(np.asarray(y), np.asarray(model(x)), rtol=0, atol=1e-5)
    # The parts hold the model's own layers: training a part trains the model.
    stage1_layers = {id(layer) for layer in parts["stage1"].layers}
    assert id(model.get_layer("stage1_out")) in stage1_layers


def test_parts_feed_one_network_stage_with_another_networks_features():
    teacher, student = build("resnet20", bits=32), build("resnet20", bits=1)
    x = batch("resnet20")
    t, s = models.parts(teacher), models.parts(student)
    hybrid = s["stage2"](t["stage1"](t["stem"](x)))
    assert tuple(hybrid.shape[1:]) == tuple(teacher.get_layer("stage2_out").output.shape[1:])
    whole = np.asarray(student(x))
    mixed = np.asarray(s["head"](s["stage3"](hybrid)))
    assert mixed.shape == whole.shape and not np.allclose(mixed, whole)


def test_include_top_false_ends_at_the_last_tap():
    model = build("resnet20", include_top=False)
    assert model.output.shape[1:] == (8, 8, 32)
    assert "head" not in models.parts(model)


def _converts_verified(name, model, folder, seed):
    """`kerasbnn.lce_convert` with its default verification, and the audit rules of LCE.md."""
    report = kerasbnn.lce_convert(model, folder / f"{name}_{seed}.tflite", seed=seed)
    assert report.bconv_ops == len(report.binary_layers) == EXPECTED_BCONV[name], str(report)
    assert report.float_convs_fed_by_binarizer == [], str(report)
    assert report.op_counts.get("LceDequantize", 0) == 0, str(report)
    assert report.max_abs_diff is not None and report.path is not None
    return report


# Each of these failed before the fix at the size the probe of issue 15 used, (64, 64, 3)
# with 100 classes: alexnet's fc7 (64 MiB kernel, not constant-folded) stayed float,
# quicknet's logits near 700 missed an absolute 1e-3 by rounding, resnet18 seed 1 flipped one
# bit at |x| = 4e-5 and differed by 68 at the logits (on that machine: see below).
@pytest.mark.tflite
@pytest.mark.parametrize("name, seed", [("alexnet", 0), ("quicknet", 0), ("resnet18", 1)])
def test_probe_failures_convert_verified(name, seed, tmp_path):
    keras.utils.set_random_seed(seed)
    model = models.get(name)((64, 64, 3), 100, bits=1)
    report = _converts_verified(name, model, tmp_path, seed)
    if report.first_flip is not None:
        # Whether the bit near zero flips depends on the CPU's summation order (it did on the
        # probe's machine, at stage2_block2_conv1, and does not on others); when it does, it is
        # a rounding flip, and the outputs agree once LCE's bits are forced.
        assert report.max_flip_margin <= 1e-4 and report.forced_max_abs_diff < 1e-2, str(report)


def _seeds(count, fast):
    """Seeds `0..count-1`, those from `fast` on marked slow: they convert the same graphs as
    the first ones, with other random weights. The default run converts every graph (and
    test_probe_failures_convert_verified the weights that failed once); `make test-all` every
    seed."""
    return [s if s < fast else pytest.param(s, marks=pytest.mark.slow) for s in range(count)]


@pytest.mark.tflite
@pytest.mark.parametrize("seed", _seeds(5, fast=1))
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_binary_student_converts_verified(name, seed, tmp_path):
    keras.utils.set_random_seed(seed)
    _converts_verified(name, build(name, bits=1), tmp_path, seed)


@pytest.mark.tflite
@pytest.mark.parametrize("seed", _seeds(2, fast=1))
@pytest.mark.parametrize("block", ["bireal", "reactnet"])
def test_resnet20_one_conv_blocks_convert_verified(block, seed, tmp_path):
    pytest.importorskip("larq_compute_engine")
    keras.utils.set_random_seed(seed)
    report = _converts_verified("resnet20", build("resnet20", bits=1, block=block), tmp_path,
                                seed)
    # RPReLU (the reactnet block's activation) lowers without a SELECT (its docstring).
    assert not {"SELECT", "SELECT_V2"} & set(report.op_counts), str(report)


@pytest.mark.tflite
@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_binary_student_converts_verified_at_full_size(name, seed, tmp_path):
    keras.utils.set_random_seed(seed)
    _converts_verified(name, models.get(name)(bits=1), tmp_path, seed)


@pytest.mark.tflite
@pytest.mark.slow
@pytest.mark.parametrize("binary", models.BINARY_SCHEMES)
def test_every_binary_scheme_converts(binary, tmp_path):
    pytest.importorskip("larq_compute_engine")
    model = build("resnet20", bits=1, binary=binary)
    results = lce_convert({"m": model}, {"m": batch("resnet20", n=1)}, tmp_path)
    assert results["m"]["ops"].count("LceBconv2d") == EXPECTED_BCONV["resnet20"]


@pytest.mark.tflite
@pytest.mark.slow
def test_every_thesis_block_converts(tmp_path):
    pytest.importorskip("larq_compute_engine")
    blocks = ["naive", "single_relu", "double_relu", "abs"]
    built = {block: build("resnet20", bits=1, block=block) for block in blocks}
    results = lce_convert(built, {block: batch("resnet20", n=1) for block in blocks}, tmp_path)
    for block in blocks:
        ops = results[block]["ops"]
        assert ops.count("LceBconv2d") == EXPECTED_BCONV["resnet20"], (block, ops)
        assert "LceDequantize" not in ops


# ----------------------------------------------------------------------------------------
# ResNet-20 block variants (thesis section 3.1.1)


@pytest.mark.parametrize("block", ["basic", "naive", "single_relu", "double_relu", "abs",
                                   "bireal", "reactnet"])
def test_resnet20_block_variants_align_taps(block):
    x = batch("resnet20")
    shapes = set()
    for bits in (32, 1):
        model = build("resnet20", bits=bits, block=block)
        assert tuple(model(x).shape) == (2, NUM_CLASSES)
        shapes.add(tuple(tap_shapes(model).items()))
    assert len(shapes) == 1


@pytest.mark.parametrize("block", ["bireal", "reactnet"])
def test_resnet20_one_conv_blocks_keep_resnet20s_convs_and_read_no_relu(block):
    model = build("resnet20", bits=1, block=block)
    binary = [layer for layer in model.layers if isinstance(layer, QuantConv2D)
              and layer.input_quantizer is not None]
    assert len(binary) == EXPECTED_BCONV["resnet20"]  # 18 one-conv blocks = 9 two-conv ones
    assert not [layer for layer in model.layers if layer.name.endswith("_relu")]
    rsign = [layer for layer in model.layers if layer.name.endswith("_rsign")]
    assert len(rsign) == (18 if block == "reactnet" else 0)




def _intermediate(model, names, x):
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    return [np.asarray(v) for v in probe(x)]


def test_double_relu_block_computes_relu_of_scaled_inner_sum_plus_shortcut():
    model = build("resnet20", bits=32, block="double_relu")
    x = batch("resnet20")
    block_in, h1, h2, out = _intermediate(
        model, ["stem_out", "stage1_block1_bn1", "stage1_block1_bn2", "stage1_block1_relu"], x
    )
    expected = np.maximum((h1 + h2) / np.sqrt(2.0) + block_in, 0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_abs_block_adds_scaled_absolute_shortcut():
    model = build("resnet20", bits=1, block="abs")
    model.get_layer("stage1_block2_abs").alpha.assign(0.25)
    x = batch("resnet20")
    block_in, h2, out = _intermediate(
        model, ["stage1_block1_add", "stage1_block2_bn2", "stage1_block2_add"], x
    )
    np.testing.assert_allclose(out, h2 + 0.25 * np.abs(block_in), rtol=1e-5, atol=1e-5)
    assert isinstance(model.get_layer("stage1_block2_abs"), ScaledAbs)


def test_naive_and_single_relu_blocks():
    x = batch("resnet20")
    naive = build("resnet20", bits=1, block="naive")
    h2, residual, out = _intermediate(
        naive, ["stage1_block2_bn2", "stage1_block1_add", "stage1_block2_add"], x
    )
    np.testing.assert_allclose(out, h2 + residual, rtol=1e-5, atol=1e-5)
    assert not any(
        isinstance(layer, keras.layers.ReLU)
        for layer in naive.layers
        if layer.name.startswith("stage")
    )
    single = build("resnet20", bits=1, block="single_relu")
    add, out = _intermediate(single, ["stage1_block2_add", "stage1_block2_relu"], x)
    np.testing.assert_allclose(out, np.maximum(add, 0.0))


def test_binarized_post_relu_inputs_are_thresholded_above_zero():
    model = build("resnet20", bits=1, block="basic")
    shift = model.get_layer("stage1_block1_conv2_shift")
    assert isinstance(shift, LearnableBias) and not shift.trainable
    assert float(np.max(np.asarray(shift.bias))) < 0.0
    # A ReLU output of exactly 0 must binarize to -1, not +1.
    relu_out, shifted = _intermediate(
        model, ["stage1_block1_relu1", "stage1_block1_conv2_shift"], batch("resnet20")
    )
    assert np.all(shifted[relu_out == 0.0] < 0.0)


def test_reactnet_two_step_models_share_layer_names_and_shapes():
    step1 = build("reactnet_resnet18", bits=(32, 1))
    step2 = build("reactnet_resnet18", bits=1)
    shapes1 = {w.path: tuple(w.shape) for w in step1.weights}
    shapes2 = {w.path: tuple(w.shape) for w in step2.weights}
    assert shapes1 == shapes2
    step2.set_weights(step1.get_weights())
    assert any(layer.name.endswith("_rsign") for layer in step2.layers)


# ----------------------------------------------------------------------------------------
# Bad input


def test_unknown_builder_lists_the_valid_ones():
    with pytest.raises(ValueError, match="resnet20") as info:
        models.get("resnet21")
    assert "vgg_small" in str(info.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"block": "bottleneck"}, "double_relu"),
        ({"binary": "xnor_net"}, "bireal"),
        ({"quantizer": "pact"}, "hwgq"),
        ({"bits": 0}, r"\[1, 32\]"),
        ({"bits": (1, 2, 3)}, "w_bits, a_bits"),
        ({"bits": True}, "bits"),
        ({"num_classes": 0}, "num_classes"),
        ({"width_multiplier": -1}, "width_multiplier"),
    ],
)
def test_bad_options_raise_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.resnet20(**kwargs)


def test_unknown_stem_lists_the_valid_ones():
    with pytest.raises(ValueError, match="imagenet, cifar"):
        models.resnet18(stem="mobile")


@pytest.mark.parametrize(
    "name, shape, minimum",
    [("resnet18", (16, 16, 3), 32), ("resnet20", (3, 3, 3), 4), ("alexnet", (62, 62, 3), 63),
     ("quicknet", (31, 31, 3), 32), ("vgg_small", (4, 4, 3), 8)],
)
def test_input_too_small_for_the_stem(name, shape, minimum):
    with pytest.raises(ValueError, match=f"at least {minimum}x{minimum}"):
        models.get(name)(shape, 10)


def test_alexnet_imagenet_stem_at_its_smallest_input():
    model = models.alexnet((63, 63, 3), NUM_CLASSES, width_multiplier=0.125, fc_units=16, bits=1)
    x = np.random.default_rng(0).uniform(size=(1, 63, 63, 3)).astype("float32")
    assert tuple(model(x).shape) == (1, NUM_CLASSES)
    assert tuple(model.get_layer("stage3_out").output.shape[1:]) == (3, 3, 32)


def test_cifar_stem_accepts_small_inputs():
    model = models.resnet18((8, 8, 3), 10, stem="cifar", width_multiplier=0.125)
    assert model.get_layer("stage4_out").output.shape[1:3] == (1, 1)


@pytest.mark.parametrize("bits, quantizer", [((1, 2), "lsq"), (16, "dorefa"), ((2, 16), "hwgq")])
def test_bits_the_quantizer_does_not_support(bits, quantizer):
    with pytest.raises(ValueError, match=f"quantizer='{quantizer}' cannot quantize"):
        models.resnet20(bits=bits, quantizer=quantizer)


# ----------------------------------------------------------------------------------------
# MAD Table 4 through kerasbnn.summary


def test_summary_reproduces_mad_table4_for_resnet18():
    fp = kerasbnn.summary(models.resnet18(), print_fn=None, float_reference=False)
    assert fp["memory_mbit"] == pytest.approx(374.1, rel=0.03)
    assert fp["flops"] == pytest.approx(18.1e8, rel=0.03)
    bireal = kerasbnn.summary(models.bireal_resnet18(bits=1), print_fn=None, float_reference=False)
    assert bireal["memory_mbit"] == pytest.approx(33.6, rel=0.03)
    assert bireal["flops"] == pytest.approx(1.39e8, rel=0.03)
    assert bireal["ops"] == pytest.approx(1.63e8, rel=0.03)
    # Table 4 prints 15.6e8 BOPs, but the 16 binary 3x3 convs of Bi-Real-18 hold 16.76e8
    # MACs: the paper's figure is exactly one 56x56 64->64 3x3 conv (1.16e8) short. Its OPs
    # (1.63e8 = BOPs / 64 + FLOPs) agree with either value within 1%, so BOPs are checked
    # against the architecture instead.
    binary_macs = sum(
        layer.output.shape[1] * layer.output.shape[2] * int(np.prod(layer.kernel.shape))
        for layer in models.bireal_resnet18(bits=1).layers
        if isinstance(layer, QuantConv2D) and layer.is_binary
    )
    assert bireal["bops"] == pytest.approx(binary_macs, rel=1e-6)
    assert bireal["bops"] - 15.6e8 == pytest.approx(56 * 56 * 64 * 64 * 9, rel=0.01)


def test_summary_parameter_counts_of_cifar_models():
    def params(model):
        return kerasbnn.summary(model, print_fn=None, float_reference=False)["params"]

    assert params(models.resnet20()) == pytest.approx(0.27e6, rel=0.02)
    assert params(models.vgg_small()) == pytest.approx(4.6e6, rel=0.02)
