"""`student.precise_bn`: every arm's trained student gets BatchNorm statistics recomputed over
the training images, in batches of 1,000, before it is evaluated and saved."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbnn import config, methods, utils


def _model():
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def _job(images, count, evaluated):
    """A `StudentJob` whose training images are `images` (the first `count` recomputed)."""
    batches = []

    def precise_bn_ds(batch_size):
        batches.append(batch_size)
        return tf.data.Dataset.from_tensor_slices(images).batch(batch_size)

    def evaluate(model):
        evaluated.append(model)
        return 0.25

    values = config.load(None, [f"student.precise_bn={count}"])
    job = methods.StudentJob(values, run=None, info=None, train_ds=None, val_ds=None,
                             teachers={}, build=None, evaluate=evaluate,
                             precise_bn_ds=precise_bn_ds)
    return job, batches


@pytest.mark.parametrize("count, batch, used", [(50, 50, 50), (2500, 1000, 2500),
                                                (1500, 1000, 2000)])
def test_statistics_are_the_population_moments_of_the_training_images(rng, count, batch, used):
    images = rng.normal(loc=2.0, size=(2500, 6, 6, 1)).astype("float32")
    model, evaluated = _model(), []
    job, batches = _job(images, count, evaluated)
    assert job.precise_bn(model) == {"precise_bn": used, "accuracy_moving_stats": 0.25}
    assert batches == [batch] and evaluated == [model]  # the accuracy before, once
    conv = keras.Model(model.input, model.get_layer("conv").output)(images[:used]).numpy()
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), conv.mean(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), conv.var(axis=(0, 1, 2)), rtol=1e-3)


def test_zero_keeps_the_moving_averages_and_a_model_without_batch_norm_is_left_alone(rng):
    images = rng.normal(size=(64, 6, 6, 1)).astype("float32")
    model, evaluated = _model(), []
    job, batches = _job(images, 0, evaluated)
    assert job.precise_bn(model) == {"precise_bn": 0}
    np.testing.assert_array_equal(model.get_layer("bn").moving_mean.numpy(), 0.0)
    plain = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    job, batches = _job(images, 64, evaluated)
    assert job.precise_bn(plain) == {"precise_bn": 0}
    assert not batches and not evaluated


def test_a_job_without_the_training_images_says_how_to_keep_the_moving_averages():
    values = config.load(None, ["student.precise_bn=100"])
    job = methods.StudentJob(values, run=None, info=None, train_ds=None, val_ds=None,
                             teachers={}, build=None, evaluate=None)
    with pytest.raises(ValueError, match="student.precise_bn=0"):
        job.precise_bn(_model())


def test_a_negative_count_is_refused():
    with pytest.raises(config.ConfigError, match="student.precise_bn"):
        config.load(None, ["student.precise_bn=-1"])


def test_the_default_recomputes_ten_thousand_images_in_batches_of_a_thousand():
    assert config.RunConfig().student.precise_bn == 10000
    assert utils.PRECISE_BN_BATCH == 1000
