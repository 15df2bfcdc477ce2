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
