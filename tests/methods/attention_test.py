"""`at`, the method written as a plug-in: one module, Keras' own Distiller, kerasbnn's losses."""

import csv
import json

import keras
import numpy as np
import pytest

from kerasbnn import cli, methods
from kerasbnn.distill import AttentionTransfer, LogitsDistillation

TINY = ["distill.feature_weight=0.2", "data.train_limit=256", "data.val_limit=128", "data.batch_size=64", "teachers.bits=[32]",
        "teachers.epochs=1", "student.epochs=1", "model.arch=resnet20", "model.block=basic"]


def test_at_is_registered_with_its_teacher_options_and_keys():
    assert "at" in methods.METHODS
    assert methods.needs_teachers("at") == (32,)
    assert methods.option_keys("at") == {"feature_weight", "p"}
    assert {"distill.at", "distill.options"} <= set(methods.config_keys("at"))


def test_attention_transfer_taps_layers_inside_keras_distiller():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stage1_out")(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    teacher = keras.Model(inputs, outputs)
    student = keras.models.clone_model(teacher)
    loss = AttentionTransfer(teacher_layer_name="stage1_out", student_layer_name="stage1_out")
    distiller = keras.distillation.Distiller(
        teacher=teacher, student=student, distillation_losses=[loss, LogitsDistillation()],
        distillation_loss_weights=[10.0, 1.0], student_loss_weight=0.5)
    distiller.compile("sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    y = np.array([0, 1, 2, 0])
    logs = distiller.evaluate(x, y, verbose=0, return_dict=True)
    tap = keras.Model(teacher.inputs[0], teacher.get_layer("stage1_out").output)
    s_tap = keras.Model(student.inputs[0], student.get_layer("stage1_out").output)
    attention = float(loss.compute_loss(tap(x), s_tap(x)))
    kl = float(LogitsDistillation().compute_loss(teacher(x), student(x)))
    assert attention > 0
    assert logs["distillation_loss"] == pytest.approx(10.0 * attention + kl, rel=1e-4)
    restored = AttentionTransfer.from_config(loss.get_config())
    assert restored.teacher_layer_name == "stage1_out" and restored.p == 2


@pytest.mark.slow
def test_distill_at_trains_the_student_and_logs_the_attention_terms(tmp_path, capsys):
    args = ["distill", "--config", "examples/configs/demo.yaml", "--method", "at",
            "--set", f"run_dir={tmp_path}", *[a for item in TINY for a in ("--set", item)],
            "--set", "distill.at={feature_weight: 50}"]
    assert cli.main(args) == cli.EXIT_OK, capsys.readouterr().err
    result = json.loads((tmp_path / "results" / "student_at.json").read_text())
    assert result["method"] == "at" and result["feature_weight"] == 50
    assert result["feature_taps"] == ["stage1_out", "stage2_out", "stage3_out"]
    with open(tmp_path / "logs" / "student_at.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["distillation_loss"]) > 0
    keras.models.load_model(tmp_path / "students" / "at.keras")
