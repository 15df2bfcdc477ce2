"""larq models imported into Keras 3 compute what larq computes, with the same weights.

One larq subprocess (tests/larq_oracle.py running larq_models.py) builds and saves the test
models, records larq's outputs in inference and training mode, and describes every file
with `_child.read_sources`, the function the importer's own child process runs. Two more
tests go through that child process end to end: `from_larq` on a file and the CLI.
"""

import importlib.util
from pathlib import Path

import keras
import numpy as np
import pytest

import kerasbnn
from kerasbnn import cli, larq_import
from kerasbnn.larq_import import files
from kerasbnn.layers import LearnableBias, QuantConv2D, QuantDense, QuantDepthwiseConv2D

pytestmark = pytest.mark.larq

TESTS_DIR = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("larq_oracle", TESTS_DIR / "larq_oracle.py")
oracle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(oracle)

CHILD = Path(larq_import.__file__).with_name("_child.py")
ATOL = 1e-5  # relative to max(1, max|y|): QuickNet's random-weight logits reach ~130
# Models compared in training mode too (the coverage model holds a Dropout).
MATCHING = ["binary_cnn", "bireal", "quicknet", "reactnet", "coverage", "float_model"]
TRAINING = ["binary_cnn", "bireal", "quicknet", "reactnet", "float_model"]


@pytest.fixture(scope="module")
def larq_run(tmp_path_factory):
    if not oracle.available():
        pytest.skip("larq and tf-keras are not installed (pip install -e '.[larq]')")
    workdir = tmp_path_factory.mktemp("larq_models")
    root = Path(kerasbnn.__file__).resolve().parents[1]
    preamble = (
        f"WORKDIR = {str(workdir)!r}\nCHILD = {str(CHILD)!r}\nKERASBNN_ROOT = {str(root)!r}\n"
        "BATCH = 4\n"
    )
    script = preamble + (Path(__file__).with_name("larq_models.py")).read_text()
    reference = oracle.run(script, {}, workdir)
    results = {}
    for i, name in enumerate(reference["reader/names"]):
        try:
            results[str(name)] = files.load_result(str(workdir / "reader" / str(i)), name)
        except larq_import.LarqImportError as error:
            results[str(name)] = error
    return workdir, reference, results


def _import(larq_run, name):
    result = larq_run[2][name]
    if isinstance(result, Exception):
        raise result
    description, arrays = result
    return larq_import.build(description, arrays, allow_float=name == "float_model")


def _check_outputs(model, reference, name, mode):
    """Outputs and logits (the softmax's input) equal larq's within ATOL * max(1, max|y|)."""
    x = reference[f"{name}/x"]
    logits = keras.Model(model.inputs[0], model.layers[-2].output)
    for key, net in ((f"{name}/{mode}", model), (f"{name}/{mode}_logits", logits)):
        y = keras.ops.convert_to_numpy(net(x, training=mode == "training"))
        expected = reference[key]
        assert y.shape == expected.shape, key
        error = float(np.max(np.abs(y - expected)))
        assert error <= ATOL * max(1.0, float(np.max(np.abs(expected)))), (key, error)


@pytest.mark.parametrize("name", MATCHING)
def test_inference_outputs_match_larq(larq_run, name):
    _check_outputs(_import(larq_run, name), larq_run[1], name, "inference")


@pytest.mark.parametrize("name", TRAINING)
def test_training_outputs_match_larq(larq_run, name):
    _check_outputs(_import(larq_run, name), larq_run[1], name, "training")


@pytest.mark.parametrize("name", MATCHING)
def test_weights_are_larqs(larq_run, name):
    reference = larq_run[1]
    model = _import(larq_run, name)
    compared = 0
    for layer in model.layers:
        for j, value in enumerate(layer.get_weights()):
            np.testing.assert_array_equal(value, reference[f"{name}/weights/{layer.name}/{j}"])
            compared += 1
    assert compared == sum(key.startswith(f"{name}/weights/") for key in reference)


def test_layers_quantizers_and_constraints_are_kerasbnns(larq_run):
    quicknet = _import(larq_run, "quicknet")
    binary = [
        layer for layer in quicknet.layers if isinstance(layer, QuantConv2D) and layer.is_binary
    ]
    assert len(binary) == 2
    for layer in binary:
        assert layer.input_quantizer == kerasbnn.quantizers.SteSign(clip_value=1.25)
        assert layer.kernel_constraint.clip_value == 1.25 and layer.pad_values == 1.0
    assert isinstance(quicknet.layers[-2], QuantDense)
    blur = [layer for layer in quicknet.layers if type(layer) is keras.layers.DepthwiseConv2D]
    assert len(blur) == 1 and not blur[0].trainable
    bireal = _import(larq_run, "bireal")
    conv = [layer for layer in bireal.layers if isinstance(layer, QuantConv2D)]
    assert {type(layer.input_quantizer).__name__ for layer in conv} == {"ApproxSign"}
    assert {type(layer.kernel_quantizer).__name__ for layer in conv} == {"MagnitudeAwareSign"}
    reactnet = _import(larq_run, "reactnet")
    assert sum(isinstance(layer, LearnableBias) for layer in reactnet.layers) == 6
    cnn = _import(larq_run, "binary_cnn")
    assert isinstance(cnn, keras.Sequential) and cnn.name == "binary_cnn"
    assert any(isinstance(layer, QuantDepthwiseConv2D) for layer in cnn.layers)


def test_coverage_model_reads_every_quantizer(larq_run):
    model = _import(larq_run, "coverage")
    quantizers = {
        repr(getattr(layer, f"{role}_quantizer"))
        for layer in model.layers
        for role in ("input", "kernel", "depthwise")
        if getattr(layer, f"{role}_quantizer", None) is not None
    }
    assert quantizers == {
        "SteSign(clip_value=None)",
        "SwishSign(beta=3.0)",
        "SteHeaviside(clip_value=1.0)",
        "SteTern(threshold_value=0.1, ternary_weight_networks=False, clip_value=1.0)",
        "SteTern(threshold_value=0.05, ternary_weight_networks=True, clip_value=1.0)",
        "DoReFa(k_bit=3, mode='activations')",
        "DoReFa(k_bit=2, mode='weights')",
        "ApproxSign()",
        "NoOp(precision=8)",
        "MagnitudeAwareSign(clip_value=1.5)",
    }
    types = {type(layer).__name__ for layer in model.layers}
    assert {"Rescaling", "Subtract", "Multiply", "LeakyReLU", "ZeroPadding2D"} <= types


@pytest.mark.parametrize("name", ["binary_cnn", "bireal", "quicknet", "reactnet", "coverage"])
def test_saves_and_loads_as_keras_with_safe_mode(larq_run, name, tmp_path):
    reference = larq_run[1]
    model = _import(larq_run, name)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = reference[f"{name}/x"]
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


def test_imported_model_trains(larq_run):
    model = _import(larq_run, "quicknet")
    reference = larq_run[1]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    before = [np.array(w) for w in model.trainable_weights]
    loss = model.train_on_batch(reference["quicknet/x"], np.arange(4) % 10)
    assert np.isfinite(loss)
    after = [np.array(w) for w in model.trainable_weights]
    assert all(not np.array_equal(new, old) for new, old in zip(after, before))
    clip = max(float(np.max(np.abs(np.array(layer.kernel)))) for layer in model.layers
               if isinstance(layer, QuantConv2D) and layer.is_binary)
    assert clip <= 1.25  # WeightClip(1.25) applied by the optimizer


def test_plain_keras_model_needs_allow_float(larq_run):
    description, arrays = larq_run[2]["float_model"]
    with pytest.raises(larq_import.LarqImportError, match="has no larq layer.*allow_float=True"):
        larq_import.build(description, arrays)


def test_unsupported_layers_are_each_named(larq_run):
    description, arrays = larq_run[2]["unsupported"]
    with pytest.raises(larq_import.LarqImportError) as info:
        larq_import.build(description, arrays)
    message = str(info.value)
    assert "4 layer(s) cannot be imported" in message
    assert "'quant_separable_conv2d' (QuantSeparableConv2D) is larq's" in message
    assert "leaky_tanh" in message and "DoReFa(k_bit=1, mode='weights')" in message
    assert "'learnable_scale' (LearnableScale)" in message
    assert "larq's QuantConv2D, QuantDense, QuantDepthwiseConv2D" in message
    assert len(info.value.problems) == 4


def test_user_class_in_hdf5_asks_for_a_saved_model(larq_run):
    error = larq_run[2]["reactnet_h5"]
    assert isinstance(error, larq_import.LarqImportError)
    assert "'LearnableBias'" in str(error) and "SavedModel" in str(error)


def test_from_larq_reads_a_file_in_a_child_process(larq_run):
    workdir, reference, _ = larq_run
    # The child has no blurpool_initializer of its own: it loads through the importer's.
    model = kerasbnn.from_larq(workdir / "quicknet.h5")
    _check_outputs(model, reference, "quicknet", "inference")


def test_from_larq_reads_a_model_object_where_larq_runs(larq_run):
    reference = larq_run[1]
    error = np.max(np.abs(reference["in_memory/kerasbnn"] - reference["in_memory/larq"]))
    assert error <= ATOL * max(1.0, float(np.max(np.abs(reference["in_memory/larq"]))))


def test_cli_writes_a_keras_file(larq_run, tmp_path, capsys):
    workdir, reference, _ = larq_run
    out = tmp_path / "bireal.keras"
    assert cli.main(["import-larq", str(workdir / "bireal_savedmodel"), str(out)]) == cli.EXIT_OK
    assert str(out) in capsys.readouterr().out
    loaded = keras.saving.load_model(out, safe_mode=True)
    _check_outputs(loaded, reference, "bireal", "inference")


def test_cli_fails_clearly_on_bad_input(larq_run, tmp_path, capsys):
    workdir = larq_run[0]
    out = tmp_path / "m.keras"
    status = cli.main(["import-larq", str(workdir / "weights_only.h5"), str(out)])
    assert status == cli.EXIT_INPUT and not out.exists()
    assert "without a model config" in capsys.readouterr().err
    status = cli.main(["import-larq", str(workdir / "quicknet.h5"), str(tmp_path / "m.h5")])
    assert status == cli.EXIT_OUTPUT
    assert "must be a .keras file" in capsys.readouterr().err
