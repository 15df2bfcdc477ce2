"""Weight constraints for latent (full-precision) weights of binary layers."""

import keras
from keras import ops

__all__ = ["WeightClip", "get"]


@keras.saving.register_keras_serializable(package="kerasbnn")
class WeightClip(keras.constraints.Constraint):
    """Clips latent weights to [-clip_value, clip_value] after every update.

    With an STE whose gradient vanishes for |w| > 1, unclipped latent weights drift
    away and stop learning (Courbariaux et al., BinaryConnect, arXiv:1511.00363).

    Args:
        clip_value: bound of the symmetric clipping interval.
    """

    def __init__(self, clip_value=1.0):
        if not clip_value > 0:
            raise ValueError(f"clip_value must be positive, received {clip_value!r}.")
        self.clip_value = float(clip_value)

    def __call__(self, w):
        return ops.clip(w, -self.clip_value, self.clip_value)

    def get_config(self):
        return {"clip_value": self.clip_value}


ALIASES = {"weight_clip": WeightClip}


def get(identifier):
    """Resolve `"weight_clip"` here, anything else through `keras.constraints.get`."""
    if isinstance(identifier, str) and identifier in ALIASES:
        return ALIASES[identifier]()
    return keras.constraints.get(identifier)
