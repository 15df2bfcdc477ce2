"""Which layers a distiller taps, and the models and adapters built on them.

`resolve_taps` turns a distiller's `feature_taps` into (student layer, teacher layer) pairs,
`feature_extractor` builds one dict-output model per network that returns those layers'
outputs with the logits in one pass, `adapter` the 1x1 transform that maps a student feature
to a teacher's channels, and `check_models` the checks every distiller runs on its student
and teachers. `kerasbnn.distill.base` re-exports every name.
"""

import keras

from kerasbnn.distill.losses import LogitsDistillation

__all__ = ["Untracked", "adapter", "check_models", "compatible", "feature_extractor",
           "resolve_taps", "zoo_taps"]


class Untracked:
    """Holds objects that Keras must not track as sub-layers of the distiller.

    Feature extractors share every layer with the student and the teachers, which the
    distiller already tracks (tracking them twice duplicates entries in weight files), and
    CMT-KD's teachers carry heads that get no gradient when the combined teacher has its own.
    """

    def __init__(self, **items):
        self.__dict__.update(items)


def compatible(a, b):
    """True when two shapes agree wherever both are known (None)."""
    return len(a) == len(b) and all(p is None or q is None or p == q for p, q in zip(a, b))


def check_models(student, teachers, owner):
    """The teachers as a list, after checking that the student and each teacher are distinct
    `keras.Model`s that take one input shape and return logits (no softmax) of one shape (one
    teacher may be given alone).

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
            f"{teachers!r}.")
    if not isinstance(student, keras.Model) or not getattr(student, "inputs", None):
        raise ValueError(
            f"{owner}: student must be a functional keras.Model, received {student!r}.")
    for m, teacher in enumerate(teachers):
        if not isinstance(teacher, keras.Model):
            raise ValueError(
                f"{owner}: teacher {m} must be a keras.Model, received {type(teacher).__name__}.")
        if teacher is student or any(teacher is other for other in teachers[:m]):
            raise ValueError(
                f"{owner}: teacher {m} is the student or another teacher; pass separate models "
                "(build each with the zoo at its own precision).")
        shapes = [tuple(getattr(model, "outputs", [None])[0].shape[1:])
                  if getattr(model, "outputs", None) else None for model in (student, teacher)]
        if None not in shapes and shapes[0] != shapes[1]:
            raise ValueError(
                f"{owner}: teacher {m} ({teacher.name!r}) outputs logits of shape {shapes[1]}, "
                f"the student {shapes[0]}: teachers must predict the student's "
                f"{shapes[0][-1]} classes.")
        inputs = [[tuple(x.shape) for x in getattr(model, "inputs", None) or ()]
                  for model in (student, teacher)]
        if inputs[1] and not (len(inputs[0]) == len(inputs[1])
                              and all(map(compatible, *inputs))):
            raise ValueError(
                f"{owner}: teacher {m} ({teacher.name!r}) takes inputs of shape {inputs[1]}, "
                f"the student {inputs[0]}; every teacher must see the student's input.")
        LogitsDistillation().validate_model_compatibility(teacher, student)
    return list(teachers)


def adapter(shape, channels, name, use_bias=True):
    """A built point-wise (1x1) transform to `channels` of a feature of `shape` (with batch):
    MAD's r_i (eq. 10), CMT-KD's FitNet regressor r_l (eq. 6), PKKD's r_a and r_c."""
    rank = len(shape)
    if rank == 4:
        layer = keras.layers.Conv2D(channels, 1, use_bias=use_bias, name=name)
    elif rank == 3:
        layer = keras.layers.Conv1D(channels, 1, use_bias=use_bias, name=name)
    elif rank == 2:
        layer = keras.layers.Dense(channels, use_bias=use_bias, name=name)
    else:
        raise ValueError(
            f"Feature tap {name!r} has rank {rank} (shape {shape}); adapters exist for "
            "rank 2, 3 and 4 features (channels last).")
    layer.build(shape)
    return layer


def zoo_taps(student, teachers):
    """The distillation taps the zoo declares (`kerasbnn.models.taps`), which must be the same
    in the student and in every teacher: `TeacherStudent.auto_taps`' default (MAD, KD).

    Raises:
        ValueError: if the student declares none, or a teacher declares others.
    """
    from kerasbnn.models import taps as taps_of  # the zoo declares its taps

    student_taps = list(taps_of(student))
    if not student_taps:
        raise ValueError(
            f"feature_taps='auto' found no distillation taps in the student "
            f"{student.name!r}; pass a list of layer names or feature_taps=None.")
    for m, teacher in enumerate(teachers):
        teacher_taps = list(taps_of(teacher))
        if teacher_taps != student_taps:
            raise ValueError(
                f"feature_taps='auto': teacher {m} ({teacher.name!r}) declares taps "
                f"{teacher_taps}, the student {student_taps}. Teachers of another "
                "architecture distill logits only: pass feature_taps=None.")
    return student_taps


def resolve_taps(feature_taps, student, teachers, auto=zoo_taps):
    """`feature_taps` as a list of (student_layer, teacher_layer) pairs.

    Args:
        feature_taps: `"auto"` (`auto(student, teachers)`: the distiller's
            `TeacherStudent.auto_taps`, by default `zoo_taps`), None (no taps), or a list of
            layer names (the same in every model) or of (student_layer, teacher_layer) pairs.
        auto: what `"auto"` resolves to: a function of (student, teachers) returning layer
            names present in every model.

    Raises:
        ValueError: for any other value, a malformed entry or a student layer named twice.
    """
    if feature_taps is None:
        return []
    if isinstance(feature_taps, str):
        if feature_taps != "auto":
            raise ValueError(
                "feature_taps must be 'auto', None (logits only) or a list of layer names or "
                f"(student_layer, teacher_layer) pairs, received {feature_taps!r}.")
        return [(name, name) for name in auto(student, teachers)]
    pairs = []
    for entry in feature_taps:
        if isinstance(entry, str):
            pairs.append((entry, entry))
        elif isinstance(entry, (list, tuple)) and len(entry) == 2 and all(
                isinstance(name, str) for name in entry):
            pairs.append((entry[0], entry[1]))
        else:
            raise ValueError(
                "Each feature tap must be a layer name or a (student_layer, teacher_layer) "
                f"pair of names, received {entry!r}.")
    if len({s for s, _ in pairs}) != len(pairs):
        raise ValueError(f"feature_taps names a student layer twice: {pairs}.")
    return pairs


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
            f"the model, e.g. those of kerasbnn.models.taps(model).")
    outputs = {"logits": model.outputs[0]}
    outputs.update({n: model.get_layer(n).output for n in layer_names})
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, outputs, name=name or f"{model.name}_taps")
