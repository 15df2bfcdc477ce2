"""LearnableBias, RPReLU and ScaledAbs against NumPy, with the standard layer checks."""

import keras
import numpy as np
import pytest

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
