"""One larq or legacy-Keras layer config -> the Keras 3 / kerasbnn layer that computes the same.

Three kinds of layers are rebuilt: larq's quantized layers (`LARQ_LAYERS`, as kerasbnn's
classes of the same name), the ordinary Keras layers binary networks use (`KERAS_LAYERS`,
as Keras 3's), and the operator layers the legacy functional API inserts for `x + y`,
`x - y` and `x * y` (`TFOpLambda`, see `OPERATORS`). A user-defined layer named
`LearnableBias` (ReActNet's convention: one weight `b` of shape `(C,)`, output `x + b`) is
rebuilt as `kerasbnn.layers.LearnableBias` once its probe output (computed by larq's side on
a random input) agrees with kerasbnn's. Anything else is an error that names the layer.
"""

import inspect

import keras
import numpy as np

from kerasbnn import layers as kb_layers
from kerasbnn.larq_import import objects
from kerasbnn.larq_import.errors import LarqImportError

LARQ_LAYERS = {
    "QuantConv2D": kb_layers.QuantConv2D,
    "QuantDense": kb_layers.QuantDense,
    "QuantDepthwiseConv2D": kb_layers.QuantDepthwiseConv2D,
}
"""larq's quantized layers by class name -> the kerasbnn layer that rebuilds them."""
KERAS_LAYERS = (
    "Activation",
    "Add",
    "Average",
    "AveragePooling2D",
    "BatchNormalization",
    "Concatenate",
    "Conv2D",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "Flatten",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "LeakyReLU",
    "MaxPooling2D",
    "Maximum",
    "Minimum",
    "Multiply",
    "PReLU",
    "ReLU",
    "Rescaling",
    "Reshape",
    "Softmax",
    "Subtract",
    "ZeroPadding2D",
)
"""The Keras layers a larq model may hold that are rebuilt as the Keras 3 layer of the same name."""
OPERATORS = {
    "__operators__.add": (keras.layers.Add, lambda c: (1.0, c), lambda c: (1.0, c)),
    "math.add": (keras.layers.Add, lambda c: (1.0, c), lambda c: (1.0, c)),
    "math.subtract": (keras.layers.Subtract, lambda c: (1.0, -c), lambda c: (-1.0, c)),
    "math.multiply": (keras.layers.Multiply, lambda c: (c, 0.0), lambda c: (c, 0.0)),
}
"""TFOpLambda function -> (Keras 3 merge layer for two tensors, Rescaling `(scale, offset)` for
`x op c`, and for `c op x`, with c a number)."""
CONVENTIONS = {"LearnableBias": kb_layers.LearnableBias}
"""User layers of larq models known by their class name (ReActNet's `LearnableBias`), rebuilt as
the kerasbnn layer after checking both on a random input."""
# Legacy Keras 2 options that Keras 3 lacks or that were not checked against it: dropped
# while they hold these values (which compute what Keras 3 computes), an error otherwise.
_LEGACY_DEFAULTS = {
    "BatchNormalization": {
        "renorm": False,
        "renorm_clipping": None,
        "renorm_momentum": 0.99,
        "virtual_batch_size": None,
        "adjustment": None,
    },
    "DepthwiseConv2D": {"groups": 1},
    "QuantDepthwiseConv2D": {"groups": 1},
}
_IGNORED = {"BatchNormalization": ("fused",)}  # a kernel choice, same numbers
_RENAMED = {"LeakyReLU": {"alpha": "negative_slope"}}
_BASE_KEYS = {"name", "trainable", "dtype"}


def supported_summary():
    """One sentence listing what the importer rebuilds, for error messages and docs."""
    return (
        f"larq's {', '.join(LARQ_LAYERS)}; Keras's {', '.join(KERAS_LAYERS)} and InputLayer; "
        f"the operators {', '.join(sorted(OPERATORS))} (TFOpLambda); and user layers named "
        f"{', '.join(CONVENTIONS)} (x + b, checked on a probe)"
    )


def _where(entry):
    return f"layer {entry['config'].get('name', entry.get('name'))!r} ({entry['class_name']})"


def _translate_value(key, value, where):
    """`(keep, value)`: a nested object of a config translated; keep False drops the key."""
    if key.endswith("_quantizer"):
        return True, objects.quantizer(value, f"{where} {key}")
    if key.endswith("_constraint"):
        return True, objects.constraint(value, f"{where} {key}")
    if key.endswith("_regularizer"):
        return True, objects.regularizer(value, f"{where} {key}")
    if key.endswith("_initializer"):
        initializer = objects.initializer(value)
        return initializer is not None, initializer
    if key == "activation":
        return True, objects.activation(value, where)
    if key == "dtype":
        return True, objects.dtype(value)
    return True, value


def _accepted_keys(cls):
    parameters = inspect.signature(cls.__init__).parameters
    named = {n for n, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return (named - {"self"}) | _BASE_KEYS


def translate_config(class_name, cls, config, where):
    """Keyword arguments of `cls` equal to a legacy config of `class_name`.

    Raises:
        LarqImportError: for an option Keras 3 lacks that does not hold its harmless value.
    """
    accepted = _accepted_keys(cls)
    renamed = _RENAMED.get(class_name, {})
    kwargs = {}
    for key, value in config.items():
        key = renamed.get(key, key)
        if key in _IGNORED.get(class_name, ()):
            continue
        legacy = _LEGACY_DEFAULTS.get(class_name, {})
        if key in legacy:
            if value == legacy[key]:
                continue
            raise LarqImportError(
                f"{where} sets {key}={value!r}; the importer rebuilds {class_name} only with "
                f"{key}={legacy[key]!r} (the option is missing from, or unverified in, Keras 3)."
            )
        if key not in accepted:
            raise LarqImportError(
                f"{where} sets {key}={value!r}, an option Keras 3's {cls.__name__} does not have."
            )
        keep, value = _translate_value(key, value, where)
        if keep:
            kwargs[key] = value
    return kwargs


def _batch_norm_axis(kwargs, entry, where):
    """The legacy `axis: [3]` as Keras 3's int, and -1 where it is the last axis.

    Keras 3 reshapes the statistics of any other axis to rank 4 (`ops.batch_normalization`),
    and LCE then folds a rank-4 multiplier into `LceBconv2d`, which its kernel rejects
    ("NumDimensions(post_activation_multiplier) != 1"); -1 keeps them vectors, as in a
    BatchNormalization built in Keras 3.
    """
    axis = kwargs.get("axis", -1)
    if isinstance(axis, list):
        if len(axis) != 1:
            raise LarqImportError(f"{where} normalizes over several axes {axis}.")
        axis = axis[0]
    input_shape = (entry.get("build_config") or {}).get("input_shape")
    if isinstance(input_shape, list) and axis == len(input_shape) - 1:
        axis = -1
    return {**kwargs, "axis": axis}


def translate(entry, layer_description):
    """The Keras 3 layer for one entry of the legacy functional/sequential config.

    Args:
        entry: `{"class_name", "config", ...}` from the model config.
        layer_description: the child's description of the same layer (weights, probe).

    Returns:
        A `keras.layers.Layer`, not yet built.

    Raises:
        LarqImportError: naming the layer, when nothing in kerasbnn or Keras 3 equals it.
    """
    class_name, config, where = entry["class_name"], dict(entry["config"]), _where(entry)
    if layer_description and layer_description.get("is_model"):
        raise LarqImportError(
            f"{where} is a nested model; the importer reads flat Functional and Sequential "
            "models. Import the inner model on its own, or rebuild the outer one without nesting."
        )
    if class_name in LARQ_LAYERS:
        cls = LARQ_LAYERS[class_name]
    elif class_name in KERAS_LAYERS:
        cls = getattr(keras.layers, class_name)
    elif class_name in CONVENTIONS:
        return _convention_layer(class_name, config, layer_description, where)
    else:
        module = (layer_description or {}).get("python_module") or entry.get("module") or "?"
        hint = "larq's" if module.startswith("larq") else f"a class from {module}"
        raise LarqImportError(f"{where} is {hint}; kerasbnn has no equivalent.")
    kwargs = translate_config(class_name, cls, config, where)
    if class_name == "BatchNormalization":
        kwargs = _batch_norm_axis(kwargs, entry, where)
    return cls(**kwargs)


def _convention_layer(class_name, config, layer_description, where):
    weights = (layer_description or {}).get("weights", [])
    shapes = [tuple(w["shape"]) for w in weights]
    if len(shapes) != 1 or any(d != 1 for d in shapes[0][:-1]):
        raise LarqImportError(
            f"{where} is a user layer read as kerasbnn.layers.{class_name} (x + b), which needs "
            f"exactly one weight of shape (C,); it has weights of shapes {shapes}."
        )
    probe = (layer_description or {}).get("probe") or {}
    if "x" not in probe:
        raise LarqImportError(
            f"{where} is a user layer; kerasbnn checks it computes x + b on a random input, "
            f"but it could not be run ({probe.get('error', 'no probe')})."
        )
    kwargs = {k: objects.dtype(v) if k == "dtype" else v for k, v in config.items()}
    return CONVENTIONS[class_name](**{k: v for k, v in kwargs.items() if k in _BASE_KEYS})


def convention_weights(layer, arrays):
    """Reshapes a convention layer's weights to kerasbnn's shapes (a `(1, 1, C)` bias to `(C,)`)."""
    return [np.reshape(a, tuple(v.shape)) for a, v in zip(arrays, layer.weights)]


def translate_operator(entry, constant=None, constant_first=False):
    """The Keras 3 layer for a TFOpLambda `x op y` (two tensors) or `x op c` / `c op x`.

    Args:
        entry: the TFOpLambda's config entry.
        constant: None when both operands are tensors, else the number c.
        constant_first: True for `c op x`.

    Raises:
        LarqImportError: for another TF function or a constant that is not a number.
    """
    where = _where(entry)
    function = entry["config"].get("function")
    if function not in OPERATORS:
        raise LarqImportError(
            f"{where} applies tf.{function}, which the importer does not rebuild (supported: "
            f"{', '.join('tf.' + name for name in sorted(OPERATORS))} of two tensors or a tensor "
            "and a number)."
        )
    merge, tensor_first, number_first = OPERATORS[function]
    name = entry["config"].get("name", entry.get("name"))
    if constant is None:
        return merge(name=name)
    if isinstance(constant, bool) or not isinstance(constant, (int, float)):
        raise LarqImportError(
            f"{where} combines a tensor with {constant!r}; only numbers are read."
        )
    scale, offset = (number_first if constant_first else tensor_first)(float(constant))
    return keras.layers.Rescaling(scale=scale, offset=offset, name=name)
