"""Reads larq models into a neutral form: one JSON description and one .npz of weights.

Run as a file in a child process (`python _child.py OPTIONS_JSON`), the way
`kerasbnn.export._worker` runs LCE's converter: larq 0.14 only imports with
`TF_USE_LEGACY_KERAS=1` set before TensorFlow loads, which a process that runs Keras 3 can
no longer do. This file therefore imports nothing from kerasbnn, and TensorFlow and larq
only inside `main`; the parent imports it for its file names and for `describe`, which
reads a model that already exists in its process through duck typing (`get_config`,
`weights`).

OPTIONS_JSON keys: `sources` (paths of .h5 files, .keras archives written by the legacy
Keras 2, or SavedModel folders) and `output_dir`. For source i the child writes
`output_dir/i/description.json` and `output_dir/i/weights.npz`, or `output_dir/i/error.json`
(`{"type": ..., "message": ...}`) when the source cannot be read. Nothing is pickled: the
description is JSON and the arrays are saved and loaded with `allow_pickle=False`.

Description keys: `format`, `version`, `source`, `larq_version`, `tensorflow_version`,
`model` (`class_name` and the model's own `get_config()`), and `layers`, one entry per
layer in `model.layers` order with `name`, `class_name`, `python_module`, `is_model` (a
nested model), `weights` (name,
shape, dtype and .npz key of each variable, in `layer.weights` order: latent weights, never
quantized ones) and `probe` (for layers that are neither larq's nor Keras's own: the .npz
keys of a random input and of the layer's output on it, so the parent can check a layer it
maps by convention; or the reason there is none).
"""

import json
import os
import sys
import traceback

import numpy as np

FORMAT = "kerasbnn-larq-description"
VERSION = 1
DESCRIPTION_FILE = "description.json"
WEIGHTS_FILE = "weights.npz"
ERROR_FILE = "error.json"
_PROBE_BATCH = 2
_PROBE_SEED = 0


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "as_list"):  # a TensorShape
        return value.as_list()
    raise TypeError(
        f"a layer config holds {type(value).__name__} {value!r}, which has no JSON form"
    )


def _is_builtin(layer):
    """True for larq's layers and the legacy Keras package's own layer classes."""
    cls = type(layer)
    if cls.__module__.startswith("larq."):
        return True
    if cls.__name__ in ("TFOpLambda", "SlicingOpLambda", "InputLayer"):
        return True
    layers_module = _legacy_layers_module(layer)
    return layers_module is not None and getattr(layers_module, cls.__name__, None) is cls


def _legacy_layers_module(layer):
    """The `layers` namespace of the Keras that defines `layer`'s base class."""
    for base in type(layer).__mro__:
        if base.__name__ == "Layer" and base.__module__.endswith("engine.base_layer"):
            root = base.__module__.split(".")[0]
            return getattr(sys.modules.get(root), "layers", None)
    return None


def _probe(layer, index, arrays):
    """Runs a layer that is not larq's or Keras's on a random input; returns the npz keys."""
    try:
        shape = layer.input_shape
    except (AttributeError, RuntimeError) as error:
        return {"error": f"no single input shape ({error})"}
    if not isinstance(shape, tuple) or any(d is None for d in shape[1:]):
        return {"error": f"input shape {shape} is not fully known"}
    rng = np.random.default_rng(_PROBE_SEED)
    x = rng.normal(size=(_PROBE_BATCH, *shape[1:])).astype("float32")
    try:
        y = np.asarray(layer(x))
    except Exception as error:  # any failure only means: no probe for this layer
        return {"error": f"calling the layer failed ({type(error).__name__}: {error})"}
    arrays[f"probe/{index}/x"], arrays[f"probe/{index}/y"] = x, y
    return {"x": f"probe/{index}/x", "y": f"probe/{index}/y"}


def _describe_layer(layer, index, arrays):
    weights = []
    for j, (variable, value) in enumerate(zip(layer.weights, layer.get_weights())):
        key = f"layer/{index}/{j}"
        arrays[key] = np.asarray(value)
        weights.append(
            {
                "name": variable.name,
                "shape": list(arrays[key].shape),
                "dtype": str(arrays[key].dtype),
                "key": key,
            }
        )
    return {
        "name": layer.name,
        "class_name": type(layer).__name__,
        "python_module": type(layer).__module__,
        "is_model": hasattr(layer, "layers"),
        "weights": weights,
        "probe": None if _is_builtin(layer) else _probe(layer, index, arrays),
    }


def describe(model, source=None):
    """The neutral description of a legacy-Keras (larq) model, and its arrays.

    Args:
        model: a built `tf.keras.Model` (Functional or Sequential) from the legacy Keras 2.
        source: where the model came from, recorded in the description.

    Returns:
        `(description, arrays)`: a JSON-ready dict and a dict of NumPy arrays.

    Raises:
        TypeError: for a model without a config (a subclassed model) or a config value
            that has no JSON form.
    """
    try:
        config = model.get_config()
    except NotImplementedError as error:
        raise TypeError(
            f"{type(model).__name__} {model.name!r} is a subclassed model without get_config(); "
            "only Functional and Sequential models describe their layers and connections."
        ) from error
    arrays = {}
    layers = [_describe_layer(layer, i, arrays) for i, layer in enumerate(model.layers)]
    description = {
        "format": FORMAT,
        "version": VERSION,
        "source": None if source is None else str(source),
        "larq_version": _version("larq"),
        "tensorflow_version": _version("tensorflow"),
        "model": {"class_name": type(model).__name__, "name": model.name, "config": config},
        "layers": layers,
    }
    return json.loads(json.dumps(description, default=_json_default)), arrays


def _version(module_name):
    module = sys.modules.get(module_name)
    return getattr(module, "__version__", None)


def write(description, arrays, directory):
    """Writes `description.json` and `weights.npz` into `directory` (created if needed)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, DESCRIPTION_FILE), "w") as f:
        json.dump(description, f)
    np.savez(os.path.join(directory, WEIGHTS_FILE), **arrays)


def _function_names(value, key=None):
    """A config in the form the legacy HDF5 loader reads back (see `load_model`)."""
    if isinstance(value, dict):
        if value.get("class_name") == "function" and isinstance(value.get("config"), str):
            if key is not None and key.endswith("_initializer"):
                return {"class_name": "Zeros", "config": {}}
            return value["config"]
        return {k: _function_names(item, k) for k, item in value.items()}
    if isinstance(value, list):
        return [_function_names(item) for item in value]
    return value


def load_model(source, keras_module):
    """`keras_module.models.load_model(source)`, also for HDF5 files holding plain functions.

    The legacy Keras 2 (2.13 and later) saves a plain function (larq's `ste_tern`, Larq Zoo's
    `blurpool_initializer`) as `{"class_name": "function", "config": NAME}`, which its own
    HDF5 loader then rejects ("Unknown initializer: 'function'"). Such a file is rebuilt from
    its config with quantizer and activation functions written by name, the form that
    loader reads, and function initializers replaced by zeros (that loader cannot call a
    function initializer by name either; the weights, loaded next from the same file, are
    what counts, and the importer drops initializers Keras 3 does not know anyway).
    """
    try:
        return keras_module.models.load_model(source, compile=False)
    except (TypeError, ValueError) as error:
        if "'function'" not in str(error) or os.path.isdir(source):
            raise
    import h5py

    with h5py.File(source, "r") as f:
        config = f.attrs["model_config"]
    config = json.loads(config.decode() if isinstance(config, bytes) else config)
    model = keras_module.models.model_from_json(json.dumps(_function_names(config)))
    model.load_weights(source)
    return model


def read_sources(sources, output_dir, keras_module):
    """Describes each source into `output_dir/<i>/`, writing `error.json` where it fails.

    Args:
        sources: model paths.
        output_dir: folder for the results.
        keras_module: the legacy Keras 2 module (`tf.keras` with `TF_USE_LEGACY_KERAS=1`).
    """
    for i, source in enumerate(sources):
        directory = os.path.join(output_dir, str(i))
        os.makedirs(directory, exist_ok=True)
        try:
            write(*describe(load_model(source, keras_module), source), directory)
        except Exception as error:  # reported to the parent, which raises it clearly
            with open(os.path.join(directory, ERROR_FILE), "w") as f:
                json.dump(
                    {
                        "type": type(error).__name__,
                        "message": str(error),
                        "traceback": traceback.format_exc(limit=4),
                    },
                    f,
                )


def main(argv=None):
    """Entry point of the child: `argv[0]` is OPTIONS_JSON (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    options = json.loads(argv[0])
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import larq  # noqa: F401  (registers larq's layers, quantizers and constraints)

    read_sources(options["sources"], options["output_dir"], tf.keras)
    return 0


if __name__ == "__main__":
    sys.exit(main())
