"""Our DistillationLoss subclasses against NumPy, and inside keras.distillation.Distiller."""

import json

import keras
import numpy as np
import pytest

from kerasbnn.distill import FeatureDistillation, LogitsDistillation
from kerasbnn.distill.losses import kl_divergence_with_logits, smooth_l1

TEACHER = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]], "float32")
STUDENT = np.array([[1.0, 1.0, 0.0], [-2.0, 0.5, 2.5]], "float32")


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_kl(t, s, temperature):
    p, q = np_softmax(t / temperature), np_softmax(s / temperature)
    return (p * (np.log(p) - np.log(q))).sum(-1)


def np_smooth_l1(x):
    return np.where(np.abs(x) < 1, 0.5 * x**2, np.abs(x) - 0.5)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("squared", [False, True])
def test_logits_distillation_matches_numpy(temperature, squared):
    loss = LogitsDistillation(temperature, scale_by_temperature_squared=squared)
    expected = np_kl(TEACHER, STUDENT, temperature).mean() * (temperature**2 if squared else 1.0)
    got = float(loss.compute_loss(TEACHER, STUDENT))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_logits_distillation_sample_weight_and_golden_value():
    weights = np.array([1.0, 0.0], "float32")
    got = float(LogitsDistillation().compute_loss(TEACHER, STUDENT, sample_weight=weights))
    np.testing.assert_allclose(got, np_kl(TEACHER, STUDENT, 1.0)[0] / 2, rtol=1e-5)
    # Golden value at T = 1 (float64 NumPy), pinned against silent drift.
    np.testing.assert_allclose(
        float(LogitsDistillation().compute_loss(TEACHER, STUDENT)), 0.8842781, rtol=1e-5
    )


def test_kl_is_zero_for_equal_logits_and_stable_for_huge_logits():
    np.testing.assert_allclose(kl_divergence_with_logits(TEACHER, TEACHER), [0.0, 0.0], atol=1e-6)
    huge = TEACHER * 1e4
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(kl_divergence_with_logits(huge, STUDENT))))


def test_smooth_l1_matches_numpy():
    x = np.array([-3.0, -1.0, -0.5, 0.0, 0.25, 0.999, 1.0, 4.0], "float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(smooth_l1(x)), np_smooth_l1(x), rtol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_feature_distillation_matches_numpy(reduction, rng):
    t = rng.normal(size=(3, 4, 4, 2)).astype("float32") * 2
    s = rng.normal(size=(3, 4, 4, 2)).astype("float32")
    per_element = np_smooth_l1(t - s)
    per_example = per_element.reshape(3, -1)
    expected = (per_example.mean(1) if reduction == "mean" else per_example.sum(1)).mean()
    got = float(FeatureDistillation(reduction=reduction).compute_loss(t, s))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    w = np.array([0.5, 1.0, 0.0], "float32")
    weighted = float(FeatureDistillation(reduction=reduction).compute_loss(t, s, sample_weight=w))
    per = per_example.mean(1) if reduction == "mean" else per_example.sum(1)
    np.testing.assert_allclose(weighted, (per * w).mean(), rtol=1e-5)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: LogitsDistillation(temperature=0), "temperature must be greater than 0"),
        (lambda: LogitsDistillation(temperature=float("nan")), "finite number"),
        (lambda: LogitsDistillation(temperature="3"), "finite number"),
        (lambda: FeatureDistillation(reduction="batchmean"), "Unknown reduction"),
    ],
)
def test_bad_hyper_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_validate_outputs_rejects_mismatches():
    with pytest.raises(ValueError, match="different class counts"):
        LogitsDistillation().validate_outputs(TEACHER, STUDENT[:, :2])
    with pytest.raises(ValueError, match="equal feature shapes"):
        FeatureDistillation().validate_outputs(np.zeros((2, 4, 4, 3)), np.zeros((2, 4, 4, 2)))


@pytest.mark.parametrize(
    "loss",
    [
        LogitsDistillation(temperature=2.0, scale_by_temperature_squared=True),
        FeatureDistillation("stage1_out", "stage2_out", reduction="sum"),
    ],
)
def test_config_round_trip(loss):
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(loss)))
    assert config["registered_name"] == f"kerasbnn>{type(loss).__name__}"
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(loss) and restored.get_config() == loss.get_config()


def test_plugs_into_keras_distiller(make_model, toy_data):
    x, y = toy_data
    teacher = make_model("teacher", widths=(4, 6), seed=1)
    student = make_model("student", binary=True, widths=(4, 6))
    distiller = keras.distillation.Distiller(
        teacher,
        student,
        distillation_losses=[
            LogitsDistillation(temperature=2.0),
            FeatureDistillation("stage2_out", "stage2_out"),
        ],
        distillation_loss_weights=[1.0, 0.2],
    )
    distiller.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        run_eagerly=True,
    )
    history = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert {"loss", "student_loss", "distillation_loss", "total_loss", "accuracy"} <= set(
        history.history
    )
    assert all(np.isfinite(v).all() for v in history.history.values())
    assert history.history["distillation_loss"][-1] > 0


def test_keras_distiller_rejects_bad_feature_taps(make_model):
    teacher = make_model("teacher", widths=(4, 8), seed=1)
    student = make_model("student", widths=(4, 6))
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        keras.distillation.Distiller(teacher, student, FeatureDistillation("nope", "stage1_out"))
    with pytest.raises(ValueError, match="equal shape"):
        keras.distillation.Distiller(
            teacher, student, FeatureDistillation("stage2_out", "stage2_out")
        )
    with pytest.raises(ValueError, match="ends with a softmax"):
        keras.distillation.Distiller(make_model("t", softmax=True), student, LogitsDistillation())
