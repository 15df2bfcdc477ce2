"""MultiTeacherDistiller: loss value, gradients, frozen teachers, logs, saving and bad inputs."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbnn.distill import MultiTeacherDistiller

TAPS = ["stage1_out", "stage2_out"]


def build(make_model, num_teachers=2, **kwargs):
    student = make_model("student", binary=True, widths=(4, 4))
    teachers = [make_model(f"teacher{m}", widths=(4, 6), seed=m + 1) for m in range(num_teachers)]
    kwargs.setdefault("feature_taps", TAPS)
    return MultiTeacherDistiller(student, teachers, **kwargs)


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_history_has_every_term_and_delta(make_model, toy_data):
    x, y = toy_data
    distiller = build(make_model)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    history = distiller.fit(x, y, batch_size=8, epochs=2, validation_data=(x, y), verbose=0).history
    terms = ["loss", "student_loss", "kl_loss", "feature_loss", "distillation_loss", "total_loss"]
    deltas = [f"importance/{tap}/t{m}" for tap in ["logits", *TAPS] for m in range(2)]
    assert set(history) == set(terms + ["accuracy"] + deltas) | {
        f"val_{k}" for k in terms + ["accuracy"]
    }
    assert all(len(v) == 2 and np.isfinite(v).all() for v in history.values())
    for tap in ["logits", *TAPS]:
        np.testing.assert_allclose(
            history[f"importance/{tap}/t0"][-1] + history[f"importance/{tap}/t1"][-1], 1.0, rtol=1e-5
        )
    # The learned deltas moved away from their uniform start.
    assert history["importance/logits/t0"][-1] != pytest.approx(0.5, abs=1e-7)


def test_compute_loss_matches_numpy(make_model, toy_data):
    x, y = toy_data
    student = make_model("student", widths=(4, 6))
    teachers = [make_model(f"t{m}", widths=(4, 6), seed=m + 1) for m in range(2)]
    distiller = MultiTeacherDistiller(
        student,
        teachers,
        feature_taps=["stage2_out"],
        fusion=[0.25, 0.75],
        kl_weight=0.7,
        feature_weight=0.3,
        temperature=2.0,
        adapters=False,
    )
    loss = float(distiller.compute_loss(x, y, training=False))

    def outputs(model):
        probe = keras.Model(model.inputs[0], [model.output, model.get_layer("stage2_out").output])
        return [np.asarray(v, "float64") for v in probe.predict(x, verbose=0)]

    (ys, fs), (y0, f0), (y1, f1) = outputs(student), outputs(teachers[0]), outputs(teachers[1])
    ce = -np_log_softmax(ys)[np.arange(len(y)), y].mean()
    yt = 0.25 * y0 + 0.75 * y1
    log_p, log_q = np_log_softmax(yt / 2.0), np_log_softmax(ys / 2.0)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(-1).mean()
    diff = 0.25 * f0 + 0.75 * f1 - fs
    feature = np.where(np.abs(diff) < 1, 0.5 * diff**2, np.abs(diff) - 0.5).mean()
    np.testing.assert_allclose(loss, ce + 0.7 * kl + 0.3 * feature, rtol=1e-5)


@pytest.mark.parametrize("fusion", ["average", "learned"])
def test_fuse_probabilities_distils_the_mean_of_the_teachers_softmax(make_model, toy_data, fusion):
    # CMT-KD §4.2's average teacher: the KL target is mean_m softmax(y_m / T), which is not
    # softmax(mean_m y_m / T) (the default, MAD eq. 7).
    x, y = toy_data
    student = make_model("student", widths=(4, 6))
    teachers = [make_model(f"t{m}", widths=(4, 6), seed=m + 1) for m in range(3)]
    for m, teacher in enumerate(teachers):  # teachers of different confidence
        kernel = teacher.layers[-1].kernel
        kernel.assign(kernel * (1.0 + 3.0 * m))
    kwargs = dict(feature_taps=None, fusion=fusion, kl_weight=1.0, ce_weight=0.0, temperature=2.0)
    mixed = MultiTeacherDistiller(student, teachers, fuse_probabilities=True, **kwargs)
    fused = MultiTeacherDistiller(student, teachers, **kwargs)
    ys = np.asarray(student.predict(x, verbose=0), "float64")
    yt = [np.asarray(t.predict(x, verbose=0), "float64") for t in teachers]
    log_q = np_log_softmax(ys / 2.0)
    p = np.mean([np.exp(np_log_softmax(z / 2.0)) for z in yt], axis=0)
    kl = (p * (np.log(p) - log_q)).sum(-1).mean()
    np.testing.assert_allclose(float(mixed.compute_loss(x, y, training=False)), kl, rtol=1e-5)
    assert float(fused.compute_loss(x, y, training=False)) != pytest.approx(kl, rel=1e-3)
    assert mixed.get_config()["fuse_probabilities"] is True


def test_gradients_reach_student_adapters_and_delta_but_not_teachers(make_model, toy_data):
    x, y = toy_data
    distiller = build(make_model)
    teacher_vars = [v.value for t in distiller.teachers for v in t.weights]
    with tf.GradientTape(persistent=True) as tape:
        for v in teacher_vars:
            tape.watch(v)
        loss = distiller.compute_loss(x, y, training=True)
    trainable = distiller.trainable_variables
    paths = [v.path for v in trainable]
    assert any(p.startswith("adapter_") for p in paths) and any(
        p.startswith("fusion_") for p in paths
    )
    teacher_ids = {id(v) for t in distiller.teachers for v in t.weights}
    assert not teacher_ids & {id(v) for v in trainable}
    for v, g in zip(trainable, tape.gradient(loss, trainable)):
        assert g is not None and np.any(keras.ops.convert_to_numpy(g) != 0), v.path
    assert all(g is None for g in tape.gradient(loss, teacher_vars))


def test_teachers_unchanged_and_adapters_outside_student(make_model, toy_data):
    x, y = toy_data
    distiller = build(make_model)
    before = [[w.copy() for w in t.get_weights()] for t in distiller.teachers]
    student_before = [w.copy() for w in distiller.student.get_weights()]
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for teacher, weights in zip(distiller.teachers, before):
        assert not teacher.trainable
        for a, b in zip(teacher.get_weights(), weights):  # BN moving statistics included
            np.testing.assert_array_equal(a, b)
    assert any(
        not np.array_equal(a, b) for a, b in zip(distiller.student.get_weights(), student_before)
    )
    student_layers = {layer.name for layer in distiller.student.layers}
    assert not any(name.startswith(("adapter_", "fusion_")) for name in student_layers)


@pytest.mark.parametrize("fusion, expected", [("average", [0.5, 0.5]), ([0.9, 0.1], [0.9, 0.1])])
def test_fixed_fusion_keeps_delta(make_model, toy_data, fusion, expected):
    x, y = toy_data
    distiller = build(make_model, fusion=fusion)
    distiller.compile(optimizer="adam", run_eagerly=True)
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    for tap in ["logits", *TAPS]:
        np.testing.assert_allclose(
            [history[f"importance/{tap}/t{m}"][-1] for m in range(2)], expected, rtol=1e-6
        )


def test_single_teacher_and_logits_only_with_another_architecture(make_model, toy_data):
    x, y = toy_data
    student = make_model("student", binary=True, widths=(4, 4))
    other = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(5)], name="mlp"
    )
    distiller = MultiTeacherDistiller(student, other, feature_taps=None)
    assert distiller.feature_taps == [] and distiller.adapters == []
    distiller.compile(optimizer="adam", run_eagerly=True)
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert history["feature_loss"] == [0.0] and history["kl_loss"][0] > 0
    assert history["importance/logits/t0"] == [1.0]


def test_auto_taps_come_from_the_zoo(make_model):
    distiller = build(make_model, feature_taps="auto")
    assert distiller.feature_taps == [(t, t) for t in TAPS]


def test_tap_pairs_map_student_to_teacher_layers(make_model):
    distiller = build(make_model, feature_taps=[("stage2_out", "stage2_out"), ("pool", "pool")])
    assert [a.name for a in distiller.adapters] == ["adapter_stage2_out", "adapter_pool"]


def _all_weights(model):
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def test_non_finite_loss_stops_with_term_name_and_keeps_weights(make_model, toy_data):
    x, y = toy_data
    student = make_model("student", widths=(4, 4))
    teacher = make_model("teacher", widths=(4, 6), seed=1)
    kernel = teacher.get_layer("logits").kernel
    kernel.assign(np.full(kernel.shape, np.inf, "float32"))
    distiller = MultiTeacherDistiller(student, teacher, feature_taps=None)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    before = _all_weights(student)
    with pytest.raises(tf.errors.InvalidArgumentError, match="kl_loss .*NaN or infinite"):
        distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    # No update was applied, and the BN moving statistics of the failed batch were put back:
    # the message's "weights are those after the last step whose loss ... were finite" holds.
    for w, b in zip(_all_weights(student), before):
        np.testing.assert_array_equal(w, b)


def test_non_finite_gradient_with_finite_loss_is_not_applied(make_model, toy_data):
    x, y = toy_data
    student = make_model("student", widths=(4, 4))
    teacher = make_model("teacher", widths=(4, 6), seed=1)
    distiller = MultiTeacherDistiller(student, teacher, feature_taps=None)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss(labels, logits):  # sqrt(0) = 0 adds nothing, but its gradient is inf * 0 = NaN
        return cross_entropy(labels, logits) + keras.ops.sqrt(keras.ops.sum(logits * 0.0))

    distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    before = _all_weights(student)
    with pytest.raises(tf.errors.InvalidArgumentError, match="a gradient .*NaN or infinite"):
        distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    after = _all_weights(student)
    assert all(np.isfinite(w).all() for w in after)
    for w, b in zip(after, before):
        np.testing.assert_array_equal(w, b)


def test_finite_steps_still_update_weights_and_statistics(make_model, toy_data):
    x, y = toy_data
    distiller = build(make_model)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    moving_mean = distiller.student.get_layer("stem_bn").moving_mean
    before = keras.ops.convert_to_numpy(moving_mean).copy()
    kernel = keras.ops.convert_to_numpy(distiller.student.get_layer("stem").kernel).copy()
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert not np.array_equal(keras.ops.convert_to_numpy(moving_mean), before)
    assert not np.array_equal(keras.ops.convert_to_numpy(distiller.student.get_layer("stem").kernel), kernel)


def test_check_hyperparameters_names_the_config_keys():
    from kerasbnn.distill.multi_teacher import check_hyperparameters

    assert check_hyperparameters(2, fusion="average")["fusion"] == "average"
    for kwargs, message in [
        ({"kl_weight": -1}, "distill.kl_weight must be at least 0"),
        ({"temperature": 0}, "distill.temperature must be greater than 0"),
        ({"fusion": "foo"}, "distill.fusion must be one of"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_hyperparameters(2, prefix="distill.", **kwargs)


def bad_cases(make_model):
    student = make_model("student", widths=(4, 4))
    return [
        ([], {}, "non-empty list"),
        ([make_model("t", classes=7)], {}, "predict the student's 5 classes"),
        ([make_model("t", input_shape=(10, 10, 3))], {}, "takes inputs of shape"),
        ([make_model("t")], {"feature_taps": ["stage9_out"]}, "has no layer named 'stage9_out'"),
        (
            [make_model("t")],
            {"feature_taps": [("stage1_out", "stage2_out")]},
            "spatial shapes must match",
        ),
        (
            [make_model("t"), make_model("u", widths=(4, 8))],
            {"feature_taps": ["stage2_out"]},
            "fused teacher features need one shape",
        ),
        (
            [make_model("t", widths=(4, 6))],
            {"feature_taps": ["stage2_out"], "adapters": False},
            "need an adapter",
        ),
        ([make_model("t", softmax=True)], {}, "ends with a softmax"),
        ([student], {}, "is the student or another teacher"),
        (["model"], {}, "must be a keras.Model"),
        ([make_model("t")], {"kl_weight": -1.0}, "kl_weight must be at least 0"),
        ([make_model("t")], {"temperature": 0}, "temperature must be greater than 0"),
        ([make_model("t")], {"fusion": [0.5, 0.5]}, "one weight per teacher"),
        ([make_model("t")], {"feature_reduction": "batchmean"}, "Unknown feature_reduction"),
        ([make_model("t")], {"feature_taps": "all"}, "feature_taps must be 'auto'"),
        ([make_model("t")], {"feature_taps": [3]}, "layer name or a"),
    ], student


def test_bad_inputs_raise_at_construction(make_model):
    cases, student = bad_cases(make_model)
    for teachers, kwargs, match in cases:
        kwargs.setdefault("feature_taps", None)
        with pytest.raises(ValueError, match=match):
            MultiTeacherDistiller(student, teachers, **kwargs)
    with pytest.raises(ValueError, match="ends with a softmax"):
        MultiTeacherDistiller(make_model("s", softmax=True), [make_model("t")], feature_taps=None)


def test_config_round_trip_and_keras_file(make_model, toy_data, tmp_path):
    x, y = toy_data
    distiller = build(
        make_model, fusion="learned", kl_weight=0.5, feature_weight=0.1, temperature=2.0,
        fusion_lr_scale=3.0
    )
    distiller.compile(optimizer="adam", metrics=["accuracy"], run_eagerly=True)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(distiller)))
    clone = keras.saving.deserialize_keras_object(config)
    keys = ["feature_taps", "fusion", "kl_weight", "feature_weight", "temperature", "fusion_lr_scale",
            "adapters"]
    assert {k: clone.get_config()[k] for k in keys} == {k: distiller.get_config()[k] for k in keys}
    path = os.fspath(tmp_path / "distiller.keras")
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, MultiTeacherDistiller)
    for key, delta in distiller.deltas().items():
        np.testing.assert_allclose(restored.deltas()[key], delta, rtol=1e-6)
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), distiller.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        float(restored.compute_loss(x, y, training=False)),
        float(distiller.compute_loss(x, y, training=False)),
        rtol=1e-5,
    )


def test_student_saved_alone_has_no_distillation_parts(make_model, toy_data, tmp_path):
    x, y = toy_data
    distiller = build(make_model)
    distiller.compile(optimizer="adam", run_eagerly=True)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = os.fspath(tmp_path / "student.keras")
    distiller.student.save(path)
    text = json.dumps(distiller.student.get_config())
    assert "adapter_" not in text and "fusion_" not in text and "Distill" not in text
    loaded = keras.saving.load_model(path)
    assert len(loaded.weights) == len(distiller.student.weights)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), distiller.student.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_backup_and_restore_resumes_where_it_stopped(make_model, toy_data, tmp_path):
    x, y = toy_data

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("interrupted")

    def run(callbacks, epochs=3):
        keras.utils.set_random_seed(7)
        distiller = build(make_model)
        distiller.compile(optimizer="adam", run_eagerly=True)
        history = distiller.fit(
            x, y, batch_size=8, epochs=epochs, shuffle=False, callbacks=callbacks, verbose=0
        )
        return distiller, history

    reference, _ = run([])
    backup = keras.callbacks.BackupAndRestore(os.fspath(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        run([backup, Interrupt()])
    resumed, history = run([backup])
    assert len(history.history["loss"]) == 1  # only the third epoch ran again
    for a, b in zip(resumed.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.tflite
def test_distilled_student_converts_with_lce(make_model, toy_data, tmp_path):
    kerasbnn = pytest.importorskip("kerasbnn")
    if not hasattr(kerasbnn, "lce_convert"):
        pytest.skip("kerasbnn.lce_convert has not landed")
    from kerasbnn.export import list_ops

    x, y = toy_data
    distiller = build(make_model)
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = os.fspath(tmp_path / "student.tflite")
    kerasbnn.lce_convert(distiller.student, path)
    assert "LceBconv2d" in list_ops(path)


@pytest.mark.parametrize("seed", [0, 1])
def test_teacher_ce_trains_delta_on_the_fused_teachers_cross_entropy_only(make_model, seed):
    # delta_objective="teacher_ce": fusion_loss = CE(y, sum_m delta_m z_m); theta's gradient is
    # that CE's alone (the student's KL and feature terms see delta under stop-gradient).
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 5, size=(8,))
    distiller = build(make_model, num_teachers=3, delta_objective="teacher_ce",
                      kl_weight=0.7, feature_weight=0.3, fusion_lr_scale=5.0)
    assert list(distiller.fusions) == ["logits"]  # every tap is fused with the logits' delta
    fusion = distiller.fusions["logits"]
    fusion.theta.assign(rng.normal(size=3).astype("float32"))
    z = np.stack([keras.ops.convert_to_numpy(t(x, training=False)) for t in distiller.teachers])
    delta = np.exp(5.0 * fusion.theta.numpy())
    delta /= delta.sum()
    fused = np.tensordot(delta, z, axes=1)
    p = np.exp(np_log_softmax(fused))
    ce = -np_log_softmax(fused)[np.arange(8), y].mean()
    d_fused = (p - np.eye(5)[y]) / 8  # dCE/dfused
    d_delta = np.einsum("bc,mbc->m", d_fused, z)
    d_theta = (np.diag(delta) - np.outer(delta, delta)) @ d_delta  # softmax'(s theta), s as 1
    with tf.GradientTape() as tape:
        outputs = distiller(x, training=False)
        terms = distiller.loss_terms(y, outputs)
        loss = distiller.compute_loss(x, y, outputs, training=False)
    np.testing.assert_allclose(float(terms["fusion_loss"]), ce, rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss, fusion.theta).numpy(), d_theta,
                               rtol=1e-4, atol=1e-7)


def test_teacher_ce_is_named_and_checked(make_model):
    with pytest.raises(ValueError, match="Unknown delta_objective 'ce'"):
        build(make_model, delta_objective="ce")
    averaged = build(make_model, delta_objective="teacher_ce", fusion="average")
    assert "fusion_loss" not in averaged.term_weights  # nothing to learn
