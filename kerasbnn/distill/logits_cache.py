"""Cached teacher logits: frozen teachers run once per example, not once per step.

A frozen teacher in inference mode maps an image to the same logits in every epoch. When
the training images are not augmented and the distiller taps no teacher features (logits
only, e.g. MAD or KD with `feature_weight=0`), the teachers' pass of every step, about 0.2
of a student step per ResNet-20 teacher, can be replaced by one pass over the data before
training: `teacher_logits` computes the table, and the distiller reads it from its inputs.

A distiller (`TeacherStudent` with frozen teachers and no teacher taps) takes, in place of
its inputs `x`, the dict `with_teacher_logits(x, logits)`:
`{"inputs": x, "teacher_logits": logits}` with `logits` of shape `(batch, teachers, classes)`,
teacher m's logits at `[:, m]`. It then runs only the student; validation data, `predict` and
`evaluate` may still pass plain inputs, for which the teachers run as usual.

Example (arrays; Keras shuffles the dict's arrays together):
```python
logits = kerasbnn.distill.teacher_logits(distiller.teachers, x_train)
distiller.fit(kerasbnn.distill.with_teacher_logits(x_train, logits), y_train, epochs=10,
              shuffle=True, validation_data=(x_val, y_val))
```

With `tf.data`, load the training batches with their example indices
(`kerasbnn.data.load(..., index=True)`, the same images in the same order as without it) and
`attach_teacher_logits(dataset, logits)`; the table comes from the same examples in their
stored order (`load(..., shuffle=False, augment=False)`).
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kerasbnn.data import epochs
from kerasbnn.utils.inference import inference_step

__all__ = ["INPUTS", "TEACHER_LOGITS", "attach_teacher_logits", "cached_inputs",
           "teacher_logits", "with_teacher_logits"]

INPUTS, TEACHER_LOGITS = "inputs", "teacher_logits"


def with_teacher_logits(inputs, logits):
    """What a distiller's `fit` takes in place of `inputs` to skip its teachers' pass."""
    return {INPUTS: inputs, TEACHER_LOGITS: logits}


def cached_inputs(inputs):
    """`(inputs, logits)` of a `with_teacher_logits` dict, `(inputs, None)` otherwise."""
    if isinstance(inputs, dict) and TEACHER_LOGITS in inputs:
        extra = set(inputs) - {INPUTS, TEACHER_LOGITS}
        if INPUTS not in inputs or extra:
            raise ValueError(
                f"Inputs with cached teacher logits are a dict with exactly the keys "
                f"{INPUTS!r} and {TEACHER_LOGITS!r}; received the keys {sorted(inputs)}. "
                "Make them with kerasbnn.distill.with_teacher_logits(x, logits).")
        return inputs[INPUTS], inputs[TEACHER_LOGITS]
    return inputs, None


def _batches(data, batch_size):
    """The input batches of `data`: an array (split into `batch_size` rows) or a dataset of
    `x` or `(x, ...)` batches."""
    if isinstance(data, tf.data.Dataset):
        for batch in data:
            yield batch[0] if isinstance(batch, tuple) else batch
        return
    data = np.asarray(data)
    for start in range(0, len(data), batch_size):
        yield data[start:start + batch_size]


def teacher_logits(teachers, data, batch_size=256):
    """Every teacher's logits in inference mode for every example of `data`, in order.

    Args:
        teachers: a `keras.Model` or a list of them (e.g. `distiller.teachers`), each returning
            logits of one shape.
        data: the training inputs as an array, or a `tf.data.Dataset` of `x` or `(x, y, ...)`
            batches in a fixed order, without augmentation (the logits must be those of the
            images the student will see).
        batch_size: rows per teacher call for an array.

    Returns:
        float32 numpy array `(examples, teachers, classes)`.

    Raises:
        ValueError: for no teachers or empty data.
    """
    teachers = [teachers] if isinstance(teachers, keras.Model) else list(teachers)
    if not teachers:
        raise ValueError("teacher_logits needs at least one teacher model.")
    steps = [inference_step(t) for t in teachers]
    rows = [np.stack([np.asarray(step(x), "float32") for step in steps], axis=1)
            for x in _batches(data, batch_size)]
    if not rows:
        raise ValueError("teacher_logits received no examples; pass the training inputs.")
    return np.concatenate(rows)


def attach_teacher_logits(dataset, logits):
    """`(x, y, indices)` batches (`kerasbnn.data.load(..., index=True)`) as
    `(with_teacher_logits(x, logits[indices]), y)`.

    Args:
        dataset: a `tf.data.Dataset` of `(x, y, indices)`.
        logits: `teacher_logits` of the same examples in their stored order: row i belongs
            to the example of index i.

    Raises:
        ValueError: when the batches carry no indices.
    """
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 3:
        raise ValueError(
            "attach_teacher_logits needs (x, y, indices) batches; load them with "
            "kerasbnn.data.load(..., index=True).")
    table = tf.constant(np.asarray(logits, "float32"))

    def attach(x, y, indices):
        return with_teacher_logits(x, tf.gather(table, indices)), y

    return epochs.derived(
        dataset.map(attach, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True), dataset)


def teachers_from_cache(logits, num_teachers):
    """The per-teacher `{"logits": ...}` dicts of a `(batch, teachers, classes)` tensor."""
    if len(logits.shape) != 3 or logits.shape[1] not in (None, num_teachers):
        raise ValueError(
            f"Cached teacher logits must have shape (batch, {num_teachers}, classes) for "
            f"{num_teachers} teacher(s); received {tuple(logits.shape)}.")
    logits = ops.convert_to_tensor(logits)
    return [{"logits": logits[:, m]} for m in range(num_teachers)]
