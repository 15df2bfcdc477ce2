"""What every distiller shares: argument checks, feature extractors, replica scaling.

Each distiller (`MultiTeacherDistiller`, `CollaborativeDistiller`, `PKKDDistiller`,
`ProgressiveDistiller`'s block model) is a `keras.Model` whose `compute_loss` returns the loss
of the replica's batch. One rule holds for all of them, the rule Keras' own compiled losses
follow: `compute_loss` returns the replica's share, `replica_share(loss)` = the mean over the
replica's batch divided by the number of replicas in sync, because a `tf.distribute`
optimizer sums the replicas' gradients. The logged terms stay unscaled.
"""

import math

import keras
from keras import ops

__all__ = [
    "Untracked",
    "check_choice",
    "check_models",
    "check_number",
    "feature_extractor",
    "num_replicas",
    "replica_share",
]


class Untracked:
    """Holds objects that Keras must not track as sub-layers of the distiller.

    Feature extractors share every layer with the student and the teachers, which the
    distiller already tracks (tracking them twice duplicates entries in weight files), and
    CMT-KD's teachers carry heads that get no gradient when the combined teacher has its own.
    """

    def __init__(self, **items):
        self.__dict__.update(items)


def check_number(name, value, minimum=0.0, strict=False):
    """`float(value)` if it is a finite number >= `minimum` (> with `strict`), else ValueError.

    Args:
        name: the argument's name as the user wrote it (`"kl_weight"`, `"distill.feature_weight"`).
        value: what was received.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, received {value!r}.")
    if value < minimum or (strict and value == minimum):
        relation = "greater than" if strict else "at least"
        raise ValueError(f"{name} must be {relation} {minimum}, received {value!r}.")
    return float(value)


def check_choice(name, value, valid):
    """`value` if it is one of `valid`, else a ValueError listing them."""
    if value not in valid:
        raise ValueError(
            f"Unknown {name} {value!r}; valid values: {', '.join(repr(v) for v in valid)}."
        )
    return value


def check_models(student, teachers, owner):
    """The teachers as a list, after checking that the student and each teacher are distinct
    `keras.Model`s (one teacher may be given alone).

    Args:
        owner: the distiller's class name, which starts every message.

    Raises:
        ValueError: naming the argument at fault and the fix.
    """
    if isinstance(teachers, keras.Model):
        teachers = [teachers]
    if not isinstance(teachers, (list, tuple)) or not teachers:
        raise ValueError(
            f"{owner}: teachers must be a keras.Model or a non-empty list of them, received "
            f"{teachers!r}."
        )
    if not isinstance(student, keras.Model) or not getattr(student, "inputs", None):
        raise ValueError(
            f"{owner}: student must be a functional keras.Model, received {student!r}."
        )
    for m, teacher in enumerate(teachers):
        if not isinstance(teacher, keras.Model):
            raise ValueError(
                f"{owner}: teacher {m} must be a keras.Model, received {type(teacher).__name__}."
            )
        if teacher is student or any(teacher is other for other in teachers[:m]):
            raise ValueError(
                f"{owner}: teacher {m} is the student or another teacher; pass separate models "
                "(build each with the zoo at its own precision)."
            )
    return list(teachers)


def feature_extractor(model, layer_names, name=None):
    """One model that returns `{"logits": output, <layer>: its output, ...}` in one pass.

    Keras' `keras.distillation.Distiller` builds the same dict-output extractor from the
    layer names its losses declare.

    Args:
        model: a functional or Sequential model with one output (the logits).
        layer_names: names of its layers whose outputs are tapped.
        name: the extractor's name (default `<model>_taps`).

    Raises:
        ValueError: naming a layer the model does not have, and the ones it has.
    """
    names = {layer.name for layer in model.layers}
    missing = [n for n in layer_names if n not in names]
    if missing:
        raise ValueError(
            f"Model {model.name!r} has no layer(s) {missing}; feature_taps must name layers of "
            f"the model, e.g. those of kerasbnn.models.taps(model)."
        )
    outputs = {"logits": model.outputs[0]}
    outputs.update({n: model.get_layer(n).output for n in layer_names})
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, outputs, name=name or f"{model.name}_taps")


def num_replicas():
    """Replicas in sync under the current `tf.distribute` strategy (1 outside one)."""
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def replica_share(loss):
    """The replica's share of `loss` (its batch mean): `loss / replicas` (module docstring)."""
    replicas = num_replicas()
    return loss / replicas if replicas > 1 else ops.convert_to_tensor(loss)
