"""MirroredStrategy on two logical CPU devices gives the single-device step within 1e-5.

Logical devices must be configured before TensorFlow initialises, so the check runs in a
fresh interpreter.
"""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import keras
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from conftest import tiny_model
    from kerasbnn.distill import MultiTeacherDistiller

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 5, size=(8,)).astype("int32")

    def one_step():
        keras.utils.set_random_seed(3)
        # No BatchNormalization in the student: per-replica batch statistics would differ.
        student = tiny_model("student", binary=True, widths=(4, 4), batch_norm=False)
        teachers = [tiny_model(f"t{m}", seed=m + 1) for m in range(2)]
        taps = ["stage1_out", "stage2_out"]
        distiller = MultiTeacherDistiller(student, teachers, feature_taps=taps)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5), metrics=["accuracy"])
        logs = distiller.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
        return {k: v[0] for k, v in logs.items()}, [w.numpy() for w in distiller.trainable_weights]

    single_logs, single_weights = one_step()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored_logs, mirrored_weights = one_step()
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "log_diff": {k: abs(single_logs[k] - mirrored_logs[k]) for k in single_logs},
        "weight_diff": max(
            float(np.max(np.abs(a - b))) for a, b in zip(single_weights, mirrored_weights)
        ),
        "weight_change": max(float(np.max(np.abs(a))) for a in single_weights),
        "loss": single_logs["loss"],
    }))
    """)


def test_mirrored_step_equals_single_device_step(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, str(script), os.path.dirname(__file__)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["loss"] > 0
    assert set(report["log_diff"]) >= {
        "loss",
        "student_loss",
        "kl_loss",
        "feature_loss",
        "delta_logits_t0",
    }
    for key, diff in report["log_diff"].items():
        assert diff <= 1e-5, (key, diff)
    assert report["weight_diff"] <= 1e-5
