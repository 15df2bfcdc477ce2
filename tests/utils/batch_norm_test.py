"""recalibrate_batch_norm: population moments, nothing else touched, errors that restore;
precise_batch_norm: the images it is asked for, in batches of PRECISE_BN_BATCH."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbnn.utils import (PRECISE_BN_BATCH, batch_norm_layers, precise_batch_norm,
                            recalibrate_batch_norm)


def conv_bn_model(momentum=0.9):
    inputs = keras.Input((5, 5, 2))
    x = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=momentum, name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x))


def data(rng, n=30):
    # a large offset next to a small spread, as adder outputs have
    return (100.0 + rng.normal(size=(n, 5, 5, 2))).astype("float32"), rng.integers(0, 2, n)


def weights(model):
    return [w.numpy().copy() for w in model.trainable_weights]


def test_moving_statistics_become_the_population_moments(rng):
    model = conv_bn_model()
    x, y = data(rng)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(7)  # 7, 7, 7, 7, 2
    before = weights(model)
    assert recalibrate_batch_norm(model, dataset) == 30
    conv_out = model.get_layer("conv")(x).numpy().astype(np.float64).reshape(-1, 3)
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), conv_out.mean(0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), conv_out.var(0), rtol=1e-4)
    assert bn.momentum == 0.9
    for old, new in zip(before, weights(model)):
        np.testing.assert_array_equal(old, new)


def test_steps_limits_the_batches_and_bare_inputs_work(rng):
    model = conv_bn_model()
    x, _ = data(rng)
    assert (
        recalibrate_batch_norm(model, [x[:10], x[10:20], x[20:]], steps=2, jit_compile=False) == 20
    )
    conv_out = model.get_layer("conv")(x[:20]).numpy().reshape(-1, 3)
    np.testing.assert_allclose(
        model.get_layer("bn").moving_mean.numpy(), conv_out.mean(0), rtol=1e-5
    )


def test_inference_then_matches_training_mode_on_the_whole_set(rng):
    model = conv_bn_model()
    x, _ = data(rng, 16)
    recalibrate_batch_norm(model, [x])
    np.testing.assert_allclose(
        model(x, training=False), model(x, training=True), rtol=1e-4, atol=1e-4
    )


def test_nested_models_are_searched_and_frozen_layers_left_alone(rng):
    inner = conv_bn_model()
    frozen = keras.layers.BatchNormalization(name="frozen_bn")
    inputs = keras.Input((5, 5, 2))
    outputs = inner(frozen(inputs))
    outer = keras.Model(inputs, outputs)
    frozen.trainable = False
    assert batch_norm_layers(outer) == [inner.get_layer("bn")]
    x, _ = data(rng, 8)
    recalibrate_batch_norm(outer, [x])
    np.testing.assert_array_equal(frozen.moving_mean.numpy(), np.zeros(2))
    assert abs(float(np.mean(inner.get_layer("bn").moving_mean.numpy()))) > 0


def test_an_empty_dataset_raises_and_restores_the_statistics(rng):
    model = conv_bn_model(momentum=0.8)
    bn = model.get_layer("bn")
    bn.moving_mean.assign([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="gave no batch"):
        recalibrate_batch_norm(model, [])
    np.testing.assert_array_equal(bn.moving_mean.numpy(), [1.0, 2.0, 3.0])
    assert bn.momentum == 0.8


def test_a_failing_dataset_restores_the_statistics(rng):
    model = conv_bn_model()
    bn = model.get_layer("bn")
    x, _ = data(rng, 8)

    def batches():
        yield x
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        recalibrate_batch_norm(model, batches())
    np.testing.assert_array_equal(bn.moving_mean.numpy(), np.zeros(3))
    np.testing.assert_array_equal(bn.moving_variance.numpy(), np.ones(3))
    assert bn.momentum == 0.9


@pytest.mark.parametrize("steps", [0, -1, 1.5, True])
def test_bad_steps_raise(steps, rng):
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        recalibrate_batch_norm(conv_bn_model(), [data(rng)[0]], steps=steps)


def test_a_model_without_batch_norm_raises():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no trainable BatchNormalization"):
        recalibrate_batch_norm(model, [np.zeros((2, 3), "float32")])


@pytest.mark.parametrize("images, batch, used", [(20, 20, 20), (2000, PRECISE_BN_BATCH, 2000),
                                                (1001, PRECISE_BN_BATCH, 2000)])
def test_precise_batch_norm_takes_whole_batches_of_at_most_a_thousand(rng, images, batch, used):
    model = conv_bn_model()
    x = (100.0 + rng.normal(size=(2500, 5, 5, 2))).astype("float32")
    asked = []

    def batches(batch_size):
        asked.append(batch_size)
        return tf.data.Dataset.from_tensor_slices(x).batch(batch_size)

    assert precise_batch_norm(model, batches, images) == used and asked == [batch]
    conv_out = model.get_layer("conv")(x[:used]).numpy().astype(np.float64).reshape(-1, 3)
    np.testing.assert_allclose(model.get_layer("bn").moving_mean.numpy(), conv_out.mean(0),
                               rtol=1e-5)


@pytest.mark.parametrize("images", [0, -5, 2.5, True])
def test_precise_batch_norm_refuses_a_count_that_is_not_positive(images):
    with pytest.raises(ValueError, match="images must be a positive integer"):
        precise_batch_norm(conv_bn_model(), lambda b: None, images)
