"""Block-wise distillation (thesis methods I, II, III) on tiny staged models."""

import keras
import numpy as np
import pytest

from kerasbnn.distill.progressive import ProgressiveDistiller, copy_matching_weights
from kerasbnn.layers import QuantConv2D
from kerasbnn.models import parts, resnet20

SHAPE = (6, 6, 1)


def tiny(binary=False, stages=2):
    """stem -> stage1..N (conv + BN) -> head, with the zoo's tap names."""
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Identity(name="stem_out")(x)
    for s in range(1, stages + 1):
        if binary:
            conv = QuantConv2D(4, 3, padding="same", input_quantizer="ste_sign",
                               kernel_quantizer="ste_sign", name=f"stage{s}_conv")
        else:
            conv = keras.layers.Conv2D(4, 3, padding="same", name=f"stage{s}_conv")
        x = keras.layers.BatchNormalization(name=f"stage{s}_bn")(conv(x))
        x = keras.layers.Identity(name=f"stage{s}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name="binary" if binary else "float")


def data(rng, n=8):
    return rng.normal(size=(n, *SHAPE)).astype("float32"), rng.integers(0, 3, n)


class WeightWatch(keras.callbacks.Callback):
    """Records, per phase, which student variables changed and which were trainable."""

    def __init__(self, student):
        super().__init__()
        self.student = student
        self.phases = []

    def on_train_begin(self, logs=None):
        self.before = {w.path: w.numpy().copy() for w in self.student.weights}
        self.trainable = {w.path for w in self.model.trainable_weights}

    def on_train_end(self, logs=None):
        changed = {w.path for w in self.student.weights if not np.array_equal(self.before[w.path], w.numpy())}
        self.phases.append((self.trainable, changed))


def _layer(path):
    return path.split("/")[0]


@pytest.mark.parametrize("method, trainable", [("I", "active"), ("I", "cumulative"), ("III", "active")])
def test_only_the_current_stage_trains(method, trainable, rng):
    teacher, student = tiny(), tiny(binary=True)
    distiller = ProgressiveDistiller(student, teacher, method, trainable=trainable, run_eagerly=True, verbose=False)
    watch = WeightWatch(student)
    teacher_before = [w.numpy().copy() for w in teacher.weights]
    x, y = data(rng)
    records = distiller.fit(x, y=y, batch_size=4, epochs_per_stage=1, final_epochs=1, callbacks=[watch], verbose=0)
    assert [r["phase"] for r in records] == ["stage 1/2", "stage 2/2", "final"]
    for s, (allowed, changed) in enumerate(watch.phases[:2], start=1):
        active = {f"stage{s}_conv", f"stage{s}_bn"}
        if trainable == "cumulative":
            active |= {f"stage{k}_{kind}" for k in range(1, s) for kind in ("conv", "bn")}
        assert {_layer(p) for p in allowed} == active
        assert changed and {_layer(p) for p in changed} <= active
    allowed, changed = watch.phases[2]
    assert {_layer(p) for p in changed} >= {"stem_conv", "stage1_conv", "stage2_conv", "logits"}
    for before, after in zip(teacher_before, teacher.weights):
        np.testing.assert_array_equal(before, after.numpy())
    assert all(layer.trainable for layer in student.layers)


def test_method_one_hybrid_network_and_loss(rng):
    teacher, student = tiny(), tiny(binary=True)
    distiller = ProgressiveDistiller(student, teacher, "I", feature_weight=0.25, verbose=False)
    phase = distiller.schedule()[0]
    assert phase["binary"] == ["stage1"] and phase["float"] == ["stage2"] and phase["trainable"] == ["stage1"]
    with distiller.phase(phase) as model:  # only the phase's stages train inside
        assert not student.get_layer("stage2_conv").trainable
    assert student.get_layer("stage2_conv").trainable
    x, y = data(rng)
    out = model(x, training=False)
    t, s = parts(teacher), parts(student)
    student_feature = s["stage1"](s["stem"](x))
    hybrid_logits = s["head"](t["stage2"](student_feature))
    np.testing.assert_allclose(out["logits"], hybrid_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["teacher_features"][0][0], t["stage1"](t["stem"](x)), rtol=1e-5, atol=1e-5)
    mse = np.mean((student_feature.numpy() - out["teacher_features"][0][0].numpy()) ** 2)
    logits = hybrid_logits.numpy()
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    ce = -np.mean(log_p[np.arange(len(y)), y])
    loss = model.compute_loss(x, y, out, training=False)
    assert float(loss) == pytest.approx(0.25 * mse + 0.75 * ce, rel=1e-4)


def test_lit_student_stage_receives_the_teachers_previous_output(rng):
    teacher, student = tiny(), tiny(binary=True)
    distiller = ProgressiveDistiller(student, teacher, "II", verbose=False)
    student.get_layer("stage2_conv").kernel.assign(rng.normal(size=(3, 3, 4, 4)))  # differ from the teacher
    phase = distiller.schedule()[0]
    assert phase["trainable"] == ["stage1", "stage2"]
    with distiller.phase(phase) as model:
        assert student.get_layer("stage2_conv").trainable
    x, _ = data(rng)
    out = model(x, training=False)
    t, s = parts(teacher), parts(student)
    t1 = t["stage1"](t["stem"](x))
    np.testing.assert_allclose(out["student_features"][1], s["stage2"](t1), rtol=1e-5, atol=1e-5)
    end_to_end = s["stage2"](s["stage1"](s["stem"](x)))
    assert not np.allclose(out["student_features"][1], end_to_end)
    np.testing.assert_allclose(out["student_features"][0], s["stage1"](t["stem"](x)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["teacher_logits"][0], teacher(x), rtol=1e-5, atol=1e-5)


def _log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


@pytest.mark.parametrize("squared", [False, True])
def test_lit_loss_has_t_squared_only_when_asked(squared, rng):
    """Thesis eq. 2.16 (False): no T^2 on the soft term; LIT's code (True): T^2."""
    teacher, student = tiny(), tiny(binary=True)
    distiller = ProgressiveDistiller(student, teacher, "II", feature_weight=0.4, kd_label_fraction=0.7,
                                     temperature=3.0, scale_by_temperature_squared=squared, verbose=False)
    student.get_layer("logits").kernel.assign(rng.normal(size=(4, 3)))  # differ from the teacher
    phase = distiller.schedule()[0]
    assert ("T^2*KL" in phase["loss"]) == squared
    x, y = data(rng)
    with distiller.phase(phase) as model:
        out = model(x, training=False)
        loss = float(model.compute_loss(x, y, out, training=False))
    t, s = parts(teacher), parts(student)
    t_feats = [t["stem"](x)]
    for k in (1, 2):
        t_feats.append(t[f"stage{k}"](t_feats[-1]))
    mse = sum(np.mean((s[f"stage{k}"](t_feats[k - 1]).numpy() - t_feats[k].numpy()) ** 2) for k in (1, 2))
    z_s = s["head"](s["stage2"](s["stage1"](s["stem"](x)))).numpy()
    z_t = t["head"](t_feats[-1]).numpy()
    ce = -np.mean(_log_softmax(z_s)[np.arange(len(y)), y])
    log_pt, log_ps = _log_softmax(z_t / 3.0), _log_softmax(z_s / 3.0)
    kl = np.mean(np.sum(np.exp(log_pt) * (log_pt - log_ps), axis=1)) * (9.0 if squared else 1.0)
    assert kl > 1e-3
    assert loss == pytest.approx(0.4 * mse + 0.6 * (0.7 * ce + 0.3 * kl), rel=1e-4)


def test_lit_fit_logs_the_loss_terms(rng):
    distiller = ProgressiveDistiller(tiny(binary=True), tiny(), "II", run_eagerly=True, verbose=False)
    x, y = data(rng)
    records = distiller.fit(x, y=y, batch_size=4, epochs_per_stage=1, final_epochs=0, verbose=0)
    assert [r["phase"] for r in records] == ["LIT"]
    history = records[0]["history"]
    assert {"loss", "student_loss", "distillation_loss", "accuracy"} <= set(history)
    assert history["distillation_loss"][0] > 0


def test_schedule_is_printed(capsys):
    distiller = ProgressiveDistiller(tiny(binary=True), tiny(), "I", trainable="active", run_eagerly=True)
    distiller._log(distiller.schedule()[1])
    line = capsys.readouterr().out
    assert "stage 2/2" in line and "binary: stage1, stage2" in line and "trainable: stage2" in line


@pytest.mark.parametrize("method", ["I", "III"])
def test_by_default_stage_s_trains_the_thesis_sub_network_of_stages_one_to_s(method):
    """The thesis (2.2.1.1): "sub-network s" is parts 1..s, so the parts train several times."""
    distiller = ProgressiveDistiller(tiny(binary=True, stages=3), tiny(stages=3), method, verbose=False)
    trainable = [phase["trainable"] for phase in distiller.schedule()[:-1]]
    assert trainable == [["stage1"], ["stage1", "stage2"], ["stage1", "stage2", "stage3"]]


def test_student_starts_as_a_copy_of_the_zoo_teacher():
    teacher = resnet20((8, 8, 1), 10)
    student = resnet20((8, 8, 1), 10, bits=1, binary="xnorpp", block="double_relu")
    ProgressiveDistiller(student, teacher, "I", verbose=False)
    for name in ("stem_conv", "stage2_block1_conv1", "stage3_block3_bn2", "logits"):
        for a, b in zip(teacher.get_layer(name).weights, student.get_layer(name).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_copy_matching_weights_needs_shared_names():
    other = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(name="x")])
    with pytest.raises(ValueError, match="No weight"):
        copy_matching_weights(tiny(), other)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="IV"), "Unknown method"),
        (dict(feature_weight=1.5), "feature_weight"),
        (dict(kd_label_fraction=-0.1), "kd_label_fraction"),
        (dict(temperature=0), "temperature"),
        (dict(trainable="all"), "trainable"),
        (dict(final_loss="mse"), "final_loss"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ProgressiveDistiller(tiny(binary=True), tiny(), **kwargs)


def test_mismatched_parts_raise():
    with pytest.raises(ValueError, match="parts"):
        ProgressiveDistiller(tiny(binary=True, stages=3), tiny())
