"""Starting a k-bit network from the float one (`kerasbnn.transfer`): LSQ's steps from the data,
and the copy keeping the float network's function on the one-conv blocks."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbnn import models
from kerasbnn.transfer import copy_matching_weights, from_float, init_lsq_steps
from kerasbnn.utils import recalibrate_batch_norm


def _net(bits, block, seed=0):
    keras.utils.set_random_seed(seed)
    return models.get("resnet20")((28, 28, 1), 10, bits=bits, width_multiplier=0.25,
                                  block=block, quantizer="lsq")


def _batches(seed, count=4):
    x = np.random.default_rng(seed).normal(size=(32 * count, 28, 28, 1)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, np.zeros(32 * count, "int32"))).batch(32)


def _float_network(block, seed):
    """A float network whose BatchNorm statistics describe its inputs (not the initial 0/1)."""
    model = _net(32, block, seed)
    recalibrate_batch_norm(model, _batches(seed + 100), steps=4, jit_compile=False)
    return model


@pytest.mark.parametrize("seed", [0, 1])
def test_steps_follow_lsqs_rule_on_the_copied_kernels_and_the_float_inputs(seed):
    float_model, model = _float_network("bireal", seed), _net(4, "bireal", seed)
    copy_matching_weights(float_model, model)
    images = next(iter(_batches(seed)))[0]
    assert init_lsq_steps(float_model, model, images) == 36  # 18 convs x (input, kernel)
    conv = model.get_layer("stage2_block1_conv")
    seen = keras.Model(float_model.inputs, float_model.get_layer(conv.name).input)(images)
    steps = {w.path.split("/")[-1]: float(w.numpy()) for w in conv.weights if "step" in w.path}
    for name, values in (("input", np.asarray(seen, "float64")),
                         ("kernel", conv.kernel.numpy().astype("float64"))):
        step = steps[f"{name}_quantizer_step"]
        rule = 2 * float(np.mean(np.abs(values))) / math.sqrt(7)  # Q_P = 7, Q_N = 8 (4 bits)
        error = lambda s: np.mean((np.clip(np.round(values / s), -8, 7) * s - values) ** 2)  # noqa: E731
        grid = rule * np.append(np.geomspace(0.05, 2.0, 100), 1.0)
        assert step == pytest.approx(grid[np.argmin([error(s) for s in grid])], rel=1e-5)
        assert error(step) <= error(rule)


def test_a_model_without_lsq_keeps_its_variables():
    float_model, binary = _float_network("bireal", 0), models.get("resnet20")(
        (28, 28, 1), 10, bits=1, width_multiplier=0.25, block="bireal")
    copy_matching_weights(float_model, binary)
    before = [w.numpy().copy() for w in binary.weights]
    assert init_lsq_steps(float_model, binary, next(iter(_batches(0)))[0]) == 0
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, binary.weights))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("block", ["bireal", "reactnet"])
def test_an_8_bit_copy_of_a_one_conv_block_network_keeps_its_function(block, seed):
    float_model, model = _float_network(block, seed), _net(8, block, seed)
    from_float(float_model, model, _batches(seed + 100), batches=4)
    x = next(iter(_batches(seed + 7)))[0]
    expected, got = float_model(x, training=False), model(x, training=False)
    error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    # measured before the signed grid and these steps: 0.99-1.23 (bireal), 0.13-0.19 (reactnet)
    assert error < 0.1, error
