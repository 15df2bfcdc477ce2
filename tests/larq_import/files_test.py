"""Bad inputs are refused with a clear message before any larq process starts."""

import json

import h5py
import keras
import numpy as np
import pytest

import kerasbnn
from kerasbnn import larq_import
from kerasbnn.larq_import import _child, files


@pytest.fixture(autouse=True)
def no_child_process(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a larq child process was started for an input checked without one")

    monkeypatch.setattr(files, "run_child", refuse)


def _hdf5(path, with_config=True):
    with h5py.File(path, "w") as f:
        if with_config:
            f.attrs["model_config"] = json.dumps({"class_name": "Functional", "config": {}})
        f.create_dataset("model_weights/dense/kernel", data=np.ones((256, 256), "float32"))
    return path


def _refused(source, match):
    with pytest.raises(larq_import.LarqImportError, match=match):
        kerasbnn.from_larq(source)


def test_missing_path(tmp_path):
    _refused(tmp_path / "nope.h5", "nope.h5 does not exist")


def test_truncated_hdf5(tmp_path):
    path = _hdf5(tmp_path / "model.h5")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _refused(path, "cannot be opened as HDF5; it is truncated or corrupt")


def test_weights_only_hdf5(tmp_path):
    _refused(_hdf5(tmp_path / "weights.h5", with_config=False), "without a model config")


def test_keras3_archive(tmp_path):
    inputs = keras.Input((3,))
    path = tmp_path / "model.keras"
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(path)
    _refused(path, "already a Keras 3 model; load it with keras.saving.load_model")


def test_damaged_archive(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    _refused(path, "damaged .keras archive")


def test_file_of_another_kind(tmp_path):
    path = tmp_path / "model.txt"
    path.write_text("a larq model, honest")
    _refused(path, "neither an HDF5 file, a .keras archive nor a SavedModel folder")


def test_folder_without_saved_model(tmp_path):
    _refused(tmp_path, "without saved_model.pb")


def test_saved_model_without_keras_metadata(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"\x08\x01")
    _refused(tmp_path, "without keras_metadata.pb")


def test_keras3_model_object_and_other_values():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="k3")
    _refused(model, "'k3' is already a Keras 3 model")
    _refused(42, "takes a file path or a larq tf.keras model, received int")


def test_larq_not_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(files.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(larq_import.LarqImportError, match=r"pip install 'kerasbnn\[larq\]'"):
        files._check_larq_installed()


def test_output_must_be_a_keras_file(tmp_path):
    with pytest.raises(larq_import.LarqImportError, match="must be a .keras file"):
        larq_import.check_output(tmp_path / "model.h5")
    with pytest.raises(larq_import.LarqImportError, match="does not exist"):
        larq_import.check_output(tmp_path / "missing" / "model.keras")
    assert larq_import.check_output(tmp_path / "model.keras") == str(tmp_path / "model.keras")


def _child_result(directory, error=None, **description):
    directory.mkdir()
    if error is not None:
        (directory / _child.ERROR_FILE).write_text(json.dumps(error))
        return
    _child.write({"format": _child.FORMAT, "version": _child.VERSION, **description}, {}, directory)


def test_child_errors_become_clear_messages(tmp_path):
    unknown = {"type": "ValueError", "message": "Unknown layer: 'Foo'. Please ensure..."}
    _child_result(tmp_path / "a", unknown)
    with pytest.raises(larq_import.LarqImportError, match="the layer 'Foo'.*SavedModel folder"):
        files.load_result(str(tmp_path / "a"), "m.h5")
    truncated = {"type": "OSError", "message": "Unable to synchronously open object (truncated)"}
    _child_result(tmp_path / "b", truncated)
    with pytest.raises(larq_import.LarqImportError, match="the file is truncated or corrupt"):
        files.load_result(str(tmp_path / "b"), "m.h5")


def test_description_of_another_version(tmp_path):
    _child_result(tmp_path / "a", version=_child.VERSION + 1)
    with pytest.raises(larq_import.LarqImportError, match="this kerasbnn reads"):
        files.load_result(str(tmp_path / "a"), "m.h5")


def test_description_round_trip_without_pickle(tmp_path):
    arrays = {"layer/0/0": np.arange(6, dtype="float32").reshape(2, 3)}
    description = {"format": _child.FORMAT, "version": _child.VERSION, "layers": []}
    _child.write(description, arrays, tmp_path)
    description, loaded = files.load_result(str(tmp_path), "m.h5")
    assert description["layers"] == []
    np.testing.assert_array_equal(loaded["layer/0/0"], arrays["layer/0/0"])
