"""`TermsDistiller`: Keras-style declared taps under the base's rule, checked against NumPy."""

import keras
import numpy as np
import pytest

from kerasbnn.distill import AttentionTransfer, LogitsDistillation, TermsDistiller


def _np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_attention(a, p=2):
    q = (np.abs(a) ** p).mean(-1).reshape(len(a), -1)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _distiller(tiny_model, seed):
    student = tiny_model("student", binary=True, seed=seed)
    teacher = tiny_model("teacher", seed=seed + 1)
    losses = {"attention_loss": (AttentionTransfer(teacher_layer_name="stage2_out",
                                                   student_layer_name="stage2_out"), 7.0),
              "kl_loss": (LogitsDistillation(2.0), 0.5)}
    return TermsDistiller(student, teacher, losses, ce_weight=0.25), student, teacher


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_terms_and_loss_match_numpy(make_model, seed):
    distiller, student, teacher = _distiller(make_model, seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(6, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 5, size=(6,))
    distiller.compile("sgd")
    logs = distiller.evaluate(x, y, batch_size=6, verbose=0, return_dict=True)
    s_logits = keras.ops.convert_to_numpy(student(x, training=False))
    t_logits = keras.ops.convert_to_numpy(teacher(x, training=False))
    tap = lambda m: keras.Model(m.inputs[0], m.get_layer("stage2_out").output)(x)  # noqa: E731
    attention = np.mean((_np_attention(np.asarray(tap(teacher)))
                         - _np_attention(np.asarray(tap(student)))) ** 2)
    p, q = _np_softmax(t_logits / 2.0), _np_softmax(s_logits / 2.0)
    kl = (p * (np.log(p) - np.log(q))).sum(-1).mean()
    ce = -np.log(_np_softmax(s_logits)[np.arange(6), y]).mean()
    np.testing.assert_allclose(
        [logs["attention_loss"], logs["kl_loss"], logs["student_loss"]], [attention, kl, ce],
        rtol=1e-4)
    np.testing.assert_allclose(logs["loss"], 0.25 * ce + 7.0 * attention + 0.5 * kl, rtol=1e-4)
    assert distiller.student_taps == ["stage2_out"]


def test_round_trips_through_its_config(make_model):
    distiller, _, _ = _distiller(make_model, 0)
    restored = TermsDistiller.from_config(distiller.get_config())
    assert restored.term_weights == distiller.term_weights
    assert isinstance(restored.term_losses["attention_loss"], AttentionTransfer)
    assert restored.term_losses["kl_loss"].temperature == 2.0


def test_a_tap_on_one_model_only_is_refused(make_model):
    tiny_model = make_model
    loss = AttentionTransfer(student_layer_name="stage2_out")
    with pytest.raises(ValueError, match="names a layer of one model only"):
        TermsDistiller(tiny_model("s"), tiny_model("t", seed=1), {"a": (loss, 1.0)})
    with pytest.raises(ValueError, match="weight must be at least 0"):
        TermsDistiller(tiny_model("s"), tiny_model("t", seed=1),
                       {"kl_loss": (LogitsDistillation(), -1.0)})
