"""Larq model files: checked here, read by the child process, loaded back as JSON + arrays.

What can be checked without TensorFlow is checked before the child starts (a TensorFlow
import costs seconds): that the path exists, that it is an HDF5 file with a model config,
a legacy `.keras` archive or a SavedModel folder with Keras metadata, and that larq is
installed. The child (`_child.py`) then loads each file under the legacy Keras 2.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from kerasbnn.larq_import import _child
from kerasbnn.larq_import.errors import LarqImportError

_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_child.py")
# As kerasbnn.export.converter runs its worker: a file, with the caller's folder off sys.path,
# so the child imports neither kerasbnn nor Keras 3.
_BOOTSTRAP = (
    "import sys, runpy; del sys.path[0]; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"
_LOG_LINE = re.compile(r"^(WARNING: All log messages before absl|[WIE]\d{4} \d\d:\d\d:\d\d)")
_DAMAGED = r"truncat|corrupt|signature|eof|unable to (synchronously )?open"
_SAVE_HINT = "save the whole larq model with model.save(path) where larq runs"


def _check_folder(path):
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise LarqImportError(
            f"{path} is a folder without saved_model.pb, so not a SavedModel; give an .h5 "
            f"file or a SavedModel folder ({_SAVE_HINT})."
        )
    if not os.path.isfile(os.path.join(path, "keras_metadata.pb")):
        raise LarqImportError(
            f"{path} is a SavedModel without keras_metadata.pb (written by tf.saved_model.save "
            f"or Keras 3's model.export): it holds no layer configs to import; {_SAVE_HINT}."
        )


def _check_hdf5(path):
    import h5py

    try:
        with h5py.File(path, "r") as f:
            has_config = "model_config" in f.attrs
    except OSError as error:
        raise LarqImportError(
            f"{path} cannot be opened as HDF5; it is truncated or corrupt ({error})."
        ) from None
    if not has_config:
        raise LarqImportError(
            f"{path} is an HDF5 file without a model config (weights only, from save_weights?): "
            "there are no layers to rebuild. Load the weights into the larq model and "
            f"{_SAVE_HINT}."
        )


def _check_archive(path):
    try:
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read("metadata.json"))
            archive.getinfo("config.json")
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise LarqImportError(
            f"{path} is a damaged .keras archive or not a Keras one ({error})."
        ) from None
    if str(metadata.get("keras_version", "")).startswith("3"):
        raise LarqImportError(
            f"{path} was saved by Keras {metadata['keras_version']}: it is already a Keras 3 "
            "model; load it with keras.saving.load_model, no import is needed."
        )


def check_source(path):
    """Checks, without TensorFlow, that `path` can hold a legacy Keras (larq) model.

    Returns:
        The absolute path.

    Raises:
        LarqImportError: missing path, truncated or weights-only HDF5 file, Keras 3 archive,
            SavedModel without Keras metadata, or a file of another kind.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise LarqImportError(f"{path} does not exist.")
    if os.path.isdir(path):
        _check_folder(path)
        return path
    with open(path, "rb") as f:
        head = f.read(8)
    if head == _HDF5_SIGNATURE:
        _check_hdf5(path)
    elif head.startswith(_ZIP_SIGNATURE):
        _check_archive(path)
    else:
        raise LarqImportError(
            f"{path} is neither an HDF5 file, a .keras archive nor a SavedModel folder "
            f"(it starts with {head!r}); {_SAVE_HINT}."
        )
    return path


def _check_larq_installed():
    if importlib.util.find_spec("larq") is None:
        raise LarqImportError(
            "reading larq models needs larq 0.14 and the legacy Keras 2 package in this "
            "environment: pip install 'kerasbnn[larq]'."
        )


def _stderr_tail(stderr, lines=12):
    kept = [line for line in stderr.splitlines() if line.strip() and not _LOG_LINE.match(line)]
    return "\n".join(kept[-lines:])


def run_child(sources, output_dir, timeout=None):
    """Runs `_child.py` on `sources`, writing one result folder per source into `output_dir`."""
    _check_larq_installed()
    env = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}
    env["TF_USE_LEGACY_KERAS"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    options = json.dumps({"sources": [os.fspath(s) for s in sources], "output_dir": output_dir})
    try:
        result = subprocess.run(
            [sys.executable, "-c", _BOOTSTRAP, _CHILD, options],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise LarqImportError(f"reading the larq model took longer than {timeout} s.") from None
    if result.returncode != 0:
        tail = _stderr_tail(result.stderr)
        hint = ""
        if "ModuleNotFoundError" in tail or "ImportError" in tail:
            hint = "\nInstall larq 0.14 and the legacy Keras 2: pip install 'kerasbnn[larq]'."
        raise LarqImportError(
            f"the larq reader process failed (exit status {result.returncode}):\n{tail}{hint}"
        )


def _child_error(directory, source):
    with open(os.path.join(directory, _child.ERROR_FILE)) as f:
        error = json.load(f)
    message = error["message"]
    unknown = re.search(r"Unknown (\w+): '?([\w.]+)'?", message)
    if unknown:
        return LarqImportError(
            f"{source}: the model uses the {unknown.group(1)} {unknown.group(2)!r}, which is "
            "neither larq's nor Keras's, so the HDF5 file cannot be loaded without its code. "
            "Save the model as a SavedModel folder (model.save('folder')), which loads without "
            "it, or call kerasbnn.from_larq(model) in the process that defines it."
        )
    damaged = re.search(_DAMAGED, message, re.I)
    return LarqImportError(
        f"{source} could not be loaded by larq 0.14 under the legacy Keras 2 "
        f"({error['type']}: {message})"
        + ("; the file is truncated or corrupt." if damaged else ".")
    )


def load_result(directory, source):
    """`(description, arrays)` written by the child, or the `LarqImportError` it reported."""
    if os.path.exists(os.path.join(directory, _child.ERROR_FILE)):
        raise _child_error(directory, source)
    try:
        with open(os.path.join(directory, _child.DESCRIPTION_FILE)) as f:
            description = json.load(f)
        with np.load(os.path.join(directory, _child.WEIGHTS_FILE), allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as error:
        raise LarqImportError(
            f"the reader wrote no usable result for {source} ({error})."
        ) from None
    if description.get("format") != _child.FORMAT or description.get("version") != _child.VERSION:
        raise LarqImportError(
            f"{directory} holds a description of format {description.get('format')!r} version "
            f"{description.get('version')!r}; this kerasbnn reads {_child.FORMAT!r} version "
            f"{_child.VERSION}."
        )
    return description, arrays


def read(sources, *, timeout=None):
    """Reads larq model files in one child process.

    Args:
        sources: paths of `.h5` files, legacy `.keras` archives or SavedModel folders.
        timeout: seconds allowed to the child, or None.

    Returns:
        A list of `(description, arrays)`, one per source, in order.

    Raises:
        LarqImportError: for the first source that fails its checks or cannot be loaded.
    """
    sources = [check_source(source) for source in sources]
    with tempfile.TemporaryDirectory(prefix="kerasbnn_larq_") as tmp:
        run_child(sources, tmp, timeout=timeout)
        return [load_result(os.path.join(tmp, str(i)), s) for i, s in enumerate(sources)]
