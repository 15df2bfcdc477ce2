r"""PKKD: kernel-based progressive distillation of a CNN into an adder network.

The teacher is a CNN with the student's architecture (`adder_resnet20(layer="conv")`), trained
from scratch at the same time as the adder student (the "progressive teacher", P). At the
distilled layers m (by default the last adder/conv layer of every stage, before its BN) both
outputs go through a kernel (K) and a linear 1x1 transform r before an L2 distance:

    h(Y_c) = exp(-Y_c / (2 sigma_c^2))      (CNN, PKKD eq. 7: a Gaussian-type kernel)
    g(Y_a) = exp( Y_a / sigma_a)            (ANN, eq. 6: Y_a = -sum |x - f|, a Laplace kernel)
    L_m   = mean (r_a(g(Y_a^m)) - r_c(h(sg Y_c^m)))^2

and per batch (sg = stop-gradient; the CNN is not pulled towards the ANN):

    L_a = CE(y_a, y) + kl_weight * tau^2 KL(softmax(sg y_c / tau) || softmax(y_a / tau))
          + feature_weight * sum_m L_m
    L_c = CE(y_c, y) + teacher_kl_weight * tau^2 KL(softmax(sg y_a / tau) || softmax(y_c / tau))

One optimizer minimises L_a + L_c: the stop-gradients make it the same as updating the ANN
with L_a and the CNN with L_c. UNCONFIRMED in the paper and therefore arguments: sigma_a,
sigma_c, the kernel normalisation, which branches get r, tau, the weights, the layers.

`sigma="auto"` (the default) is our numerically safe reading: per channel, the batch mean mu
and standard deviation std of Y (stop-gradient) give exp(-(Y_c - mu) / std) and
exp((Y_a - mu) / std), i.e. 2 sigma_c^2 = std and sigma_a = std with the exponent centred.
Centring multiplies each channel by a constant, which the following 1x1 transform absorbs;
without it exp(-Y_c / 2) of a raw conv output overflows float32 and exp(Y_a) of an adder
output (a sum of hundreds of |x - f|) underflows to 0. Exponents are clipped to
[-`max_exponent`, `max_exponent`] as a float32 guard.

`transform="student"` (the default) puts r only on the ANN branch: with a learned r on both
branches, r_a = r_c = 0 minimises L_m trivially. `"both"` is available for the paper's reading.

References:
    Xu et al., "Kernel Based Progressive Distillation for Adder Neural Networks", NeurIPS 2020,
    arXiv:2009.13044 (and its supplementary material).
    Chen et al., "AdderNet", CVPR 2020, arXiv:1912.13200.
"""

import re

import keras
from keras import ops

from kerasbnn.distill.base import check_number, feature_extractor, replica_share
from kerasbnn.distill.losses import LogitsDistillation, cross_entropy

__all__ = [
    "PKKDDistiller",
    "kernel_student",
    "kernel_teacher",
    "pkkd_layers",
]

TRANSFORMS = ("student", "both", "none")
_DISTILLED = re.compile(r"stage(\d+)_block(\d+)_conv2")


def _exponent(z, max_exponent):
    return ops.exp(ops.clip(z, -max_exponent, max_exponent))


def _auto_stats(y):
    axes = tuple(range(len(y.shape) - 1))
    mean = ops.stop_gradient(ops.mean(y, axis=axes, keepdims=True))
    std = ops.stop_gradient(ops.sqrt(ops.var(y, axis=axes, keepdims=True)) + 1e-6)
    return mean, std


def kernel_teacher(y, sigma="auto", max_exponent=30.0):
    r"""CNN kernel h(Y_c) = exp(-Y_c / (2 sigma^2)) (PKKD eq. 7).

    Args:
        y: pre-BN conv output `(batch, rows, cols, channels)`.
        sigma: positive float, or `"auto"`: exp(-(Y - mu) / std) with per-channel batch
            statistics (stop-gradient).
        max_exponent: the exponent is clipped to [-max_exponent, max_exponent].

    Returns:
        Tensor of `y`'s shape.
    """
    if sigma == "auto":
        mean, std = _auto_stats(y)
        return _exponent(-(y - mean) / std, max_exponent)
    return _exponent(-y / (2.0 * float(sigma) ** 2), max_exponent)


def kernel_student(y, sigma="auto", max_exponent=30.0):
    r"""ANN kernel g(Y_a) = exp(Y_a / sigma) (PKKD eq. 6; Y_a = -sum |x - f| <= 0).

    Args:
        y: pre-BN adder output.
        sigma: positive float, or `"auto"`: exp((Y - mu) / std), per-channel batch statistics.
        max_exponent: the exponent is clipped to [-max_exponent, max_exponent].

    Returns:
        Tensor of `y`'s shape.
    """
    if sigma == "auto":
        mean, std = _auto_stats(y)
        return _exponent((y - mean) / std, max_exponent)
    return _exponent(y / float(sigma), max_exponent)


def pkkd_layers(model):
    """Default distilled layers: the last `stage<s>_block<b>_conv2` of every stage.

    Args:
        model: an `adder_resnet20` (either layer kind) or a model with the same names.

    Returns:
        A list of layer names, one per stage.

    Raises:
        ValueError: if the model has no such layers.
    """
    last = {}
    for layer in model.layers:
        match = _DISTILLED.fullmatch(layer.name)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            if block >= last.get(stage, (0, None))[0]:
                last[stage] = (block, layer.name)
    if not last:
        raise ValueError(
            f"Model {model.name!r} has no layers named stage<s>_block<b>_conv2; pass the "
            "distilled layer names explicitly (feature_taps=[...])."
        )
    return [last[s][1] for s in sorted(last)]


def _check_sigma(name, sigma):
    if sigma == "auto":
        return sigma
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise ValueError(f"{name} must be a positive number or 'auto', received {sigma!r}.")
    return float(sigma)


class PKKDDistiller(keras.Model):
    r"""Trains an adder student and its CNN teacher together with PKKD's losses.

    `fit(dataset)` updates both networks (with `progressive_teacher=False` the teacher is a
    frozen, pre-trained CNN: the paper's "NP" ablation); `evaluate` and the compiled metrics
    report the student. The student (`distiller.student`) is the artefact to save; the
    distiller itself is training-only and not serializable.

    Logged: `loss` (L_a + L_c), `student_loss` (CE of the student), `distillation_loss`
    (the student's KD and weighted feature terms), `feature_loss` (sum_m L_m),
    `teacher_loss` (L_c), `teacher_accuracy`, and the compiled metrics of the student.

    Args:
        student: adder network (functional, logits output), e.g. `adder_resnet20()`.
        teacher: CNN of the same architecture, e.g. `adder_resnet20(layer="conv")`.
        feature_taps: names of the distilled layers (present in both), or `"auto"`
            (`pkkd_layers(student)`).
        sigma_student: sigma_a of g, a positive float or `"auto"`.
        sigma_teacher: sigma_c of h, a positive float or `"auto"`.
        kernel: apply the kernels (K); False compares r_a(Y_a) with r_c(Y_c) directly (NK).
        transform: 1x1 linear transforms on `"student"`, `"both"` branches or `"none"`.
        feature_weight: lambda of the feature term (unpublished; 1 by default). The kernel term
            starts two orders of magnitude above the CE: on Fashion-MNIST with 3 epochs,
            lambda = 1 cost the student 19 points against the adder network alone (README,
            "Measured"), so sweep it at short budgets.
        kl_weight: weight of the student's soft-logit term.
        teacher_kl_weight: weight of the teacher's soft-logit term towards the student.
        temperature: tau of both soft terms (scaled by tau^2).
        progressive_teacher: train the teacher together with the student (P) or keep it
            frozen (NP).
        max_exponent: float32 guard on the kernels' exponents.
        name: model name.

    Raises:
        ValueError: for a bad sigma, weight, temperature or transform, a layer missing from
            either network, distilled features of different shapes, or different logits.

    Example:
    ```python
    student = kerasbnn.models.adder_resnet20((28, 28, 1), 10)
    teacher = kerasbnn.models.adder_resnet20((28, 28, 1), 10, layer="conv")
    distiller = PKKDDistiller(student, teacher)
    distiller.compile(keras.optimizers.SGD(0.05, momentum=0.9), metrics=["accuracy"])
    distiller.fit(train_ds, epochs=2)
    distiller.student.save("adder.keras")
    ```
    """

    def __init__(
        self,
        student,
        teacher,
        feature_taps="auto",
        *,
        sigma_student="auto",
        sigma_teacher="auto",
        kernel=True,
        transform="student",
        feature_weight=1.0,
        kl_weight=1.0,
        teacher_kl_weight=0.0,
        temperature=1.0,
        progressive_teacher=True,
        max_exponent=30.0,
        name="pkkd_distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, received {transform!r}.")
        self.sigma_student = _check_sigma("sigma_student", sigma_student)
        self.sigma_teacher = _check_sigma("sigma_teacher", sigma_teacher)
        self.feature_weight = check_number("feature_weight", feature_weight)
        self.kl_weight = check_number("kl_weight", kl_weight)
        self.teacher_kl_weight = check_number("teacher_kl_weight", teacher_kl_weight)
        if not (isinstance(max_exponent, (int, float)) and max_exponent > 0):
            raise ValueError(f"max_exponent must be positive, received {max_exponent!r}.")
        self.max_exponent = float(max_exponent)
        self.kd = LogitsDistillation(temperature=temperature, scale_by_temperature_squared=True)
        self.kernel = bool(kernel)
        self.transform = transform
        self.progressive_teacher = bool(progressive_teacher)
        self.student = student
        self.teacher = teacher
        if not self.progressive_teacher:
            teacher.trainable = False
        self.feature_taps = list(pkkd_layers(student) if feature_taps == "auto" else feature_taps)
        if not self.feature_taps:
            raise ValueError("feature_taps must name at least one distilled layer.")
        s_out, t_out = tuple(student.outputs[0].shape[1:]), tuple(teacher.outputs[0].shape[1:])
        if s_out != t_out:
            raise ValueError(f"Student logits {s_out} and teacher logits {t_out} differ.")
        self.student_extractor = feature_extractor(student, self.feature_taps)
        self.teacher_extractor = feature_extractor(teacher, self.feature_taps)
        shapes = []
        for name in self.feature_taps:
            s_shape = tuple(student.get_layer(name).output.shape[1:])
            t_shape = tuple(teacher.get_layer(name).output.shape[1:])
            if s_shape != t_shape:
                raise ValueError(
                    f"Distilled layer {name!r} has student shape {s_shape} and teacher shape "
                    f"{t_shape}; PKKD needs the same architecture on both sides."
                )
            shapes.append(s_shape)
        self.student_transforms = [
            keras.layers.Conv2D(shape[-1], 1, name=f"pkkd_student_transform_{i}") if transform != "none" else None
            for i, shape in enumerate(shapes)
        ]
        self.teacher_transforms = [
            keras.layers.Conv2D(shape[-1], 1, name=f"pkkd_teacher_transform_{i}") if transform == "both" else None
            for i, shape in enumerate(shapes)
        ]
        for layer, shape in zip([*self.student_transforms, *self.teacher_transforms], shapes + shapes):
            if layer is not None:
                layer.build((None, *shape))
        self.trackers = {
            key: keras.metrics.Mean(name=key)
            for key in ("student_loss", "distillation_loss", "feature_loss", "teacher_loss")
        }
        self.teacher_accuracy = keras.metrics.SparseCategoricalAccuracy(name="teacher_accuracy")

    def call(self, inputs, training=None):
        student = self.student_extractor(inputs, training=training)
        teacher_training = training if self.progressive_teacher else False
        teacher = self.teacher_extractor(inputs, training=teacher_training)
        student, teacher = (
            {"logits": outputs["logits"], "features": [outputs[n] for n in self.feature_taps]}
            for outputs in (student, teacher)
        )
        return {"logits": student["logits"], "student": student, "teacher": teacher}

    def kernel_features(self, student_features, teacher_features):
        """`(r_a(g(Y_a^m)), r_c(h(sg Y_c^m)))` for every distilled layer m."""
        pairs = []
        for y_a, y_c, r_a, r_c in zip(
            student_features, teacher_features, self.student_transforms, self.teacher_transforms
        ):
            y_c = ops.stop_gradient(y_c)
            if self.kernel:
                y_a = kernel_student(y_a, self.sigma_student, self.max_exponent)
                y_c = kernel_teacher(y_c, self.sigma_teacher, self.max_exponent)
            pairs.append((y_a if r_a is None else r_a(y_a), y_c if r_c is None else r_c(y_c)))
        return pairs

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y_pred is None:
            y_pred = self(x, training=training)
        z_a, z_c = y_pred["student"]["logits"], y_pred["teacher"]["logits"]
        student_ce = cross_entropy(y, z_a, sample_weight)
        feature = sum(
            ops.mean(ops.square(a - c))
            for a, c in self.kernel_features(y_pred["student"]["features"], y_pred["teacher"]["features"])
        )
        distillation = self.feature_weight * feature
        if self.kl_weight:
            soft = self.kd.compute_loss(ops.stop_gradient(z_c), z_a, sample_weight=sample_weight)
            distillation = distillation + self.kl_weight * soft
        total = student_ce + distillation
        teacher_loss = ops.zeros_like(total)
        if self.progressive_teacher:
            teacher_loss = cross_entropy(y, z_c, sample_weight)
            if self.teacher_kl_weight:
                soft = self.kd.compute_loss(ops.stop_gradient(z_a), z_c, sample_weight=sample_weight)
                teacher_loss = teacher_loss + self.teacher_kl_weight * soft
            total = total + teacher_loss
        for key, value in (
            ("student_loss", student_ce),
            ("distillation_loss", distillation),
            ("feature_loss", feature),
            ("teacher_loss", teacher_loss),
        ):
            self.trackers[key].update_state(value)
        self.teacher_accuracy.update_state(y, z_c, sample_weight=sample_weight)
        return replica_share(total)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, y_pred["logits"], sample_weight=sample_weight)

    @property
    def metrics(self):
        return [*super().metrics, *self.trackers.values(), self.teacher_accuracy]
