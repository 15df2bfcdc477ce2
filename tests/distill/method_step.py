"""One training step of a distiller on one device and under MirroredStrategy, as JSON.

Run as a script (`python method_step.py mad|cmtkd|pkkd|progressive|at`) by `distribute_test.py`:
logical devices must be set up before TensorFlow initialises. The networks keep
BatchNormalization, so the batch holds 4 examples twice: each replica then sees the whole set
once and its batch statistics equal the single device's, and any difference left is the loss
scaling across replicas (`TeacherStudent.compute_loss`, `kerasbnn.distill.base.replica_share`).
"""

import json
import os
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import tiny_model  # noqa: E402

from kerasbnn import models  # noqa: E402
from kerasbnn.distill import (  # noqa: E402
    AttentionTransfer,
    CollaborativeDistiller,
    LogitsDistillation,
    MultiTeacherDistiller,
    PKKDDistiller,
    ProgressiveDistiller,
    TermsDistiller,
)

rng = np.random.default_rng(0)
half_x = rng.normal(size=(4, 8, 8, 3)).astype("float32")
half_y = rng.integers(0, 5, size=(4,)).astype("int32")
x, y = np.concatenate([half_x, half_x]), np.concatenate([half_y, half_y])


def fit_logs(distiller):
    history = distiller.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    return {k: v[0] for k, v in history.items()}, distiller.trainable_weights


def mad_step():
    student = tiny_model("student", binary=True, widths=(4, 4))
    teachers = [tiny_model(f"t{m}", seed=m + 1) for m in range(2)]
    distiller = MultiTeacherDistiller(student, teachers, feature_taps=["stage1_out", "stage2_out"])
    distiller.compile(keras.optimizers.SGD(0.5))
    return fit_logs(distiller)


def cmtkd_step():
    # Float networks: with k-bit activations the reduction order of the replicas' batch
    # statistics flips roundings, and the straight-through gradients differ by far more
    # than the loss scaling under test (measured: 0.13 with 2/4/8 bits, 2e-6 in float).
    distiller = CollaborativeDistiller.from_zoo(
        "resnet20", (8, 8, 3), 5, student_bits=32, teacher_bits=(32, 32),
        builder_kwargs=dict(width_multiplier=0.25), feature_loss="fitnet")
    distiller.compile(keras.optimizers.SGD(0.1))
    return fit_logs(distiller)


def pkkd_step():
    options = dict(blocks_per_stage=1, width_multiplier=0.25)
    student = models.adder_resnet20((8, 8, 3), 5, **options)
    teacher = models.adder_resnet20((8, 8, 3), 5, layer="conv", **options)
    distiller = PKKDDistiller(student, teacher, feature_weight=0.1, kl_weight=1.0)
    distiller.compile(keras.optimizers.SGD(0.1))
    return fit_logs(distiller)


def progressive_step():
    teacher = models.resnet20((8, 8, 3), 5, width_multiplier=0.25)
    student = models.resnet20((8, 8, 3), 5, bits=1, width_multiplier=0.25)
    distiller = ProgressiveDistiller(student, teacher, "II", optimizer=keras.optimizers.SGD(0.1),
                                     jit_compile=False, verbose=False)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    records = distiller.fit(dataset, epochs_per_stage=1, final_epochs=1, verbose=0)
    logs = {f"{r['phase']}_{k}": v[0] for r in records for k, v in r["history"].items()}
    return logs, student.trainable_weights


def at_step():
    student = tiny_model("student", binary=True, widths=(4, 4))
    teacher = tiny_model("teacher", seed=1)
    losses = {f"attention_loss_{t}": (AttentionTransfer(teacher_layer_name=t,
                                                         student_layer_name=t), 10.0)
              for t in ("stage1_out", "stage2_out")}
    losses["kl_loss"] = (LogitsDistillation(2.0), 1.0)
    distiller = TermsDistiller(student, teacher, losses)
    distiller.compile(keras.optimizers.SGD(0.5))
    return fit_logs(distiller)


def one_step(method):
    keras.utils.set_random_seed(3)
    logs, weights = globals()[f"{method}_step"]()
    return logs, [w.numpy() for w in weights]


method = sys.argv[1]
single_logs, single_weights = one_step(method)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    strategy_logs, strategy_weights = one_step(method)
print(json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "log_diff": {k: abs(single_logs[k] - strategy_logs[k]) for k in single_logs},
    "logs": {k: float(v) for k, v in single_logs.items()},
    "weight_diff": max(
        float(np.max(np.abs(a - b))) for a, b in zip(single_weights, strategy_weights)),
    "loss": float(next(v for k, v in single_logs.items() if k.endswith("loss"))),
}))
