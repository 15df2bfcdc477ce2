r"""Teacher fusion: convex combinations of several teachers' logits or features (MAD eqs. 7-8).

y^t = \sum_m delta_m y^t_m and F_i^t = \sum_m delta_{i,m} F_{i,m}, with delta = softmax(theta)
so that the coefficients stay positive and sum to one. theta is a trainable weight of
the fusion layer; the gradient reaches it through the fused teacher side of the loss
(MAD eqs. 13-14) while the teachers themselves stay frozen.

What moves theta: by default the model's one optimizer (MAD trains everything alike), at
`lr_scale` times its rate. Under Adam a step moves theta by about the rate whatever the
gradient's size, so a weak, noisy gradient moves delta as far as a strong one.
`with_delta_optimizer` gives theta an optimizer of its own, e.g. SGD, whose step is the rate
times the gradient, through Keras' `MultiOptimizer` (what `compile` takes).
"""

import math
import re

import keras
import numpy as np
from keras import ops

from kerasbnn.distill.checks import check_number

__all__ = ["FUSION_MODES", "IMPORTANCE_PREFIX", "TeacherFusion", "fuse", "importance_key",
           "parse_importance_key", "resolve_fusion", "with_delta_optimizer"]

FUSION_MODES = ("learned", "average")

#: The log name of every learned teacher importance: `importance/<point>/t<m>`.
IMPORTANCE_PREFIX = "importance/"
_IMPORTANCE_KEY = re.compile(r"^importance/(?P<point>.+)/t(?P<teacher>\d+)$")


def importance_key(point, teacher):
    """The log and CSV name of teacher `teacher`'s importance at distillation point `point`
    (`"logits"` or a tap): `importance/<point>/t<teacher>`. One name for the idea in every
    method: MAD's delta_{i,m} (eqs. 7-8), CMT-KD's softmax(pi^l)_m (eq. 1)."""
    return f"{IMPORTANCE_PREFIX}{point}/t{int(teacher)}"


def parse_importance_key(key):
    """`(point, teacher)` of an `importance_key`, or None for any other name."""
    match = _IMPORTANCE_KEY.match(key)
    return None if match is None else (match.group("point"), int(match.group("teacher")))


def resolve_fusion(fusion, num_teachers):
    """Checks a `fusion` argument and returns it as `"learned"`, `"average"` or a list.

    Args:
        fusion: `"learned"`, `"average"`, or a sequence of `num_teachers` non-negative
            weights that sum to 1.
        num_teachers: M.

    Returns:
        The mode string, or a list of M floats.

    Raises:
        ValueError: for an unknown string, a list of the wrong length, negative or
            non-finite weights, or weights whose sum is not 1.
    """
    message = (f"fusion must be one of {FUSION_MODES} or a list of {num_teachers} weights, "
               f"received {fusion!r}.")
    if isinstance(fusion, str):
        if fusion not in FUSION_MODES:
            raise ValueError(message)
        return fusion
    try:
        weights = [float(w) for w in fusion]
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if len(weights) != num_teachers:
        raise ValueError(
            f"fusion gives {len(weights)} weights for {num_teachers} teachers; give one "
            "weight per teacher.")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"fusion weights must be finite and non-negative, received {weights}.")
    if abs(sum(weights) - 1.0) > 1e-6:
        raise ValueError(f"fusion weights must sum to 1, received {weights} (sum {sum(weights)}).")
    return weights


def fuse(inputs, delta):
    """sum_m delta_m inputs_m (MAD eqs. 7-8) for a list of M tensors and M coefficients."""
    fused = inputs[0] * ops.cast(delta[0], inputs[0].dtype)
    for m in range(1, len(inputs)):
        fused = fused + inputs[m] * ops.cast(delta[m], inputs[m].dtype)
    return fused


@keras.saving.register_keras_serializable(package="kerasbnn")
class TeacherFusion(keras.layers.Layer):
    r"""Fuses M teacher tensors of one shape into delta-weighted sum (MAD eqs. 7-8).

    delta = softmax(s * theta) over the M teachers, where theta is this layer's weight
    `theta` (initialised to 0, so delta starts uniform: MAD does not state the init,
    UNCONFIRMED) and s = `lr_scale`. The forward pass uses s * theta while the backward
    pass treats the product as theta itself, so each optimizer step moves s * theta by s
    times what it would move theta: SGD and Adam alike then train delta with an
    effective learning rate s times the student's (MAD trains everything with one rate,
    s = 1).

    With `mode="average"` delta = 1/M and with a list delta is that list; theta then is
    not trainable and holds log(delta) (so the forward pass is the same softmax).

    Args:
        num_teachers: M >= 1.
        mode: `"learned"`, `"average"` or a list of M weights summing to 1.
        lr_scale: s > 0, the learning-rate multiplier of theta (learned mode only).
        **kwargs: `keras.layers.Layer` arguments (`name`, ...).

    Input shape:
        A list of M tensors of identical shape.

    Output shape:
        The shape of one input.
    """

    def __init__(self, num_teachers, mode="learned", lr_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_teachers, bool) or not isinstance(num_teachers, int) or num_teachers < 1:
            raise ValueError(f"num_teachers must be a positive integer, received {num_teachers!r}.")
        self.num_teachers = num_teachers
        self.mode = resolve_fusion(mode, num_teachers)
        self.lr_scale = check_number("lr_scale", lr_scale, strict=True)
        initial = np.zeros(num_teachers, "float32")
        if self.mode != "learned":  # theta = log(delta), for the same softmax forward pass
            weights = [1.0 / num_teachers] * num_teachers if self.mode == "average" else self.mode
            with np.errstate(divide="ignore"):
                initial = np.log(np.asarray(weights, "float32"))
        self.theta = self.add_weight(name="theta", shape=(num_teachers,), trainable=self.learned,
                                     initializer=keras.initializers.Constant(initial))
        self.built = True

    @property
    def learned(self):
        """True when delta is trained (one teacher: softmax is constantly 1, nothing to learn)."""
        return self.mode == "learned" and self.num_teachers > 1

    def delta(self):
        """delta = softmax(s * theta), a tensor of shape `(num_teachers,)`."""
        theta = ops.convert_to_tensor(self.theta)
        if self.num_teachers == 1:
            return ops.ones_like(theta)
        if self.learned and self.lr_scale != 1.0:
            theta = theta + ops.stop_gradient(theta * (self.lr_scale - 1.0))
        return ops.softmax(theta, axis=-1)

    def call(self, inputs):
        if len(inputs) != self.num_teachers:
            raise ValueError(
                f"TeacherFusion was built for {self.num_teachers} teachers, received "
                f"{len(inputs)} tensors.")
        return fuse(inputs, self.delta())

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "num_teachers": self.num_teachers, "mode": self.mode,
                "lr_scale": self.lr_scale}


def with_delta_optimizer(model, optimizer, delta_optimizer):
    """One optimizer for `compile`: `delta_optimizer` trains the fusion logits theta of
    `model`'s learned fusions (`model.fusions`, e.g. a `MultiTeacherDistiller`'s), `optimizer`
    every other variable.

    It is a `keras.optimizers.MultiOptimizer` whose `OptimizerMap` sends the thetas' variable
    paths (one pattern) to `delta_optimizer`: it saves and loads with the model, and Keras'
    own training step applies it. With `keras.optimizers.SGD(rate)` a step changes theta by
    -rate x its gradient, so delta moves as far as the distillation terms pull it (under Adam
    a step moves theta by about the rate whatever the gradient). The fusions' `lr_scale`
    multiplies theta in the forward pass whatever the optimizer; keep it at 1 with SGD, so
    that `rate` alone sets the step.

    Args:
        model: a model with a `fusions` dict of `TeacherFusion` layers.
        optimizer: the optimizer of everything else (an instance or identifier).
        delta_optimizer: the optimizer of theta (an instance or identifier).

    Returns:
        A `keras.optimizers.MultiOptimizer`, or `optimizer` itself when no fusion is learned.

    Example:
    ```python
    distiller = MultiTeacherDistiller(student, teachers)
    distiller.compile(optimizer=with_delta_optimizer(
        distiller, keras.optimizers.Adam(2e-3), keras.optimizers.SGD(1.0)))
    ```
    """
    optimizer = keras.optimizers.get(optimizer)
    paths = [f.theta.path for f in getattr(model, "fusions", {}).values() if f.learned]
    if not paths:
        return optimizer
    pattern = "|".join(re.escape(path) for path in paths)
    return keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(
        optimizer, {pattern: keras.optimizers.get(delta_optimizer)}))
