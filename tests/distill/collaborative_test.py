"""CMT-KD: losses against NumPy, the shared knowledge, gradients, ablations, bad input, fit."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from kerasbnn import models
from kerasbnn.distill import AttentionTransfer, CollaborativeDistiller, DeltaHistory, min_logit
from kerasbnn.export import lce_convert, list_ops
from kerasbnn.layers import QuantConv2D

SHAPE = (8, 8, 1)
CLASSES = 3


def _zoo(bits, width=0.25, **kwargs):
    return models.resnet20(
        SHAPE, CLASSES, bits=bits, quantizer="hwgq", width_multiplier=width, **kwargs
    )


def _nets(student_bits=2, teacher_bits=(4, 8)):
    return _zoo(student_bits), [_zoo(b) for b in teacher_bits]


def tiny(bits, name, batch_norm=True, classes=CLASSES, seed=0):
    """A two-stage net with the zoo's tap names (`stem_out`, `stage<i>_out`), HWGQ k-bit body.

    Tracing four of these costs a fraction of four ResNet-20s: the fit tests use it.
    """
    init = keras.initializers.GlorotUniform(seed=seed)

    def q(mode):
        return (
            None if bits == 32 else {"class_name": "hwgq", "config": {"k_bit": bits, "mode": mode}}
        )

    x = inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, padding="same", kernel_initializer=init, name="stem_conv")(x)
    x = keras.layers.ReLU(name="stem_out")(x)
    for i, (filters, stride) in enumerate([(4, 1), (6, 2)], start=1):
        x = QuantConv2D(
            filters,
            3,
            strides=stride,
            padding="same",
            kernel_initializer=init,
            name=f"conv{i}",
            input_quantizer=q("activations"),
            kernel_quantizer=q("weights"),
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"stage{i}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(classes, kernel_initializer=init, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def _batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *SHAPE)).astype("float32")
    y = rng.integers(0, CLASSES, size=(n,)).astype("int32")
    return x, y


def _np_attention(a, p=2):
    q = np.mean(np.abs(a) ** p, axis=-1).reshape(a.shape[0], -1)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# --- eq 5: attention transfer ------------------------------------------------------------


def test_attention_transfer_matches_numpy(rng):
    teacher = rng.normal(size=(2, 4, 4, 6)).astype("float32")
    student = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    expected = np.mean((_np_attention(teacher) - _np_attention(student)) ** 2)
    got = ops.convert_to_numpy(AttentionTransfer().compute_loss(teacher, student))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # A larger teacher map is average-pooled down to the student's size.
    big = rng.normal(size=(2, 8, 8, 6)).astype("float32")
    pooled = big.reshape(2, 4, 2, 4, 2, 6).mean(axis=(2, 4))
    expected = np.mean((_np_attention(pooled) - _np_attention(student)) ** 2)
    got = ops.convert_to_numpy(AttentionTransfer().compute_loss(big, student))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert float(AttentionTransfer().compute_loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-7)


def test_attention_transfer_bad_input():
    with pytest.raises(ValueError, match="`p` must be greater than 0"):
        AttentionTransfer(p=0)
    with pytest.raises(ValueError, match="4-D"):
        AttentionTransfer().compute_loss(np.ones((2, 3), "float32"), np.ones((2, 3), "float32"))
    with pytest.raises(ValueError, match="integer ratio"):
        AttentionTransfer().compute_loss(
            np.ones((1, 3, 3, 1), "float32"), np.ones((1, 2, 2, 1), "float32")
        )
    restored = AttentionTransfer.from_config(AttentionTransfer(p=3).get_config())
    assert restored.p == 3


# --- eq 7: KDCL-MinLogit -------------------------------------------------------------------


@pytest.mark.parametrize("one_hot", [False, True])
def test_min_logit_matches_numpy(rng, one_hot):
    z_t = rng.normal(size=(5, 4)).astype("float32") * 3
    z_s = rng.normal(size=(5, 4)).astype("float32") * 3
    y = rng.integers(0, 4, size=5)
    zbar_t = z_t - z_t[np.arange(5), y][:, None]
    zbar_s = z_s - z_s[np.arange(5), y][:, None]
    expected = np.minimum(zbar_t, zbar_s)
    labels = np.eye(4, dtype="float32")[y] if one_hot else y
    got = ops.convert_to_numpy(min_logit([z_t, z_s], labels))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert np.all(got[np.arange(5), y] == 0)
    # The ensemble is at least as confident on the true class as either member.
    p = _np_softmax(got)[np.arange(5), y]
    assert np.all(p >= _np_softmax(z_t)[np.arange(5), y] - 1e-6)
    assert np.all(p >= _np_softmax(z_s)[np.arange(5), y] - 1e-6)


# --- eq 1: shared knowledge ----------------------------------------------------------------


def test_shared_knowledge_is_softmax_weighted_sum_fed_to_next_stage():
    student, teachers = _nets()
    distiller = CollaborativeDistiller(student, teachers, fusion_lr_scale=0.5)
    assert distiller.feature_taps == ["stage1_out", "stage2_out", "stage3_out"]
    thetas = [np.array([0.3, -0.4]), np.array([1.0, 0.0]), np.array([-2.0, 0.5])]
    for fuse, theta in zip(distiller.fusions.values(), thetas):
        fuse.theta.assign(theta.astype("float32"))
    x, _ = _batch()
    out = distiller(x, training=False)

    parts = [models.parts(t) for t in teachers]
    hidden = [p["stem"](x, training=False) for p in parts]
    for k, theta in enumerate(thetas, start=1):
        feats = [
            ops.convert_to_numpy(p[f"stage{k}"](h, training=False)) for p, h in zip(parts, hidden)
        ]
        w = _np_softmax(0.5 * theta)  # forward pass uses pi = s * theta
        fused = w[0] * feats[0] + w[1] * feats[1]
        np.testing.assert_allclose(
            ops.convert_to_numpy(out["teacher_features"][k - 1][0]), fused, rtol=1e-5, atol=1e-5
        )
        hidden = [fused, fused]  # every teacher's next stage receives F^l
    for tap, theta in zip(distiller.feature_taps, thetas):
        np.testing.assert_allclose(
            distiller.importances()[tap], _np_softmax(0.5 * theta), rtol=1e-6
        )
    logits = distiller.combined_head(hidden[0], training=False)
    np.testing.assert_allclose(
        ops.convert_to_numpy(out["teacher_logits"][0]), ops.convert_to_numpy(logits), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(out["logits"]),
        ops.convert_to_numpy(student(x, training=False)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_average_fusion_and_average_heads():
    student, teachers = _nets()
    distiller = CollaborativeDistiller(
        student, teachers, fusion="average", head="average", feature_taps=["stage2_out"]
    )
    assert not any("theta" in v.path for v in distiller.trainable_weights)
    x, _ = _batch()
    out = distiller(x, training=False)
    parts = [models.parts(t) for t in teachers]
    hidden = [p["stage1"](p["stem"](x, training=False), training=False) for p in parts]
    feats = [p["stage2"](h, training=False) for p, h in zip(parts, hidden)]
    fused = (ops.convert_to_numpy(feats[0]) + ops.convert_to_numpy(feats[1])) / 2
    np.testing.assert_allclose(
        ops.convert_to_numpy(out["teacher_features"][0][0]), fused, rtol=1e-5, atol=1e-5
    )
    # stage3 is not shared: each teacher continues on its own, then its own head.
    logits = [p["head"](p["stage3"](fused, training=False), training=False) for p in parts]
    expected = (ops.convert_to_numpy(logits[0]) + ops.convert_to_numpy(logits[1])) / 2
    np.testing.assert_allclose(ops.convert_to_numpy(out["teacher_logits"][0]), expected, rtol=1e-5, atol=1e-5)


# --- gradients -----------------------------------------------------------------------------


@pytest.mark.parametrize("feature_loss", ["attention", "fitnet"])
def test_gradients_reach_teachers_student_and_pi(feature_loss):
    student, teachers = _nets()
    teachers[1].trainable = False  # e.g. frozen by an earlier MultiTeacherDistiller
    distiller = CollaborativeDistiller(student, teachers, feature_loss=feature_loss)
    assert all(t.trainable for t in teachers)
    x, y = _batch()
    variables = distiller.trainable_weights
    assert len({id(v) for v in variables}) == len(variables)
    with tf.GradientTape() as tape:
        loss = distiller.compute_loss(x, y, distiller(x, training=True))
    grads = dict(zip([id(v) for v in variables], tape.gradient(loss, variables)))
    assert all(g is not None for g in grads.values()), [
        v.path for v in variables if grads[id(v)] is None
    ]

    def moved(model_vars):
        return any(float(np.abs(ops.convert_to_numpy(grads[id(v)])).sum()) > 0 for v in model_vars)

    assert moved([v for v in student.trainable_weights if "kernel" in v.name])
    for teacher in teachers:
        assert moved(
            [v for v in teacher.trainable_weights if "kernel" in v.name and id(v) in grads]
        )
    for fuse in distiller.fusions.values():
        assert float(np.abs(ops.convert_to_numpy(grads[id(fuse.theta)])).sum()) > 0
    assert moved(distiller.combined_head.trainable_weights)
    if feature_loss == "fitnet":
        assert all(moved(a.trainable_weights) for a in distiller.adapters)
        assert not any(
            a.name in [layer.name for layer in student.layers] for a in distiller.adapters
        )


# --- eq 10: each ablation switch removes exactly its term ------------------------------------


def test_each_ablation_removes_exactly_its_term():
    student, teachers = _nets()
    x, y = _batch()
    reference = {}

    def evaluate(**kwargs):
        distiller = CollaborativeDistiller(
            student, teachers, ce_weight=1.0, kl_weight=0.5, feature_weight=100.0, **kwargs
        )
        # Every distiller gets the same combined head and pi (theta = 0 is 1/n, as "average").
        if reference:
            distiller.combined_head.set_weights(reference["head"])
        else:
            reference["head"] = distiller.combined_head.get_weights()
        out = distiller(x, training=False)
        return float(distiller.compute_loss(x, y, out, training=False)), distiller.loss_terms(
            y, out
        )

    full, terms = evaluate()
    ce = float(terms["student_loss"] + terms["teacher_loss"])
    kl = float(terms["mutual_student_loss"] + terms["mutual_teacher_loss"])
    feat = float(terms["feature_loss"])
    assert kl > 0 and feat > 0
    assert full == pytest.approx(ce + 0.5 * kl + 100.0 * feat, rel=1e-5)

    no_ml, no_ml_terms = evaluate(mutual_learning=False)  # "w/o ML"
    assert set(terms) - set(no_ml_terms) == {"mutual_student_loss", "mutual_teacher_loss"}
    assert full - no_ml == pytest.approx(0.5 * kl, rel=1e-4)

    no_att, no_att_terms = evaluate(feature_loss=None)  # "w/o Att"
    assert set(terms) - set(no_att_terms) == {"feature_loss"}
    assert full - no_att == pytest.approx(100.0 * feat, rel=1e-4)

    average, average_terms = evaluate(fusion="average")  # pi fixed at 1/n (teachers still trained)
    assert set(average_terms) == set(terms)
    assert average == pytest.approx(full, rel=1e-5)


# --- bad input -----------------------------------------------------------------------------


def test_bad_inputs():
    student, teachers = _nets()
    with pytest.raises(ValueError, match="does not have the student's architecture"):
        CollaborativeDistiller(student, [teachers[0], _zoo(4, width=0.5)])
    # Another class count: check_models, shared by every distiller, names it first.
    with pytest.raises(ValueError, match="must predict the student's 3 classes"):
        CollaborativeDistiller(
            student,
            [models.resnet20(SHAPE, CLASSES + 1, bits=4, quantizer="hwgq", width_multiplier=0.25)],
        )
    with pytest.raises(ValueError, match=r"no layer\(s\) \['stage9_out'\]"):
        CollaborativeDistiller(student, teachers, feature_taps=["stage1_out", "stage9_out"])
    inner = next(layer.name for layer in student.layers if layer.name.endswith("_add"))
    with pytest.raises(ValueError, match="not stage boundaries"):
        CollaborativeDistiller(student, teachers, feature_taps=[inner])
    with pytest.raises(ValueError, match="non-empty list"):
        CollaborativeDistiller(student, [])
    with pytest.raises(ValueError, match="is the student or another teacher"):
        CollaborativeDistiller(student, [student])
    with pytest.raises(ValueError, match="Unknown feature_loss 'mse'; valid values"):
        CollaborativeDistiller(student, teachers, feature_loss="mse")
    with pytest.raises(ValueError, match="kl_weight must be at least 0.0, received -1.0"):
        CollaborativeDistiller(student, teachers, kl_weight=-1.0)
    with pytest.raises(ValueError, match="temperature must be greater than 0.0, received 0"):
        CollaborativeDistiller(student, teachers, temperature=0)


# --- fit / evaluate / logs -----------------------------------------------------------------


def test_short_fit_history_keys_and_teacher_evaluation(tmp_path):
    student, teachers = tiny(2, "student"), [tiny(4, "t4", seed=1), tiny(8, "t8", seed=2)]
    distiller = CollaborativeDistiller(student, teachers)
    # XLA compilation of four ResNets costs more than these few steps on a CPU.
    distiller.compile(
        keras.optimizers.SGD(0.05, momentum=0.9), metrics=["accuracy"], jit_compile=False
    )
    x, y = _batch(8)
    before = [v.numpy().copy() for v in teachers[0].trainable_weights]
    history = distiller.fit(
        x,
        y,
        batch_size=4,
        epochs=2,
        validation_data=(x, y),
        verbose=0,
        callbacks=[DeltaHistory(tmp_path / "pi.csv", plot_path=tmp_path / "pi.png")],
    )
    expected = {
        "loss",
        "total_loss",
        "student_loss",
        "teacher_loss",
        "mutual_student_loss",
        "mutual_teacher_loss",
        "feature_loss",
        "distillation_loss",
        "teacher_accuracy",
        "accuracy",
    }
    pis = {f"importance/{tap}/t{i}" for tap in distiller.feature_taps for i in range(2)}
    assert expected | pis | {f"val_{k}" for k in expected} <= set(history.history)
    assert all(len(v) == 2 and np.all(np.isfinite(v)) for v in history.history.values())
    assert history.history["loss"] == pytest.approx(history.history["total_loss"], rel=1e-5)
    for tap in distiller.feature_taps:
        assert sum(history.history[f"importance/{tap}/t{i}"][-1] for i in range(2)) == pytest.approx(
            1.0, abs=1e-6
        )
    # Teachers are trained (CMT-KD trains every network), and so is pi.
    after = [v.numpy() for v in teachers[0].trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    pi = distiller.importances()
    assert any(not np.allclose(w, 0.5) for w in pi.values())
    rows = (tmp_path / "pi.csv").read_text().splitlines()
    assert len(rows) == 4 and "importance/stage1_out/t1" in rows[0]  # header, start, 2 epochs
    assert rows[1].startswith("-1.0,0.5,0.5,")  # pi starts uniform
    assert (tmp_path / "pi.png").stat().st_size > 0  # the importance factors plotted (Fig. 2)
    np.testing.assert_allclose(float(rows[-1].split(",")[1]), pi["stage1_out"][0], rtol=1e-5)


@pytest.mark.tflite
def test_binary_student_converts_alone(tmp_path):
    pytest.importorskip("larq_compute_engine")
    student, teachers = _nets(student_bits=1, teacher_bits=(2, 4))
    distiller = CollaborativeDistiller(student, teachers)
    assert distiller.student is student
    report = lce_convert(distiller.student, tmp_path / "student.tflite")
    binary_convs = sum(bool(getattr(layer, "is_binary", False)) for layer in student.layers)
    assert binary_convs > 0 and report.bconv_ops == binary_convs
    assert list_ops(tmp_path / "student.tflite").count("LceBconv2d") == binary_convs


@pytest.mark.slow
def test_backup_and_restore_resumes_and_predict(tmp_path):
    x, y = _batch(8)

    class StopAt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("interrupted")

    def run(callbacks):
        keras.utils.set_random_seed(3)
        student, teachers = tiny(2, "student"), [tiny(4, "t4", seed=1), tiny(8, "t8", seed=2)]
        distiller = CollaborativeDistiller(student, teachers)
        distiller.compile(keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=False)
        history = distiller.fit(
            x, y, batch_size=4, epochs=3, verbose=0, shuffle=False, callbacks=callbacks
        )
        return distiller, history

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        run([backup, StopAt()])
    resumed, history = run([backup])
    assert len(history.history["loss"]) == 2  # epochs 1 and 2 only
    uninterrupted, _ = run([])
    for a, b in zip(resumed.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    predictions = resumed.predict(x, verbose=0)
    assert predictions["student"].shape == predictions["teacher"].shape == (8, CLASSES)
    np.testing.assert_allclose(
        predictions["student"], resumed.student.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_from_zoo_builds_student_and_teachers_at_their_precisions():
    distiller = CollaborativeDistiller.from_zoo(
        "resnet20",
        SHAPE,
        CLASSES,
        student_bits=(1, 2),
        teacher_bits=(2, 4, 8),
        quantizer="hwgq",
        builder_kwargs={"width_multiplier": 0.25},
        feature_loss="fitnet",
    )
    assert distiller.student.name == "resnet20_w1a2"
    assert [t.name for t in distiller.teachers] == [
        "resnet20_w2a2",
        "resnet20_w4a4",
        "resnet20_w8a8",
    ]
    assert [len(f.delta()) for f in distiller.fusions.values()] == [3, 3, 3]
    assert len(distiller.adapters) == 3


def test_config_round_trip():
    student, teachers = _nets()
    distiller = CollaborativeDistiller(
        student, teachers, feature_loss="fitnet", mutual_learning=False, temperature=2.0
    )
    restored = CollaborativeDistiller.from_config(distiller.get_config())
    assert restored.get_config()["feature_loss"] == "fitnet"
    assert not restored.mutual_learning and restored.temperature == 2.0 and restored.feature_weight == 1.0
    assert len(restored.teachers) == 2 and restored.feature_taps == distiller.feature_taps


MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import keras
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from collaborative_test import _batch, tiny
    from kerasbnn.distill import CollaborativeDistiller

    x, y = _batch(8)

    def one_step():
        keras.utils.set_random_seed(3)
        # No BatchNormalization: per-replica batch statistics would differ.
        student = tiny(2, "student", batch_norm=False)
        teachers = [tiny(b, f"t{b}", batch_norm=False, seed=b) for b in (4, 8)]
        distiller = CollaborativeDistiller(student, teachers)
        distiller.compile(keras.optimizers.SGD(0.5), jit_compile=False)
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
        "loss": single_logs["loss"],
    }))
    """)


@pytest.mark.slow
def test_mirrored_step_equals_single_device_step(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, str(script), os.path.dirname(__file__)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and report["loss"] > 0
    assert {
        "loss",
        "student_loss",
        "mutual_teacher_loss",
        "feature_loss",
        "importance/stage1_out/t0",
    } <= set(report["log_diff"])
    for key, diff in report["log_diff"].items():
        assert diff <= 1e-5, (key, diff)
    assert report["weight_diff"] <= 1e-5


def test_distiller_keras_file_round_trip(tmp_path):
    student, teachers = tiny(2, "student"), [tiny(4, "t4", seed=1), tiny(8, "t8", seed=2)]
    distiller = CollaborativeDistiller(student, teachers, feature_loss="fitnet")
    for fuse in distiller.fusions.values():
        fuse.theta.assign(np.array([0.3, -0.1], "float32"))
    x, _ = _batch()
    expected = distiller(x, training=False)
    distiller.save(tmp_path / "cmtkd.keras")
    restored = keras.saving.load_model(tmp_path / "cmtkd.keras")  # safe_mode, no custom_objects
    assert isinstance(restored, CollaborativeDistiller) and restored.feature_loss == "fitnet"
    got = restored(x, training=False)
    for key in ("logits", "teacher_logits"):
        np.testing.assert_allclose(
            ops.convert_to_numpy(ops.stack(tf.nest.flatten(got[key]))),
            ops.convert_to_numpy(ops.stack(tf.nest.flatten(expected[key]))), atol=1e-6
        )
    for tap, pi in distiller.importances().items():
        np.testing.assert_allclose(restored.importances()[tap], pi, rtol=1e-6)
