"""AdderConv2D against a NumPy AdderNet (forward, gradients, adaptive learning rate)."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbnn.layers import AdderConv2D
from kerasbnn.layers.base import same_padding_amounts


def _patches(x, kernel_size, strides, dilation, padding):
    """Padded input and the (b, m, n, i, j, c) patch view as AdderNet's unfold builds it."""
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, strides, dilation
    if padding == "same":
        pads = [same_padding_amounts(s, k, st, d) for s, k, st, d in zip(x.shape[1:3], kernel_size, strides, dilation)]
        x = np.pad(x, [(0, 0), *pads, (0, 0)])
    else:
        pads = [(0, 0), (0, 0)]
    rows = (x.shape[1] - (kh - 1) * dh - 1) // sh + 1
    cols = (x.shape[2] - (kw - 1) * dw - 1) // sw + 1
    patches = np.zeros((x.shape[0], rows, cols, kh, kw, x.shape[3]), x.dtype)
    for m in range(rows):
        for n in range(cols):
            for i in range(kh):
                for j in range(kw):
                    patches[:, m, n, i, j] = x[:, m * sh + i * dh, n * sw + j * dw]
    return x, pads, patches


def numpy_adder(x, kernel, upstream, strides=(1, 1), dilation=(1, 1), padding="valid", eta=None):
    """Forward -sum|X - F|, dY/dF = X - F, dY/dX = HT(F - X) (official adder.py), in float64."""
    x, kernel, upstream = (np.asarray(a, np.float64) for a in (x, kernel, upstream))
    kh, kw = kernel.shape[:2]
    xp, pads, p = _patches(x, (kh, kw), strides, dilation, padding)
    diff = p[..., None] - kernel[None, None, None]  # (b, m, n, i, j, c, o)
    y = -np.abs(diff).sum(axis=(3, 4, 5))
    g = upstream[:, :, :, None, None, None, :]
    grad_kernel = (diff * g).sum(axis=(0, 1, 2))
    grad_patches = (np.clip(-diff, -1, 1) * g).sum(axis=-1)  # (b, m, n, i, j, c)
    grad_xp = np.zeros_like(xp)
    (sh, sw), (dh, dw) = strides, dilation
    for m in range(y.shape[1]):
        for n in range(y.shape[2]):
            for i in range(kh):
                for j in range(kw):
                    grad_xp[:, m * sh + i * dh, n * sw + j * dw] += grad_patches[:, m, n, i, j]
    grad_x = grad_xp[:, pads[0][0] : xp.shape[1] - pads[0][1], pads[1][0] : xp.shape[2] - pads[1][1]]
    if eta is not None:
        grad_kernel = grad_kernel * eta * math.sqrt(grad_kernel.size) / max(np.linalg.norm(grad_kernel), 1e-12)
    return y, grad_x, grad_kernel


def _keras_adder(layer, x, upstream):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * upstream)
    grad_x, grad_kernel = tape.gradient(loss, [x, layer.kernel.value])
    return y.numpy(), grad_x.numpy(), grad_kernel.numpy()


CASES = [
    dict(kernel_size=3, strides=1, dilation_rate=1, padding="same"),
    dict(kernel_size=3, strides=2, dilation_rate=1, padding="same"),
    dict(kernel_size=(2, 3), strides=(2, 1), dilation_rate=1, padding="valid"),
    dict(kernel_size=3, strides=1, dilation_rate=2, padding="valid"),
    dict(kernel_size=1, strides=2, dilation_rate=1, padding="valid"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("adaptive_lr", [False, True])
def test_forward_and_gradients_match_addernet(case, adaptive_lr, rng):
    layer = AdderConv2D(4, adaptive_lr=adaptive_lr, **case)
    x = rng.normal(size=(2, 7, 6, 3)).astype("float32")
    layer.build(x.shape)
    # Kernel entries near the inputs make some |F - X| < 1, so the HardTanh clip is exercised.
    layer.kernel.assign(0.5 * rng.normal(size=layer.kernel.shape).astype("float32"))
    upstream = rng.normal(size=layer.compute_output_shape(x.shape)).astype("float32")
    y, grad_x, grad_kernel = _keras_adder(layer, x, upstream)
    strides, dilation = layer.strides, layer.dilation_rate
    ref_y, ref_gx, ref_gk = numpy_adder(
        x, layer.kernel.numpy(), upstream, strides, dilation, layer.padding, eta=0.2 if adaptive_lr else None
    )
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(grad_x, ref_gx, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(grad_kernel, ref_gk, rtol=1e-4, atol=1e-4)


def test_input_gradient_is_hardtanh_not_sign():
    """With one pixel and one filter weight, dY/dX = clip(F - X, -1, 1) exactly."""
    layer = AdderConv2D(1, 1, adaptive_lr=False)
    layer.build((1, 1, 1, 1))
    layer.kernel.assign(np.full((1, 1, 1, 1), 0.3, "float32"))
    for value, expected in [(0.0, 0.3), (2.0, -1.0), (-5.0, 1.0)]:
        x = tf.constant([[[[value]]]])
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y = layer(x)
        assert float(y) == pytest.approx(-abs(value - 0.3))
        assert float(tape.gradient(y, x)) == pytest.approx(expected)
        # Full-precision filter gradient X - F, not sign(X - F).
        assert float(tape.gradient(y, layer.kernel.value)) == pytest.approx(value - 0.3)


def test_adaptive_lr_normalises_the_filter_gradient(rng):
    layer = AdderConv2D(8, 3, padding="same", eta=0.5)
    x = rng.normal(size=(2, 5, 5, 4)).astype("float32")
    _, _, grad_kernel = _keras_adder(layer, x, rng.normal(size=(2, 5, 5, 8)).astype("float32") * 100)
    assert np.linalg.norm(grad_kernel) == pytest.approx(0.5 * math.sqrt(grad_kernel.size), rel=1e-5)


def test_default_init_is_unit_normal_and_no_bias():
    layer = AdderConv2D(64, 3)
    layer.build((None, 8, 8, 32))
    assert [w.name for w in layer.weights] == ["kernel"]
    assert np.std(layer.kernel.numpy()) == pytest.approx(1.0, abs=0.05)


def test_config_json_and_keras_round_trip(tmp_path, rng):
    inputs = keras.Input((8, 8, 3))
    x = AdderConv2D(4, 3, strides=2, padding="same", eta=0.1, kernel_regularizer="l2", name="adder")(inputs)
    outputs = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, outputs)
    config = model.get_layer("adder").get_config()
    clone = AdderConv2D.from_config(json.loads(json.dumps(config)))
    assert clone.get_config() == config
    path = str(tmp_path / "adder.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    data = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(model.predict(data, verbose=0), loaded.predict(data, verbose=0))
    assert isinstance(loaded.get_layer("adder"), AdderConv2D)
    assert loaded.get_layer("adder").eta == 0.1


def test_one_training_step_changes_the_filters(rng):
    inputs = keras.Input((6, 6, 2))
    x = AdderConv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = model.layers[1].kernel.numpy().copy()
    model.fit(rng.normal(size=(8, 6, 6, 2)), rng.integers(0, 3, 8), epochs=1, verbose=0)
    assert not np.allclose(before, model.layers[1].kernel.numpy())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(filters=0, kernel_size=3), "filters"),
        (dict(filters=4, kernel_size=0), "kernel_size"),
        (dict(filters=4, kernel_size=3, padding="causal"), "padding"),
        (dict(filters=4, kernel_size=3, strides=2, dilation_rate=2), "cannot both"),
        (dict(filters=4, kernel_size=3, eta=0.0), "eta"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdderConv2D(**kwargs)


def test_unknown_spatial_size_raises_at_build():
    with pytest.raises(ValueError, match="known rows"):
        AdderConv2D(4, 3)(keras.Input((None, None, 3)))


@pytest.mark.parametrize("kind", ["adder", "conv"])
def test_adder_resnet20_round_trip_and_taps(kind, tmp_path, rng):
    from kerasbnn import models

    model = models.get("adder_resnet20")((8, 8, 1), 5, layer=kind, blocks_per_stage=1)
    assert models.taps(model) == ["stage1_out", "stage2_out", "stage3_out"]
    adders = [layer for layer in model.layers if isinstance(layer, AdderConv2D)]
    assert len(adders) == (0 if kind == "conv" else 2 * 3 + 2)  # two per block + two 1x1 shortcuts
    assert isinstance(model.get_layer("stage2_block1_conv2"), AdderConv2D if kind == "adder" else keras.layers.Conv2D)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    data = rng.normal(size=(2, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(model.predict(data, verbose=0), loaded.predict(data, verbose=0), rtol=1e-6, atol=1e-6)
    assert model.output.shape == (None, 5)


def test_adder_resnet20_rejects_quantization():
    from kerasbnn.models import adder_resnet20

    with pytest.raises(ValueError, match="bits=32"):
        adder_resnet20((8, 8, 1), 10, bits=1)
    with pytest.raises(ValueError, match="layer"):
        adder_resnet20((8, 8, 1), 10, layer="mult")


def test_adder_resnet20_width_multiplier_scales_every_channel_count():
    from kerasbnn.models import adder_resnet20

    model = adder_resnet20((8, 8, 1), 10, blocks_per_stage=1, width_multiplier=0.5)
    assert [model.get_layer(f"stage{s}_out").output.shape[-1] for s in (1, 2, 3)] == [8, 16, 32]
    assert model.get_layer("stem_conv").filters == 8
    assert model.get_layer("stage3_block1_conv2").kernel.shape == (3, 3, 32, 32)
    with pytest.raises(ValueError, match="width_multiplier must be a positive number"):
        adder_resnet20((8, 8, 1), 10, width_multiplier=0)
