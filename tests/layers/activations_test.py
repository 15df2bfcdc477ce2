"""LearnableBias, RPReLU and ScaledAbs against NumPy, with the standard layer checks."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from kerasbnn import models
from kerasbnn.layers import LearnableBias, RPReLU, ScaledAbs
from tests.helpers import check_layer


def test_learnable_bias_adds_a_per_channel_bias(rng, tmp_path):
    x = rng.normal(size=(2, 3, 3, 4)).astype("float32")
    model = check_layer(LearnableBias, {"bias_initializer": "ones"}, x,
                        expected_output_shape=(2, 3, 3, 4), expected_num_trainable_weights=1,
                        tmp_path=tmp_path)
    layer = model.layers[-1]
    bias = np.array([0.5, -1.0, 2.0, 0.0], dtype="float32")
    layer.bias.assign(bias)
    np.testing.assert_allclose(np.asarray(layer(x)), x + bias, rtol=1e-6)


def test_fixed_threshold_is_not_trained():
    layer = LearnableBias(bias_initializer=keras.initializers.Constant(-0.5), trainable=False)
    layer.build((None, 4))
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 1
    restored = LearnableBias.from_config(layer.get_config())
    assert restored.trainable is False


def test_rprelu_matches_reactnet_equation(rng, tmp_path):
    x = rng.normal(size=(2, 3, 3, 2)).astype("float32")
    model = check_layer(RPReLU, {}, x, expected_output_shape=(2, 3, 3, 2),
                        expected_num_trainable_weights=3, tmp_path=tmp_path)
    layer = model.layers[-1]
    gamma, beta, zeta = np.array([0.1, -0.2]), np.array([0.25, 0.5]), np.array([1.0, -1.0])
    layer.gamma.assign(gamma.astype("float32"))
    layer.beta.assign(beta.astype("float32"))
    layer.zeta.assign(zeta.astype("float32"))
    expected = np.where(x > gamma, x - gamma + zeta, beta * (x - gamma) + zeta)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-6)


def test_rprelu_starts_as_prelu_with_slope_quarter(rng):
    x = rng.normal(size=(4, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(RPReLU()(x)), np.where(x > 0, x, 0.25 * x), rtol=1e-6)


def where_rprelu(layer, inputs):
    """RPReLU as it was first written, with a `where`: the oracle of the ReLU form."""
    shifted = ops.subtract(inputs, layer.gamma)
    return ops.where(shifted > 0, shifted, layer.beta * shifted) + layer.zeta


def bits(x):
    return np.asarray(x, dtype="float32").view(np.uint32)


def rprelu_case(seed, shape, zeta=True):
    """A built RPReLU with random gamma, beta (some negative) and zeta, and an input that
    holds negative, positive, +-0 and values equal to gamma (s == 0) in every channel."""
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    layer = RPReLU()
    layer.build(shape)
    gamma = rng.normal(0.0, 0.5, channels).astype("float32")
    gamma[0] = 0.0
    layer.gamma.assign(gamma)
    layer.beta.assign(rng.uniform(-0.5, 1.5, channels).astype("float32"))
    layer.zeta.assign(rng.normal(0.0, 0.5, channels).astype("float32") if zeta
                      else np.zeros(channels, "float32"))
    x = rng.normal(0.0, 2.0, shape).astype("float32").reshape(-1, channels)
    x[0::4] = gamma  # s == 0
    x[1::4, 0] = 0.0
    x[2::4, 0] = -0.0
    return layer, x.reshape(shape)


@pytest.mark.parametrize("shape", [(64, 3), (4, 5, 5, 6), (8, 3, 7)])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("zeta", [True, False])
def test_rprelu_equals_the_where_form_bit_for_bit(seed, shape, zeta):
    layer, x = rprelu_case(seed, shape, zeta)
    expected = where_rprelu(layer, x)
    assert np.array_equal(bits(layer(x)), bits(expected))
    shifted = x - np.asarray(layer.gamma)
    assert (shifted > 0).any() and (shifted < 0).any() and (shifted == 0).any()


@pytest.mark.parametrize("shape", [(64, 3), (4, 5, 5, 6)])
@pytest.mark.parametrize("seed", range(3))
def test_rprelu_gradients_equal_the_where_forms_away_from_the_kink(seed, shape):
    layer, x = rprelu_case(seed, shape)
    x[np.isclose(x, np.asarray(layer.gamma), atol=1e-3)] += 0.5  # no s == 0
    upstream = np.random.default_rng(seed + 10).normal(size=shape).astype("float32")

    def gradients(function):
        x_var = tf.Variable(x)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(function(x_var) * upstream)
        return tape.gradient(loss, [x_var, layer.gamma.value, layer.beta.value,
                                    layer.zeta.value])

    relu_form = gradients(layer)
    where_form = gradients(lambda inputs: where_rprelu(layer, inputs))
    for name, got, expected in zip(("x", "gamma", "beta", "zeta"), relu_form, where_form):
        assert got is not None and expected is not None, name
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6,
                                   atol=1e-6, err_msg=name)


def test_rprelu_gradient_at_the_kink_is_zero():
    layer, _ = rprelu_case(0, (1, 3))
    x = tf.Variable(np.asarray(layer.gamma)[None])  # s == 0 in every channel
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x))
    np.testing.assert_array_equal(np.asarray(tape.gradient(loss, x)), np.zeros((1, 3)))


def test_rprelu_weights_and_config_keep_the_saved_layout(tmp_path):
    """Saved files hold the weights by position and the config by key: both unchanged."""
    layer, x = rprelu_case(1, (4, 5, 5, 6))
    assert [w.name for w in layer.weights] == ["gamma", "beta", "zeta"]
    assert set(layer.get_config()) - {"name", "trainable", "dtype"} == {"slope_initializer"}
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "rprelu.keras")
    restored = keras.saving.load_model(tmp_path / "rprelu.keras")
    restored_layer = restored.layers[-1]
    assert isinstance(restored_layer, RPReLU)
    assert np.array_equal(bits(restored(x)), bits(model(x)))
    assert np.array_equal(bits(restored(x)), bits(where_rprelu(restored_layer, x)))


def test_reactnet_resnet20_outputs_equal_the_where_form_bit_for_bit(monkeypatch):
    keras.utils.set_random_seed(7)
    model = models.resnet20((32, 32, 3), 10, bits=1, block="reactnet", width_multiplier=0.5)
    rng = np.random.default_rng(3)
    rprelus = [layer for layer in model.layers if isinstance(layer, RPReLU)]
    assert len(rprelus) == 18
    for layer in rprelus:
        channels = layer.gamma.shape[0]
        layer.gamma.assign(rng.normal(0.0, 0.5, channels))
        layer.beta.assign(rng.uniform(-0.5, 1.5, channels))
        layer.zeta.assign(rng.normal(0.0, 0.5, channels))
    x = rng.normal(size=(4, 32, 32, 3)).astype("float32")
    features = keras.Model(model.input, [model.output, model.get_layer("stage3_out").output])
    relu_form = [np.asarray(y) for y in features(x)]
    monkeypatch.setattr(RPReLU, "call", where_rprelu)
    where_form = [np.asarray(y) for y in features(x)]
    for got, expected in zip(relu_form, where_form):
        assert np.array_equal(bits(got), bits(expected))


def test_scaled_abs_clips_alpha_to_unit_interval(rng, tmp_path):
    x = rng.normal(size=(2, 3)).astype("float32")
    model = check_layer(ScaledAbs, {"alpha_initializer": 0.5}, x, expected_output_shape=(2, 3),
                        expected_num_trainable_weights=1, tmp_path=tmp_path)
    layer = model.layers[-1]
    for alpha, effective in ((0.3, 0.3), (1.7, 1.0), (-0.4, 0.0)):
        layer.alpha.assign(alpha)
        np.testing.assert_allclose(np.asarray(layer(x)), effective * np.abs(x), rtol=1e-6)


def test_scaled_abs_rejects_alpha_outside_unit_interval():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ScaledAbs(alpha_initializer=1.5)
