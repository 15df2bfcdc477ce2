"""Import larq (tf.keras 2) models into kerasbnn Keras 3 models: `from_larq`.

larq 0.14 runs only on the legacy Keras 2 (`TF_USE_LEGACY_KERAS=1` set before TensorFlow is
imported), so files are read in a child process (`_child.py`) that writes each layer's
config and weights as JSON and .npz; this process then builds kerasbnn / Keras 3 layers from
them (`layers.py`, `graph.py`). Nothing is pickled.

```python
model = kerasbnn.from_larq("quicknet.h5")      # or a SavedModel folder
model.save("quicknet.keras")                   # loads with safe_mode=True
```
"""

import os

import keras

from kerasbnn.larq_import import _child, files, graph
from kerasbnn.larq_import.files import read
from kerasbnn.larq_import.errors import LarqImportError
from kerasbnn.larq_import.layers import CONVENTIONS, KERAS_LAYERS, LARQ_LAYERS, OPERATORS
from kerasbnn.larq_import.objects import CONSTRAINTS, QUANTIZERS

__all__ = [
    "LarqImportError",
    "from_larq",
    "read",
    "build",
    "check_output",
    "LARQ_LAYERS",
    "KERAS_LAYERS",
    "OPERATORS",
    "CONVENTIONS",
    "QUANTIZERS",
    "CONSTRAINTS",
]


def _check_float(description, allow_float):
    larq_layers = [
        layer for layer in description["layers"] if layer["python_module"].startswith("larq.")
    ]
    if larq_layers or allow_float:
        return
    raise LarqImportError(
        f"{description.get('source') or 'the model'} has no larq layer (no "
        f"{', '.join(LARQ_LAYERS)}): it is a plain Keras 2 model. Pass allow_float=True "
        "(CLI: --allow-float) to import it as a float Keras 3 model."
    )


def build(description, arrays, *, allow_float=False):
    """Builds the Keras 3 model of a description read by `read` (or `_child.describe`).

    Args:
        description: the JSON description of one larq model.
        arrays: its weights (and probe arrays) by key.
        allow_float: import a model without any larq layer instead of raising.

    Returns:
        A `keras.Model` (Functional or Sequential) with kerasbnn layers and larq's weights.

    Raises:
        LarqImportError: naming each layer, quantizer or option that cannot be rebuilt.
    """
    _check_float(description, allow_float)
    return graph.build(description, arrays)


def _is_legacy_model(value):
    return hasattr(value, "get_config") and hasattr(value, "layers") and hasattr(value, "weights")


def from_larq(path_or_model, *, allow_float=False, timeout=None):
    """Rebuilds a larq model as a kerasbnn Keras 3 model with the same weights.

    Args:
        path_or_model: an `.h5` file or SavedModel folder written by `model.save` under larq
            (a legacy `.keras` archive works too), or a larq `tf.keras.Model` object of this
            process (where larq is imported, with `TF_USE_LEGACY_KERAS=1`).
        allow_float: import a model without larq layers as a float model instead of raising.
        timeout: seconds allowed to the child process that reads a file, or None.

    Returns:
        A `keras.Model` whose layers are `kerasbnn.layers.QuantConv2D` and friends, with
        larq's names, configs (quantizers, constraints, `pad_values`) and latent weights.

    Raises:
        LarqImportError: a missing, truncated or non-larq file; larq not installed; or
            layers, quantizers or options kerasbnn lacks, each named, raised before any
            Keras 3 layer is built.
    """
    if isinstance(path_or_model, keras.Model):
        raise LarqImportError(
            f"{path_or_model.name!r} is already a Keras 3 model; from_larq reads larq models."
        )
    if isinstance(path_or_model, (str, os.PathLike)):
        ((description, arrays),) = files.read([path_or_model], timeout=timeout)
    elif _is_legacy_model(path_or_model):
        try:
            description, arrays = _child.describe(path_or_model)
        except TypeError as error:
            raise LarqImportError(str(error)) from None
    else:
        raise LarqImportError(
            f"from_larq takes a file path or a larq tf.keras model, received "
            f"{type(path_or_model).__name__}."
        )
    return build(description, arrays, allow_float=allow_float)


def check_output(path):
    """Checks, before a slow import, that a `.keras` file can be written at `path`.

    Raises:
        LarqImportError: for a name without `.keras`, a folder that does not exist or cannot
            be written (a file is created and removed there to know), or a read-only file.
    """
    from kerasbnn.export.files import check_writable  # noqa: PLC0415

    path = os.path.abspath(os.fspath(path))
    if not path.endswith(".keras"):
        raise LarqImportError(f"{path}: the output must be a .keras file (Keras 3's format).")
    if not os.path.isdir(os.path.dirname(path)):
        raise LarqImportError(f"{path}: the folder {os.path.dirname(path)} does not exist.")
    try:
        return check_writable(path, what="the .keras file")
    except (ValueError, PermissionError) as error:
        raise LarqImportError(str(error)) from None
