"""reactnet_two_step: float-weight step, then binary step initialised from it."""

import keras
import numpy as np
import pytest

from kerasbnn.distill import reactnet_two_step
from kerasbnn.distill.schedules import float_weight_copy


def test_float_weight_copy_drops_weight_quantizers_only(make_model):
    student = make_model("student", binary=True)
    copy = float_weight_copy(student)
    layer = copy.get_layer("conv2")
    assert layer.kernel_quantizer is None and layer.input_quantizer is not None
    for a, b in zip(copy.get_weights(), student.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_two_steps_train_the_student_from_the_float_weight_step(make_model, toy_data):
    x, y = toy_data
    student = make_model("student", binary=True, widths=(4, 4))
    before = student.get_layer("conv2").get_weights()[0].copy()
    teachers = [make_model("t0", seed=1), make_model("t1", seed=2)]
    trained, histories = reactnet_two_step(
        student,
        teachers,
        x,
        y,
        epochs=(1, 1),
        batch_size=8,
        verbose=0,
        feature_taps=None,
        ce_weight=0.0,
        compile_kwargs={"run_eagerly": True},
        optimizer=lambda step: keras.optimizers.Adam(1e-2 if step == 1 else 1e-3),
    )
    assert trained is student and len(histories) == 2
    assert all(h.history["student_loss"][0] > 0 for h in histories)
    assert not np.allclose(student.get_layer("conv2").get_weights()[0], before)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": (1,)}, "two non-negative integers"),
        ({"optimizer": keras.optimizers.Adam()}, "callable step"),
    ],
)
def test_bad_arguments(make_model, toy_data, kwargs, match):
    x, y = toy_data
    with pytest.raises(ValueError, match=match):
        reactnet_two_step(make_model("s", binary=True), [make_model("t")], x, y, **kwargs)


class OwnWeights(keras.callbacks.Callback):
    """Records the distiller's own weights when each `fit` begins and ends."""

    def __init__(self):
        super().__init__()
        self.begin, self.end = [], []

    def _record(self, into):
        into.append([keras.ops.convert_to_numpy(w).copy() for w in self.model.own_weights()])

    def on_train_begin(self, logs=None):
        self._record(self.begin)

    def on_train_end(self, logs=None):
        self._record(self.end)


def test_step_two_starts_from_the_fusion_and_adapters_step_one_learned(make_model, toy_data):
    x, y = toy_data
    teachers = [make_model("t0", seed=1), make_model("t1", seed=2)]
    recorder = OwnWeights()
    reactnet_two_step(make_model("student", binary=True), teachers, x, y, epochs=(1, 1),
                      batch_size=8, verbose=0, feature_taps=["stage1_out", "stage2_out"],
                      callbacks=[recorder], compile_kwargs={"run_eagerly": True},
                      optimizer=lambda step: keras.optimizers.Adam(0.05))
    (begin1, begin2), (end1, _) = recorder.begin, recorder.end
    assert len(end1) == 7  # theta of the logits and the 2 taps, 2 adapters' kernel and bias
    assert all(not np.array_equal(a, b) for a, b in zip(begin1, end1))  # step 1 learned them
    for a, b in zip(end1, begin2):
        np.testing.assert_array_equal(a, b)


def test_own_weights_are_the_methods_alone(make_model):
    from kerasbnn.distill import LogitsDistillation, MultiTeacherDistiller, TermsDistiller

    teachers = [make_model("t0", seed=1), make_model("t1", seed=2)]
    mad = MultiTeacherDistiller(make_model("s", binary=True), teachers, feature_taps=["stage2_out"])
    assert [w.path for w in mad.own_weights()] == [
        "fusion_logits/theta", "fusion_stage2_out/theta", "adapter_stage2_out/kernel",
        "adapter_stage2_out/bias"]
    terms = TermsDistiller(make_model("s2", binary=True), make_model("t2"),
                           {"kl_loss": (LogitsDistillation(2.0), 1.0)})
    assert terms.own_weights() == []
    other = MultiTeacherDistiller(make_model("s3", binary=True), teachers, feature_taps=None)
    with pytest.raises(ValueError, match=r"same method, feature taps and teachers"):
        other.set_own_weights([keras.ops.convert_to_numpy(w) for w in mad.own_weights()])
