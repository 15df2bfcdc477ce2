"""larq and legacy-Keras objects inside layer configs, as Keras 3 / kerasbnn objects.

Quantizers, constraints, activations, initializers, regularizers and dtypes arrive in the
serialized forms the legacy Keras 2 writes: a string (`"ste_sign"`), a
`{"class_name": ..., "config": ...}` dict (`SteSign` with larq's Layer keys `name`,
`trainable`, `dtype`), or `{"class_name": "function", "config": "ste_tern"}` for a plain
function. Each translator returns the Keras 3 object or raises `LarqImportError` saying
what has no equivalent.
"""

import keras

from kerasbnn import constraints as kb_constraints
from kerasbnn import quantizers as kb_quantizers
from kerasbnn.larq_import.errors import LarqImportError

# Keys of larq's quantizer configs that come from tf.keras.layers.Layer, not from the quantizer,
# and larq's training metrics (flip_ratio), which do not change what a quantizer computes.
_LAYER_KEYS = ("name", "trainable", "dtype", "metrics")
_NONE_QUANTIZERS = (None, "linear", "identity")


def _larq_dorefa(k_bit=2, mode="activations"):
    if mode == "weights" and k_bit == 1:
        raise LarqImportError(
            "larq's DoReFa(k_bit=1, mode='weights') is sign(tanh(w)) with sign(0) = -1 and a "
            "tanh-shaped pseudo-gradient; kerasbnn's DoReFa(1, 'weights') is the paper's BNN "
            "form mean|w| * sign(w), so no kerasbnn quantizer equals it. Use k_bit >= 2, or "
            "retrain with 'ste_sign' or 'magnitude_aware_sign'."
        )
    return kb_quantizers.DoReFa(k_bit=k_bit, mode=mode)


QUANTIZERS = {
    "SteSign": kb_quantizers.SteSign,
    "ste_sign": kb_quantizers.SteSign,
    "ApproxSign": kb_quantizers.ApproxSign,
    "approx_sign": kb_quantizers.ApproxSign,
    "SwishSign": kb_quantizers.SwishSign,
    "swish_sign": kb_quantizers.SwishSign,
    "MagnitudeAwareSign": kb_quantizers.MagnitudeAwareSign,
    "magnitude_aware_sign": kb_quantizers.MagnitudeAwareSign,
    "SteHeaviside": kb_quantizers.SteHeaviside,
    "ste_heaviside": kb_quantizers.SteHeaviside,
    "SteTern": kb_quantizers.SteTern,
    "ste_tern": kb_quantizers.SteTern,
    "DoReFa": _larq_dorefa,
    "DoReFaQuantizer": _larq_dorefa,
    "dorefa_quantizer": _larq_dorefa,
    "NoOp": kb_quantizers.NoOp,
    "NoOpQuantizer": kb_quantizers.NoOp,
}
"""larq 0.14 quantizer name (class, alias or function) -> kerasbnn constructor taking larq's
arguments."""

CONSTRAINTS = {"WeightClip": kb_constraints.WeightClip, "weight_clip": kb_constraints.WeightClip}
"""larq constraint names (class or alias) -> the kerasbnn constraint."""


def _name_and_config(identifier):
    """`(name, config)` of a serialized object: a string, a class dict or a function dict."""
    if isinstance(identifier, str):
        return identifier, {}
    if isinstance(identifier, dict) and "class_name" in identifier:
        config = identifier.get("config")
        if identifier["class_name"] == "function" and isinstance(config, str):
            return config, {}
        return identifier["class_name"], dict(config or {})
    raise LarqImportError(f"cannot read the serialized object {identifier!r}")


def quantizer(identifier, where):
    """A kerasbnn quantizer (or None) for a larq quantizer as serialized in a layer config.

    Raises:
        LarqImportError: for a quantizer kerasbnn lacks, naming `where` and the ones it has.
    """
    if identifier in _NONE_QUANTIZERS:
        return None
    name, config = _name_and_config(identifier)
    if name in _NONE_QUANTIZERS:
        return None
    if name not in QUANTIZERS:
        raise LarqImportError(
            f"{where} is the quantizer {name!r}, which kerasbnn does not have. Supported larq "
            f"quantizers: {', '.join(sorted(QUANTIZERS))}."
        )
    arguments = {k: v for k, v in config.items() if k not in _LAYER_KEYS}
    try:
        return QUANTIZERS[name](**arguments)
    except (TypeError, ValueError) as error:
        raise LarqImportError(f"{where}: {name}({arguments}) cannot be rebuilt: {error}") from None


def constraint(identifier, where):
    """larq's `WeightClip` as kerasbnn's; Keras's own constraints through Keras 3."""
    if identifier is None:
        return None
    name, config = _name_and_config(identifier)
    if name in CONSTRAINTS:
        return CONSTRAINTS[name](**config)
    return _keras_object(keras.constraints, "constraint", name, config, where)


def regularizer(identifier, where):
    """A Keras 3 regularizer; one Keras 3 does not know is an error (it changes the loss)."""
    if identifier is None:
        return None
    name, config = _name_and_config(identifier)
    return _keras_object(keras.regularizers, "regularizer", name, config, where)


def _keras_object(module, kind, name, config, where):
    try:
        return module.get({"class_name": name, "config": config})
    except (TypeError, ValueError) as error:
        raise LarqImportError(
            f"{where} is the {kind} {name!r}, which Keras 3 does not know ({error})."
        ) from None


def initializer(identifier):
    """A Keras 3 initializer, or None where Keras 3 does not know it (the caller drops it).

    Initializers only matter for re-initialising: the imported weights are the file's.
    """
    if identifier is None:
        return None
    try:
        name, config = _name_and_config(identifier)
        return keras.initializers.get({"class_name": name, "config": config} if config else name)
    except (LarqImportError, TypeError, ValueError):
        return None


def activation(identifier, where):
    """The Keras 3 name of an activation (larq's `hard_tanh` is Keras 3's `hard_tanh`)."""
    if identifier is None:
        return None
    name, _ = _name_and_config(identifier)
    try:
        keras.activations.get(name)
    except (TypeError, ValueError):
        raise LarqImportError(
            f"{where} uses the activation {name!r}, which Keras 3 does not have (larq's "
            "leaky_tanh has no Keras 3 equivalent)."
        ) from None
    return name


def dtype(identifier):
    """A dtype or dtype-policy name from a legacy `"float32"` or `Policy` dict."""
    if isinstance(identifier, dict):
        return identifier.get("config", {}).get("name", "float32")
    return identifier
