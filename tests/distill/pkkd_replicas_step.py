"""Three PKKD training steps on one device and on two replicas, as JSON.

Run as a script by `distribute_test.py`: logical devices must be set up before TensorFlow
initialises. Unlike `method_step.py`, the two halves of each batch differ, so any statistic
taken per replica (rather than over the global batch) shows. The networks have no
BatchNormalization (whose per-replica batch statistics would differ for that reason alone)
and the adder layer no adaptive learning rate (a per-replica gradient norm): what is left to
compare is PKKD's own state, the running kernel statistics of `sigma="auto"`.
"""

import json

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerasbnn.distill import PKKDDistiller  # noqa: E402
from kerasbnn.layers import AdderConv2D  # noqa: E402

TAPS = ["stage1_block1_conv2", "stage2_block1_conv2"]
rng = np.random.default_rng(0)
x = rng.normal(loc=0.5, size=(24, 6, 6, 2)).astype("float32")
x[:4] *= 3.0  # the first replica's first half-batch is spread wider than the second's
y = rng.integers(0, 3, size=(24,)).astype("int32")


def network(name, adder, seed):
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((6, 6, 2))
    h = inputs
    for s, tap in enumerate(TAPS):
        if adder:
            h = AdderConv2D(4, 3, padding="same", adaptive_lr=False, kernel_initializer=init,
                            name=tap)(h)
        else:
            h = keras.layers.Conv2D(4, 3, padding="same", kernel_initializer=init, name=tap)(h)
        h = keras.layers.Activation("tanh", name=f"act{s}")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(3, kernel_initializer=init, name="logits")(h),
                       name=name)


def three_steps():
    keras.utils.set_random_seed(3)
    distiller = PKKDDistiller(network("adder", True, 1), network("cnn", False, 2),
                              feature_taps=TAPS, feature_weight=1.0, kl_weight=1.0)
    distiller.compile(keras.optimizers.SGD(0.1))
    history = distiller.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    return {k: v[0] for k, v in history.items()}, [w.numpy() for w in distiller.weights]


single_logs, single_weights = three_steps()
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    strategy_logs, strategy_weights = three_steps()
print(json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "logs": {k: float(v) for k, v in single_logs.items()},
    "log_diff": {k: abs(single_logs[k] - strategy_logs[k]) for k in single_logs},
    "weight_diff": max(float(np.max(np.abs(a - b)))
                       for a, b in zip(single_weights, strategy_weights)),
    "weights": len(single_weights),
}))
