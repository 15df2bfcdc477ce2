r"""Distillation losses of multi-bit adaptive distillation (MAD), as Keras `DistillationLoss`es.

Both losses subclass the public `keras.distillation.DistillationLoss`, so they work in
`kerasbnn.distill.MultiTeacherDistiller` and in Keras' own single-teacher
`keras.distillation.Distiller` alike.

References:
    Nie, Han, Wang, "Multi-bit Adaptive Distillation for Binary Neural Networks",
    BMVC 2021 (equations (6) and (9)-(11)).
"""

import keras
from keras import ops

from kerasbnn.distill.checks import check_choice, check_number

__all__ = [
    "ConfigurableLoss", "FEATURE_REDUCTIONS", "FeatureDistillation", "LogitsDistillation",
    "kl_divergence_with_logits", "smooth_l1"]

FEATURE_REDUCTIONS = ("mean", "sum")


def kl_divergence_with_logits(teacher_logits, student_logits, temperature=1.0):
    r"""Per-example KL(softmax(y_t / T) || softmax(y_s / T)) (MAD eq. 6).

    KL(p || q) = \sum_j p_j (log p_j - log q_j), computed from log-softmax so that
    large logits neither overflow nor produce log(0).

    Args:
        teacher_logits: tensor `(batch, classes)`.
        student_logits: tensor `(batch, classes)`.
        temperature: T > 0 that softens both distributions.

    Returns:
        Tensor `(batch,)`.
    """
    log_p = ops.log_softmax(ops.divide(teacher_logits, temperature), axis=-1)
    log_q = ops.log_softmax(ops.divide(student_logits, temperature), axis=-1)
    return ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)


def smooth_l1(x):
    r"""Element-wise smooth L1 (MAD eq. 11): 0.5 x^2 if |x| < 1 else |x| - 0.5."""
    ax = ops.abs(x)
    return ops.where(ops.less(ax, 1.0), 0.5 * ops.square(x), ax - 0.5)


def weighted_batch_mean(per_example, sample_weight):
    """sum_b w_b l_b / batch, Keras' `sum_over_batch_size` reduction (no replica scaling)."""
    if sample_weight is None:
        return ops.mean(per_example)
    sample_weight = ops.cast(ops.reshape(sample_weight, (-1,)), per_example.dtype)
    return ops.mean(per_example * sample_weight)


def cross_entropy(labels, logits, sample_weight=None):
    """Batch mean of CE(softmax(logits), integer labels), without Keras' replica scaling.

    Keras' loss objects already divide by the replicas in sync under `tf.distribute`; the
    distillers compute every term unscaled and scale their total once
    (`kerasbnn.distill.base.replica_share`).
    """
    per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return weighted_batch_mean(per_example, sample_weight)


class ConfigurableLoss(keras.distillation.DistillationLoss):
    """A `DistillationLoss` whose config is its attributes named in `CONFIG`."""

    CONFIG = ()

    def get_config(self):
        return {key: getattr(self, key) for key in self.CONFIG}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="kerasbnn")
class LogitsDistillation(ConfigurableLoss):
    r"""KL divergence between softened teacher and student logits (MAD eq. 6).

    L_KL = mean_b KL(softmax(y^t_b / T) || softmax(y^s_b / T)), optionally times T^2.
    MAD writes no T^2 factor and does not state T: the default T = 1 without T^2 follows
    the paper's equations (UNCONFIRMED choice, see METHODS.md section 3); Hinton's T^2
    scaling is opt-in. Unlike `keras.distillation.LogitsDistillation`, both inputs must
    be logits (no softmax at the end of either model), and per-example `sample_weight`s
    are honoured.

    Args:
        temperature: T > 0.
        scale_by_temperature_squared: multiply the loss by T^2 (Hinton et al., 2015) so
            that its gradient keeps its size when T changes.

    Raises:
        ValueError: if `temperature` is not a positive finite number.

    Example:
    ```python
    distiller = keras.distillation.Distiller(
        teacher, student, distillation_losses=LogitsDistillation(temperature=4.0))
    ```
    """

    CONFIG = ("temperature", "scale_by_temperature_squared")

    def __init__(self, temperature=1.0, scale_by_temperature_squared=False):
        self.temperature = check_number("temperature", temperature, strict=True)
        self.scale_by_temperature_squared = bool(scale_by_temperature_squared)

    def validate_outputs(self, teacher_outputs, student_outputs):
        """Checks that both are single `(batch, classes)` tensors with the same classes.

        Raises:
            ValueError: if either is a structure, not rank 2, or the class counts differ.
        """
        for role, value in (("teacher", teacher_outputs), ("student", student_outputs)):
            if isinstance(value, (list, tuple, dict)):
                raise ValueError(
                    f"LogitsDistillation needs one logits tensor from the {role}, received a "
                    f"{type(value).__name__}; give a single-output model.")
            if len(value.shape) != 2:
                raise ValueError(
                    f"LogitsDistillation needs {role} logits of shape (batch, classes), "
                    f"received shape {tuple(value.shape)}.")
        if teacher_outputs.shape[-1] != student_outputs.shape[-1]:
            raise ValueError(
                f"Teacher and student logits have different class counts: "
                f"{teacher_outputs.shape[-1]} and {student_outputs.shape[-1]}.")

    def validate_model_compatibility(self, teacher, student):
        """Rejects models whose last layer applies a softmax (the loss needs logits).

        Raises:
            ValueError: naming the model whose output is a probability.
        """
        for role, model in (("teacher", teacher), ("student", student)):
            if ends_with_softmax(model):
                raise ValueError(
                    f"The {role} {model.name!r} ends with a softmax; LogitsDistillation needs "
                    "logits. Build the model with a linear last layer.")

    def compute_loss(self, teacher_outputs, student_outputs, sample_weight=None, **kwargs):
        """Scalar L_KL of teacher (or fused teacher) and student logits `(batch, classes)`:
        the batch mean of w_b * KL_b with optional `(batch,)` weights; `kwargs` are ignored."""
        per_example = kl_divergence_with_logits(teacher_outputs, student_outputs, self.temperature)
        loss = weighted_batch_mean(per_example, sample_weight)
        if self.scale_by_temperature_squared:
            loss = loss * (self.temperature**2)
        return loss


@keras.saving.register_keras_serializable(package="kerasbnn")
class FeatureDistillation(ConfigurableLoss):
    r"""Smooth-L1 distance between a teacher feature and a student feature (MAD eqs. 9-11).

    L_Dis,i = reduce_{x in A_i} smoothL1(x), A_i = F_i^t - r_i(F_i^s). In
    `MultiTeacherDistiller` F_i^t is the fused teacher feature and r_i the 1x1 adapter;
    in `keras.distillation.Distiller` both features come straight from the named layers
    and must have equal shapes. The paper sums over the elements of a feature map; its
    batch/element reduction is UNCONFIRMED, so it is an argument:

    - `"mean"` (default): mean over every element and the batch (PyTorch SmoothL1Loss).
    - `"sum"`: sum over the elements of each example's feature map (the literal eq. 9),
      averaged over the batch.

    Args:
        teacher_layer_name: layer of the teacher whose output is distilled (None: the
            model output). Used by `keras.distillation.Distiller`.
        student_layer_name: layer of the student matched to it (None: the model output).
        reduction: `"mean"` or `"sum"`, see above.

    Raises:
        ValueError: for an unknown `reduction`, or (in `validate_model_compatibility`) a
            layer name the model does not have.
    """

    CONFIG = ("teacher_layer_name", "student_layer_name", "reduction")

    def __init__(self, teacher_layer_name=None, student_layer_name=None, reduction="mean"):
        check_choice("reduction", reduction, FEATURE_REDUCTIONS)
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        self.reduction = reduction

    def validate_model_compatibility(self, teacher, student):
        """Checks that the named layers exist and that their outputs have equal shapes.

        Raises:
            ValueError: naming the missing layer, or both shapes when they differ.
        """
        shapes = {}
        for role, model, name in (("teacher", teacher, self.teacher_layer_name),
                                  ("student", student, self.student_layer_name)):
            if name is None:
                shapes[role] = tuple(model.outputs[0].shape) if model.outputs else None
            else:
                shapes[role] = tuple(layer_output(model, name, role).shape)
        if None not in shapes.values() and shapes["teacher"][1:] != shapes["student"][1:]:
            raise ValueError(
                f"FeatureDistillation compares features of equal shape, received teacher "
                f"{shapes['teacher']} and student {shapes['student']}; use "
                "kerasbnn.distill.MultiTeacherDistiller, whose 1x1 adapters map the student's "
                "channels.")

    def validate_outputs(self, teacher_outputs, student_outputs):
        """Raises ValueError unless both are single tensors of the same shape."""
        if any(isinstance(v, (list, tuple, dict)) for v in (teacher_outputs, student_outputs)):
            raise ValueError("FeatureDistillation compares one tensor with one tensor.")
        if tuple(teacher_outputs.shape[1:]) != tuple(student_outputs.shape[1:]):
            raise ValueError(
                f"FeatureDistillation needs equal feature shapes, received teacher "
                f"{tuple(teacher_outputs.shape)} and student {tuple(student_outputs.shape)}.")

    def compute_loss(self, teacher_outputs, student_outputs, sample_weight=None, **kwargs):
        """Scalar smooth-L1 loss between a teacher feature `(batch, ...)` and the student's
        (after its adapter) of the same shape, with optional `(batch,)` weights; `kwargs` are
        ignored."""
        per_element = smooth_l1(ops.subtract(teacher_outputs, student_outputs))
        axes = tuple(range(1, len(per_element.shape)))
        reduce = ops.mean if self.reduction == "mean" else ops.sum
        per_example = reduce(per_element, axis=axes) if axes else per_element
        return weighted_batch_mean(per_example, sample_weight)


def ends_with_softmax(model):
    """True when a model's (single) output comes from a softmax layer or activation."""
    outputs = getattr(model, "outputs", None)
    if not outputs or len(outputs) != 1:
        return False
    for layer in reversed(model.layers):
        try:
            produced = layer.output
        except (AttributeError, ValueError):  # unbuilt or shared layer
            continue
        if produced is outputs[0]:
            if isinstance(layer, keras.layers.Softmax):
                return True
            activation = getattr(layer, "activation", None)
            return getattr(activation, "__name__", "") == "softmax"
    return False


def layer_output(model, name, role="model"):
    """Symbolic output of layer `name` of a functional model, with a clear error.

    Raises:
        ValueError: if the model has no such layer (the message lists a few that exist)
            or is not functional.
    """
    if not getattr(model, "inputs", None):
        raise ValueError(
            f"The {role} {model.name!r} has no symbolic inputs (a subclassed model): feature "
            "taps need a functional or Sequential model; use feature_taps=None for logits only.")
    names = [layer.name for layer in model.layers]
    if name not in names:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise ValueError(
            f"The {role} {model.name!r} has no layer named {name!r}. Its layers: {shown}.")
    return model.get_layer(name).output
