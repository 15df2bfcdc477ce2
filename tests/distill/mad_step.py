"""One MAD training step on one device and under a `tf.distribute` strategy, as JSON.

Run as a script (`python mad_step.py mirrored|multiworker [sgd_delta]`) by the distribution
tests (`sgd_delta`: theta trained by SGD through `with_delta_optimizer`):
logical devices and collective ops must be set up before TensorFlow initialises, so each
check needs a fresh interpreter. "mirrored" splits this host's CPU into two logical
devices; "multiworker" expects `TF_CONFIG` (one process per worker).
"""

import json
import os
import sys

if sys.argv[1] == "multiworker":
    from kerasbnn import distribution

    strategy = distribution.multi_worker_strategy()  # before any other TensorFlow op
else:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import tiny_model  # noqa: E402

from kerasbnn.distill import MultiTeacherDistiller, with_delta_optimizer  # noqa: E402

rng = np.random.default_rng(0)
x = rng.normal(size=(8, 8, 8, 3)).astype("float32")
y = rng.integers(0, 5, size=(8,)).astype("int32")


def one_step():
    keras.utils.set_random_seed(3)
    # No BatchNormalization in the student: per-replica batch statistics would differ.
    student = tiny_model("student", binary=True, widths=(4, 4), batch_norm=False)
    teachers = [tiny_model(f"t{m}", seed=m + 1) for m in range(2)]
    distiller = MultiTeacherDistiller(student, teachers, feature_taps=["stage1_out", "stage2_out"])
    optimizer = keras.optimizers.SGD(0.5)
    if sys.argv[2:] == ["sgd_delta"]:
        optimizer = with_delta_optimizer(distiller, keras.optimizers.Adam(0.01),
                                         keras.optimizers.SGD(0.5))
    distiller.compile(optimizer=optimizer, metrics=["accuracy"])
    logs = distiller.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    return {k: v[0] for k, v in logs.items()}, [w.numpy() for w in distiller.trainable_weights]


single_logs, single_weights = one_step()
with strategy.scope():
    strategy_logs, strategy_weights = one_step()
print(json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "log_diff": {k: abs(single_logs[k] - strategy_logs[k]) for k in single_logs},
    "weight_diff": max(
        float(np.max(np.abs(a - b))) for a, b in zip(single_weights, strategy_weights)),
    "loss": single_logs["loss"],
}))
