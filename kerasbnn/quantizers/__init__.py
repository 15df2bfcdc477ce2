"""Quantizers: serializable functions that map float tensors to k-bit values.

Each can be named by its alias (`"ste_sign"`), a config dict, or an instance;
`get()` resolves all three, as `keras.activations.get` does.
"""

import keras

from kerasbnn.quantizers.base import ALIASES, Quantizer
from kerasbnn.quantizers.multibit import (
    HWGQ,
    HWGQ_ACTIVATION_STEPS,
    HWGQ_WEIGHT_STEPS,
    LSQ,
    DoReFa,
    NoOp,
    SteTern,
    quantize_k,
    ste_tern,
)
from kerasbnn.quantizers.sign import (
    ApproxSign,
    MagnitudeAwareSign,
    SteHeaviside,
    SteSign,
    SwishSign,
    approx_sign,
    binary_sign,
    ste_heaviside,
    ste_sign,
    swish_sign,
)

__all__ = [
    "Quantizer",
    "NoOp",
    "SteSign",
    "ApproxSign",
    "SwishSign",
    "MagnitudeAwareSign",
    "SteHeaviside",
    "SteTern",
    "DoReFa",
    "HWGQ",
    "LSQ",
    "HWGQ_WEIGHT_STEPS",
    "HWGQ_ACTIVATION_STEPS",
    "ste_sign",
    "approx_sign",
    "swish_sign",
    "ste_heaviside",
    "ste_tern",
    "quantize_k",
    "binary_sign",
    "get",
    "serialize",
    "deserialize",
    "precision_of",
]


def serialize(quantizer):
    """Config dict of a quantizer (None stays None)."""
    return None if quantizer is None else keras.saving.serialize_keras_object(quantizer)


def deserialize(config):
    """Inverse of `serialize`; also accepts `{"class_name": alias, "config": {...}}`."""
    class_name = config.get("class_name")
    if class_name in ALIASES:
        return ALIASES[class_name].from_config(config.get("config") or {})
    return keras.saving.deserialize_keras_object(config)


def get(identifier):
    """Resolve None, an alias, a config dict or a `Quantizer` into a quantizer (or None).

    Raises:
        ValueError: for an unknown alias (the message lists the valid ones) or a value
            that is none of the above.
    """
    if identifier is None or isinstance(identifier, Quantizer):
        return identifier
    if isinstance(identifier, str):
        if identifier not in ALIASES:
            raise ValueError(
                f"Unknown quantizer {identifier!r}. Valid quantizers: {', '.join(sorted(ALIASES))}."
            )
        return ALIASES[identifier]()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise ValueError(
        f"Could not interpret quantizer identifier {identifier!r}: pass None, one of "
        f"{', '.join(sorted(ALIASES))}, a config dict or a kerasbnn.quantizers.Quantizer."
    )


def precision_of(quantizer):
    """Bits of a quantizer's output: 32 for None (float)."""
    return 32 if quantizer is None else int(getattr(quantizer, "precision", 32))
