"""TeacherFusion: delta = softmax(theta), its modes, its learning-rate scale and its config."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbnn.distill import TeacherFusion


def np_softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_learned_fusion_is_softmax_weighted_sum(rng):
    fusion = TeacherFusion(3)
    theta = np.array([0.3, -1.0, 2.0], "float32")
    fusion.theta.assign(theta)
    tensors = [rng.normal(size=(2, 4, 4, 5)).astype("float32") for _ in range(3)]
    delta = np_softmax(theta)
    expected = sum(d * t for d, t in zip(delta, tensors))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fusion(tensors)), expected, rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fusion.delta()), delta, rtol=1e-6)
    assert fusion.learned and [w.name for w in fusion.trainable_weights] == ["theta"]


def test_learned_fusion_starts_uniform():
    np.testing.assert_allclose(keras.ops.convert_to_numpy(TeacherFusion(4).delta()), [0.25] * 4)


@pytest.mark.parametrize(
    "mode, expected", [("average", [1 / 3] * 3), ([0.5, 0.5, 0.0], [0.5, 0.5, 0.0])]
)
def test_fixed_fusions_are_not_trainable(mode, expected):
    fusion = TeacherFusion(3, mode)
    assert not fusion.learned and fusion.trainable_weights == []
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fusion.delta()), expected, atol=1e-7)


def test_single_teacher_has_nothing_to_learn():
    fusion = TeacherFusion(1)
    assert fusion.trainable_weights == []
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fusion.delta()), [1.0])


def test_lr_scale_scales_forward_but_not_backward():
    fusion = TeacherFusion(2, lr_scale=10.0)
    fusion.theta.assign([0.1, -0.1])
    with tf.GradientTape() as tape:
        delta = fusion.delta()
        target = delta[0]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(delta), np_softmax(np.array([1.0, -1.0])), rtol=1e-6
    )
    grad = keras.ops.convert_to_numpy(tape.gradient(target, fusion.theta))
    d0 = np_softmax(np.array([1.0, -1.0]))[0]
    # d delta_0 / d (s theta) = delta_0 (1 - delta_0) * [1, -1], taken as the gradient of theta.
    np.testing.assert_allclose(grad, [d0 * (1 - d0), -d0 * (1 - d0)], rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_teachers": 0}, "positive integer"),
        ({"num_teachers": 2, "mode": "max"}, "fusion must be one of"),
        ({"num_teachers": 2, "mode": [1.0]}, "one weight per teacher"),
        ({"num_teachers": 2, "mode": [0.7, 0.7]}, "sum to 1"),
        ({"num_teachers": 2, "mode": [1.5, -0.5]}, "non-negative"),
        ({"num_teachers": 2, "lr_scale": 0}, "lr_scale must be greater than 0"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TeacherFusion(**kwargs)


def test_config_round_trip():
    fusion = TeacherFusion(3, [0.2, 0.3, 0.5], lr_scale=2.0, name="fusion_x")
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(fusion)))
    restored = keras.saving.deserialize_keras_object(config)
    assert restored.get_config() == fusion.get_config()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored.delta()), [0.2, 0.3, 0.5], rtol=1e-6
    )
