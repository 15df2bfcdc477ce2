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

`sigma="auto"` (the default) is our numerically safe reading: per channel, a standard
deviation std of Y and an offset c (both stop-gradient) give exp(-(Y_c - c) / std) and
exp((Y_a - c) / std), i.e. 2 sigma_c^2 = std and sigma_a = std with the exponent shifted.
`PKKDDistiller` takes c and std from running estimates (`KernelStatistics`, like
BatchNormalization's moving statistics): in training, every example's target uses the
estimates of the batches before, so it depends neither on the other examples of its batch
nor on how many replicas share the batch; then the estimates move towards this (global)
batch's statistics with `kernel_momentum`. The standalone `kernel_student` and
`kernel_teacher` use the batch's own statistics unless given others.
Shifting multiplies each channel by a constant, which the following 1x1 transform absorbs;
without it exp(-Y_c / 2) of a raw conv output overflows float32 and exp(Y_a) of an adder
output (a sum of hundreds of |x - f|) underflows to 0. `kernel_offset` picks c:

- `"max"`: the channel's largest exponent, so every kernel value lies in (0, 1], the range of
  the paper's kernels as similarities (the Laplace kernel exp(Y_a / sigma_a) of eq. 6, with
  Y_a = -sum |x - f| <= 0, never exceeds 1), and L_m stays bounded;
- `"mean"`: the channel's batch mean (our first reading): a value k standard deviations
  beyond the mean becomes e^k, so one heavy-tailed channel can dominate the loss (measured:
  sum_m L_m averaged 168 to 572,354 over the first epoch across five seeds of
  `benchmarks/pkkd_accuracy.py`, and the students of the largest collapsed).

Exponents are clipped to [-`max_exponent`, `max_exponent`] as a float32 guard.

`transform="student"` (the default) puts r only on the ANN branch: with a learned r on both
branches, r_a = r_c = 0 minimises L_m trivially. `"both"` is available for the paper's reading.

References:
    Xu et al., "Kernel Based Progressive Distillation for Adder Neural Networks", NeurIPS 2020,
    arXiv:2009.13044 (and its supplementary material).
    Chen et al., "AdderNet", CVPR 2020, arXiv:1912.13200.
"""

import re

import keras
import tensorflow as tf  # cross-replica reductions of the kernel statistics
from keras import ops

from kerasbnn.distill.base import TeacherStudent, adapter, arguments, check_choice, check_number
from kerasbnn.distill.losses import LogitsDistillation, cross_entropy
from kerasbnn.renames import renamed

__all__ = ["KernelStatistics", "PKKDDistiller", "batch_statistics", "kernel_student",
           "kernel_teacher", "pkkd_layers"]

TRANSFORMS = ("student", "both", "none")
KERNEL_OFFSETS = ("max", "mean")
_DISTILLED = re.compile(r"stage(\d+)_block(\d+)_conv2")


def _all_replicas(value, reduce):
    """`value` reduced over the replicas in sync (`"sum"` or `"max"`), itself on one."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    if reduce == "sum":
        return context.all_reduce(tf.distribute.ReduceOp.SUM, value)
    return ops.max(context.all_gather(value[None], axis=0), axis=0)


def batch_statistics(z, offset="max"):
    """Per-channel `(c, std)` of `z` `(..., channels)` over the whole global batch (every
    replica's examples under `tf.distribute`), stop-gradient: c is the channel's maximum
    (`offset="max"`) or mean, std its standard deviation + 1e-6; each of shape `(channels,)`."""
    z = ops.stop_gradient(z)
    axes = tuple(range(len(z.shape) - 1))
    count = _all_replicas(ops.cast(ops.size(z), z.dtype) / z.shape[-1], "sum")
    mean = _all_replicas(ops.sum(z, axis=axes), "sum") / count
    variance = _all_replicas(ops.sum(ops.square(z - mean), axis=axes), "sum") / count
    centre = _all_replicas(ops.max(z, axis=axes), "max") if offset == "max" else mean
    return centre, ops.sqrt(variance) + 1e-6


def _kernel(z, scale, max_exponent, offset, statistics):
    """exp(z / scale), or with `scale="auto"` exp((z - c) / std), `(c, std) = statistics` or
    `batch_statistics(z, offset)`; the exponent clipped to [-max_exponent, max_exponent]."""
    if scale == "auto":
        centre, scale = batch_statistics(z, offset) if statistics is None else statistics
        z = z - centre
    return ops.exp(ops.clip(z / scale, -max_exponent, max_exponent))


def kernel_teacher(y, sigma="auto", max_exponent=30.0, offset="max", statistics=None):
    r"""CNN kernel h(Y_c) = exp(-Y_c / (2 sigma^2)) (PKKD eq. 7) of the pre-BN conv output `y`
    `(batch, rows, cols, channels)`, same shape. `sigma`: a positive float, or `"auto"`:
    exp(-(Y - c) / std) with per-channel statistics of -Y: `statistics` `(c, std)` when given
    (`KernelStatistics`), else the batch's (`batch_statistics(-y, offset)`: c the channel's
    largest exponent with `offset="max"`, so values lie in (0, 1], or its mean with
    `"mean"`). The exponent is clipped to [-max_exponent, max_exponent]."""
    scale = sigma if sigma == "auto" else 2.0 * float(sigma) ** 2
    return _kernel(-y, scale, max_exponent, offset, statistics)


def kernel_student(y, sigma="auto", max_exponent=30.0, offset="max", statistics=None):
    r"""ANN kernel g(Y_a) = exp(Y_a / sigma) (PKKD eq. 6; Y_a = -sum |x - f| <= 0) of a pre-BN
    adder output `y`; `sigma`, `max_exponent`, `offset` and `statistics` as in
    `kernel_teacher` (`"auto"`: exp((Y - c) / std), statistics of Y)."""
    return _kernel(y, sigma if sigma == "auto" else float(sigma), max_exponent, offset,
                   statistics)


@keras.saving.register_keras_serializable(package="kerasbnn")
class KernelStatistics(keras.layers.Layer):
    r"""Running per-channel offset c and scale std of a kernel's exponent (PKKD, `sigma="auto"`).

    Like BatchNormalization's moving statistics, two non-trainable variables of shape
    `(channels,)`: `moving_centre` and `moving_scale`. Called on an exponent z `(..., channels)`
    it returns the `(c, std)` the kernel uses: the running values, as they were before this
    call. With `training=True` it then moves them towards this batch's statistics
    (`batch_statistics`, over every replica's examples):
    m <- momentum m + (1 - momentum) b. So an example's kernel depends on the batches before
    its own, not on the other examples of its batch, nor on the number of replicas. Before the
    first training batch (`moving_scale` 0) there is no estimate: that batch's own statistics
    are used and become the running ones.

    Args:
        offset: `"max"` or `"mean"` (`batch_statistics`).
        momentum: in [0, 1); 0 uses the last batch's statistics.
        **kwargs: `keras.layers.Layer` arguments.
    """

    def __init__(self, offset="max", momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        self.offset = check_choice("offset", offset, KERNEL_OFFSETS)
        self.momentum = _momentum(momentum)

    def build(self, input_shape):
        for name in ("moving_centre", "moving_scale"):
            setattr(self, name, self.add_weight(
                shape=(input_shape[-1],), initializer="zeros", trainable=False, name=name,
                aggregation="mean"))

    def call(self, z, training=False):
        centre = ops.convert_to_tensor(self.moving_centre)
        scale = ops.convert_to_tensor(self.moving_scale)
        batch_centre, batch_scale = batch_statistics(z, self.offset)
        started = scale > 0
        centre = ops.where(started, centre, batch_centre)
        scale = ops.where(started, scale, batch_scale)
        if training:
            m = self.momentum
            self.moving_centre.assign(m * centre + (1.0 - m) * batch_centre)
            self.moving_scale.assign(m * scale + (1.0 - m) * batch_scale)
        return centre, scale

    def compute_output_spec(self, z, training=False):
        spec = keras.KerasTensor((z.shape[-1],), dtype=z.dtype)
        return spec, spec

    def get_config(self):
        return {**super().get_config(), "offset": self.offset, "momentum": self.momentum}


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
            "distilled layer names explicitly (feature_taps=[...]).")
    return [last[s][1] for s in sorted(last)]


def _momentum(value):
    """`value` checked to lie in [0, 1) (`KernelStatistics`' momentum)."""
    value = check_number("kernel_momentum", value)
    if not value < 1.0:
        raise ValueError(f"kernel_momentum must be in [0, 1), received {value!r}: at 1 the "
                         "running statistics never leave their first batch's.")
    return value


def _statistics(shape, offset, momentum, name):
    """A built `KernelStatistics` for features of `shape` (`(batch, ..., channels)`)."""
    layer = KernelStatistics(offset, momentum, name=name)
    layer.build(shape)
    return layer


@keras.saving.register_keras_serializable(package="kerasbnn")
@renamed(layers="feature_taps", kd_weight="kl_weight", teacher_kd_weight="teacher_kl_weight")
class PKKDDistiller(TeacherStudent):
    r"""Trains an adder student and its CNN teacher together with PKKD's losses.

    `fit(dataset)` updates both networks (with `progressive_teacher=False` the teacher is a
    frozen, pre-trained CNN: the paper's "NP" ablation); `evaluate` and the compiled metrics
    report the student. The student (`distiller.student`) is the artefact to save.

    Logged: `loss` (L_a + L_c), `student_loss` (CE of the student), `kl_loss`, `feature_loss`
    (sum_m L_m), `teacher_loss` (the teacher's CE), `teacher_kl_loss` (when its weight is
    set), `distillation_loss` (the weighted KL and feature terms), `total_loss`,
    `teacher_accuracy`, and the compiled metrics of the student.

    Args:
        student: adder network (functional, logits output), e.g. `adder_resnet20()`.
        teacher: CNN of the same architecture, e.g. `adder_resnet20(layer="conv")`.
        feature_taps: names of the distilled layers (present in both), or `"auto"`
            (`auto_taps`: `pkkd_layers(student)`).
        sigma_student: sigma_a of g, a positive float or `"auto"`.
        sigma_teacher: sigma_c of h, a positive float or `"auto"`.
        kernel_offset: under `"auto"` sigmas, the per-channel offset of the exponents:
            `"max"` (kernel values in (0, 1], a bounded feature term) or `"mean"` (module
            docstring).
        kernel_momentum: under `"auto"` sigmas, the momentum of the running offset and
            scale (`KernelStatistics`, one per distilled layer and branch), in [0, 1): 0.9
            averages over about the last ten batches, so the estimates follow the adder
            outputs as they grow while training (a choice, not validated; BatchNorm uses
            0.99). With running values, an offset of `"max"` keeps the kernels near (0, 1]
            rather than exactly in it.
        kernel: apply the kernels (K); False compares r_a(Y_a) with r_c(Y_c) directly (NK).
        transform: 1x1 linear transforms on `"student"`, `"both"` branches or `"none"`.
        feature_weight: lambda of the feature term (unpublished in the paper). 10 by default,
            with `kernel_offset="max"`: on a validation split carved from Fashion-MNIST's
            training images (`benchmarks/pkkd_accuracy.py`, adder ResNet-20 width 0.5, 3
            epochs, seed 0; docs/benchmarks/pkkd.md) lambda 0.1, 1, 10 and 100 gave 66.8, 67.0,
            74.4 and 35.2%; the `"mean"` offset's best was 70.2% (lambda 0.1, among 0.001-1).
            Those runs took sigma="auto" from each batch's statistics, before the running
            estimates (`kernel_momentum`). Re-choose it on your own validation split.
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

    def __init__(self, student, teacher, feature_taps="auto", *, sigma_student="auto",
                 sigma_teacher="auto", kernel_offset="max", kernel_momentum=0.9, kernel=True,
                 transform="student",
                 feature_weight=10.0, kl_weight=1.0, teacher_kl_weight=0.0, temperature=1.0,
                 progressive_teacher=True, max_exponent=30.0, name="pkkd_distiller", **kwargs):
        config = arguments(locals(), "student", "teacher")
        check_choice("transform", transform, TRANSFORMS)
        check_choice("kernel_offset", kernel_offset, KERNEL_OFFSETS)
        _momentum(kernel_momentum)
        self_sigmas = [sigma if sigma == "auto" else check_number(key, sigma, strict=True)
                       for key, sigma in (("sigma_student", sigma_student),
                                           ("sigma_teacher", sigma_teacher))]
        max_exponent = check_number("max_exponent", max_exponent, strict=True)
        taps = list(type(self).auto_taps(student, [teacher]) if feature_taps == "auto"
                    else feature_taps)
        if not taps:
            raise ValueError("feature_taps must name at least one distilled layer.")
        terms = {"student_loss": 1.0, "kl_loss": check_number("kl_weight", kl_weight),
                 "feature_loss": check_number("feature_weight", feature_weight),
                 "teacher_loss": 1.0 if progressive_teacher else 0.0}
        teacher_kl_weight = check_number("teacher_kl_weight", teacher_kl_weight)
        if progressive_teacher and teacher_kl_weight:
            terms["teacher_kl_loss"] = teacher_kl_weight
        super().__init__(student, teacher, terms, student_taps=taps,
                         train_teachers=progressive_teacher, teacher_accuracy=True,
                         config=config, name=name, **kwargs)
        self.feature_taps, self.kernel, self.transform = taps, bool(kernel), transform
        self.sigma_student, self.sigma_teacher = self_sigmas
        self.max_exponent, self.progressive_teacher = max_exponent, bool(progressive_teacher)
        self.kernel_offset = kernel_offset
        self.kd = LogitsDistillation(temperature=temperature, scale_by_temperature_squared=True)
        shapes = [tuple(student.get_layer(tap).output.shape) for tap in taps]
        for tap, shape in zip(taps, shapes):  # the base has checked that both have every tap
            if shape != tuple(teacher.get_layer(tap).output.shape):
                raise ValueError(
                    f"Distilled layer {tap!r} has student shape {shape} and teacher shape "
                    f"{tuple(teacher.get_layer(tap).output.shape)}; PKKD needs the same "
                    "architecture on both sides.")
        self.student_transforms, self.teacher_transforms = (
            [adapter(shape, shape[-1], f"pkkd_{side}_transform_{i}") if on else None
             for i, shape in enumerate(shapes)]
            for side, on in (("student", transform != "none"), ("teacher", transform == "both")))
        self.student_statistics, self.teacher_statistics = (
            [_statistics(shape, kernel_offset, kernel_momentum, f"pkkd_{side}_statistics_{i}")
             if self.kernel and sigma == "auto" else None for i, shape in enumerate(shapes)]
            for side, sigma in (("student", self.sigma_student),
                                ("teacher", self.sigma_teacher)))

    @classmethod
    def auto_taps(cls, student, teachers):
        """`feature_taps="auto"`: `pkkd_layers(student)`, the last adder of every stage."""
        return pkkd_layers(student)

    @property
    def teacher(self):
        """The CNN teacher."""
        return self.teachers[0]

    def call(self, inputs, training=None):
        """The base's outputs (one teacher side) and `"kernel_features"`:
        `kernel_features(..., training)` of the student's and the teacher's features, the
        pairs L_m compares."""
        outputs = super().call(inputs, training=training)
        outputs["kernel_features"] = self.kernel_features(
            outputs["student_features"], [f for (f,) in outputs["teacher_features"]],
            training=training)
        return outputs

    def kernel_features(self, student_features, teacher_features, training=False):
        """`(r_a(g(Y_a^m)), r_c(h(sg Y_c^m)))` for every distilled layer m (eqs. 6-7). Under
        `"auto"` sigmas the kernels use the running statistics as they are; `training=True`
        then updates them with these features (`KernelStatistics`)."""
        pairs = []
        for y_a, y_c, r_a, r_c, s_a, s_c in zip(
            student_features, teacher_features, self.student_transforms,
            self.teacher_transforms, self.student_statistics, self.teacher_statistics
        ):
            y_c = ops.stop_gradient(y_c)
            if self.kernel:
                y_a = kernel_student(
                    y_a, self.sigma_student, self.max_exponent, self.kernel_offset,
                    None if s_a is None else s_a(y_a, training=bool(training)))
                y_c = kernel_teacher(
                    y_c, self.sigma_teacher, self.max_exponent, self.kernel_offset,
                    None if s_c is None else s_c(-y_c, training=bool(training)))
            pairs.append((y_a if r_a is None else r_a(y_a), y_c if r_c is None else r_c(y_c)))
        return pairs

    def loss_terms(self, y, outputs, sample_weight=None):
        r"""L_a's terms CE(y_a, y), tau^2 KL(sg y_c || y_a) and sum_m L_m, and L_c's terms
        CE(y_c, y) and tau^2 KL(sg y_a || y_c) (module docstring)."""
        z_a, (z_c,) = outputs["logits"], outputs["teacher_logits"]
        pairs = outputs["kernel_features"]
        zero = ops.zeros((), z_a.dtype)
        terms = {
            "student_loss": self.supervised_loss(y, z_a, sample_weight),
            "kl_loss": self.kd.compute_loss(
                ops.stop_gradient(z_c), z_a, sample_weight=sample_weight)
            if self.term_weights["kl_loss"] else zero,
            "feature_loss": sum(ops.mean(ops.square(a - c)) for a, c in pairs),
            "teacher_loss": cross_entropy(y, z_c, sample_weight)
            if self.progressive_teacher else zero}
        if "teacher_kl_loss" in self.term_weights:
            terms["teacher_kl_loss"] = self.kd.compute_loss(
                ops.stop_gradient(z_a), z_c, sample_weight=sample_weight)
        return terms
