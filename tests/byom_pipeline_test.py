"""`kerasbnn pipeline` on a user's own model file (`model.arch: path/to/model.keras`): its
teachers and student are the file's model and its `binarize` twins."""

import json
import os

import keras
import pytest

from kerasbnn import cli
from kerasbnn.layers import QuantConv2D

TINY = ["distill.feature_weight=0.2", "data.train_limit=256", "data.val_limit=128", "data.batch_size=64",
        "teachers.bits=[32, 2]", "teachers.epochs=1", "teachers.float_epochs=1",
        "student.epochs=1", "benchmark.runs=2", "distill.compare=[none, mad]",
        "model.width_multiplier=1.0", "model.block=null"]  # a file has neither


def users_cnn(path, *, shape=(28, 28, 1), classes=10, taps=True, activation=None):
    """A small functional CNN for Fashion-MNIST, saved at `path`; with `taps`, the ends of its
    two stages are named `stage1_out` and `stage2_out` (MAD's feature taps)."""
    x = keras.Input(shape)
    y = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(x)
    y = keras.layers.BatchNormalization(name="stem_bn")(y)
    y = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(y)
    y = keras.layers.BatchNormalization(name="bn1")(y)
    y = keras.layers.Identity(name="stage1_out" if taps else "end1")(y)
    y = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="conv2")(y)
    y = keras.layers.BatchNormalization(name="bn2")(y)
    y = keras.layers.Identity(name="stage2_out" if taps else "end2")(y)
    y = keras.layers.GlobalAveragePooling2D(name="pool")(y)
    y = keras.layers.Dense(classes, activation=activation, name="logits")(y)
    keras.Model(x, y, name="users_cnn").save(path)
    return str(path)


def _pipeline(tmp_path, *settings):
    args = ["pipeline", "--config", "examples/configs/demo.yaml",
            "--set", f"run_dir={tmp_path / 'run'}"]
    return cli.main(args + [a for item in (*TINY, *settings) for a in ("--set", item)])


def test_the_pipeline_trains_distils_and_converts_a_users_model_file(tmp_path, capsys):
    path = users_cnn(tmp_path / "mine.keras")
    assert _pipeline(tmp_path, f"model.arch={path}") == 0, capsys.readouterr().err
    run = tmp_path / "run"
    for method in ("none", "mad"):
        result = json.loads((run / "results" / f"student_{method}.json").read_text())
        assert 0.0 <= result["accuracy"] <= 1.0
        student = keras.saving.load_model(run / "students" / f"{method}.keras")
        binary = {layer.name for layer in student.layers if isinstance(layer, QuantConv2D)}
        assert binary == {"conv1", "conv2"}  # the stem and the classifier stay float
        converted = json.loads((run / "results" / f"convert_{method}.json").read_text())
        assert converted["bconv_ops"] == 2 and converted["binarization_ok"], converted
    teacher = keras.saving.load_model(run / "teachers" / "w2a2.keras")
    assert {layer.name for layer in teacher.layers if isinstance(layer, QuantConv2D)} == {
        "conv1", "conv2"}


@pytest.mark.parametrize("make, settings, message", [
    (lambda p: str(p / "absent.keras"), [], "no such file"),
    (lambda p: users_cnn(p / "m.keras", activation="softmax"), [],
     "ends with a 'softmax' activation"),
    (lambda p: users_cnn(p / "m.keras", shape=(32, 32, 3)), [],
     "takes inputs of shape (32, 32, 3), the dataset's images are (28, 28, 1)"),
    (lambda p: users_cnn(p / "m.keras", classes=5), [], "has 5 outputs, the dataset 10 classes"),
    (lambda p: users_cnn(p / "m.keras", taps=False), ["distill.feature_weight=0.2"],
     "has no layers named stage1_out"),
    (lambda p: users_cnn(p / "m.keras"), ["model.width_multiplier=0.5"],
     "has no quantizer/binary/width_multiplier options"),
])
def test_a_bad_model_file_is_refused_before_anything_is_written(tmp_path, capsys, make,
                                                                settings, message):
    path = make(tmp_path)
    status = _pipeline(tmp_path, f"model.arch={path}", *settings)
    err = capsys.readouterr().err
    assert status == cli.EXIT_CONFIG, err
    assert message in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.slow
def test_a_model_file_without_taps_distils_logits_only(tmp_path, capsys):
    path = users_cnn(tmp_path / "m.keras", taps=False)
    assert _pipeline(tmp_path, f"model.arch={path}", "distill.feature_weight=0",
                     "distill.compare=[mad]") == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "students" / "mad.keras").exists()
