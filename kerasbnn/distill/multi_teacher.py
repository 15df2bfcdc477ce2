r"""`MultiTeacherDistiller`: multi-bit adaptive distillation (MAD) driven by `model.fit`.

A (binary) student learns from M frozen teachers at once, typically copies of its own
architecture quantized to 32/8/4/2 bits, and learns how much to trust each of them at
every distillation point (Nie, Han, Wang, BMVC 2021, METHODS.md section 3):

- (7) fused logits y^t = sum_m delta_{0,m} y^t_m, delta_{0,.} = softmax(theta_0);
- (8) fused features F_i^t = sum_m delta_{i,m} F_{i,m}, delta_{i,.} = softmax(theta_i);
- (6) L_KL = KL(softmax(y^t / T) || softmax(y^s / T));
- (9)-(11) L_Dis = sum_i smoothL1(F_i^t - r_i(F_i^s)), r_i a 1x1 conv on the student side;
- (12) L = L_CE + alpha L_KL + beta L_Dis, with L_CE = -<y, log softmax(y^s)>; here
  alpha is `kl_weight` and beta `feature_weight` (weights are named after their terms).

The student, the adapters r_i and the fusion logits theta are trained together; the
gradient reaches theta through the fused teacher side of L_KL and L_Dis (eqs. 13-14),
while the teachers only run forward, in inference mode, once per batch.
"""


import keras
import numpy as np
from keras import ops

from kerasbnn.distill.base import (
    TeacherStudent, adapter, arguments, check_choice, check_models, check_number, compatible,
    resolve_taps)
from kerasbnn.distill.fusion import TeacherFusion, fuse, resolve_fusion
from kerasbnn.distill.losses import (
    FEATURE_REDUCTIONS, FeatureDistillation, LogitsDistillation, cross_entropy, layer_output)
from kerasbnn.renames import renamed

__all__ = ["DELTA_OBJECTIVES", "MultiTeacherDistiller", "check_hyperparameters"]

DELTA_OBJECTIVES = ("kl", "teacher_ce")


def check_hyperparameters(num_teachers, *, fusion="learned", kl_weight=1.0, feature_weight=0.2,
                          temperature=1.0, ce_weight=1.0, fusion_lr_scale=1.0,
                          feature_reduction="mean", delta_objective="kl", prefix=""):
    """Checks `MultiTeacherDistiller`'s scalar arguments without building anything.

    The distiller calls it in `__init__`; the command line calls it on a config before any
    training, with `prefix="distill."` so that messages name the config keys.

    Returns:
        `{name: value}` with numbers as floats and `fusion` resolved (`resolve_fusion`).

    Raises:
        ValueError: naming the first argument that is out of range or unknown.
    """
    values = {
        "kl_weight": check_number(f"{prefix}kl_weight", kl_weight),
        "feature_weight": check_number(f"{prefix}feature_weight", feature_weight),
        "ce_weight": check_number(f"{prefix}ce_weight", ce_weight),
        "temperature": check_number(f"{prefix}temperature", temperature, strict=True),
        "fusion_lr_scale": check_number(f"{prefix}fusion_lr_scale", fusion_lr_scale, strict=True)}
    check_choice(f"{prefix}feature_reduction", feature_reduction, FEATURE_REDUCTIONS)
    check_choice(f"{prefix}delta_objective", delta_objective, DELTA_OBJECTIVES)
    try:
        values["fusion"] = resolve_fusion(fusion, num_teachers)
    except ValueError as error:  # its messages start with "fusion ..."
        raise ValueError(f"{prefix}{error}") from None
    values["feature_reduction"], values["delta_objective"] = feature_reduction, delta_objective
    return values


def _check_taps(taps, student, teachers, adapters):
    """The student's and the (common) teachers' feature shape at every tap pair."""
    student_shapes, teacher_shapes = [], []
    for s_name, t_name in taps:
        s_shape = tuple(layer_output(student, s_name, "student").shape)
        t_shapes = [
            tuple(layer_output(t, t_name, f"teacher {m}").shape) for m, t in enumerate(teachers)]
        for m, t_shape in enumerate(t_shapes):
            if not compatible(t_shape, t_shapes[0]):
                raise ValueError(
                    f"Tap {t_name!r} has shape {t_shapes[0]} in teacher 0 but {t_shape} in "
                    f"teacher {m}; fused teacher features need one shape.")
            if len(t_shape) != len(s_shape) or not compatible(t_shape[1:-1], s_shape[1:-1]):
                raise ValueError(
                    f"Tap {s_name!r}: the student feature has shape {s_shape} but teacher {m}'s "
                    f"{t_name!r} has {t_shape}; spatial shapes must match (1x1 adapters map "
                    "channels only).")
        if not adapters and s_shape[-1] != t_shapes[0][-1]:
            raise ValueError(
                f"Tap {s_name!r}: {s_shape[-1]} student channels vs {t_shapes[0][-1]} teacher "
                "channels need an adapter; set adapters=True.")
        student_shapes.append(s_shape)
        teacher_shapes.append(t_shapes[0])
    return student_shapes, teacher_shapes


@keras.saving.register_keras_serializable(package="kerasbnn")
@renamed(alpha="kl_weight", beta="feature_weight", delta_lr_scale="fusion_lr_scale")
class MultiTeacherDistiller(TeacherStudent):
    r"""Distils M frozen teachers into a student with adaptive fusion (MAD).

    L = ce_weight L_CE + kl_weight L_KL(fused logits, student logits)
        + feature_weight sum_i L_Dis(fused feature_i, r_i(student feature_i))   (MAD eq. 12)

    plus the student's regularization losses. The same class gives the baselines:
    `fusion="average"` (delta = 1/M), fixed weights (`fusion=[0.4, 0.3, 0.2, 0.1]`), one
    teacher (classic KD; with taps, KD + FitNet-style hints), and `feature_taps=None`
    (logits only, for teachers of another architecture, as MAD's ReActNet-A with
    ResNet-50 teachers); `fusion="average"`, `feature_taps=None` and
    `fuse_probabilities=True` give CMT-KD's "average teacher" (§4.2: KD from the averaged
    softmax outputs of separately trained teachers).

    The teachers run frozen and in inference mode, once per batch, under stop-gradient.
    Adapters live in the distiller, never in `distiller.student`, which is what to save.

    Logged per epoch: `loss` (the optimised total, with regularization), `student_loss`
    (cross-entropy with the labels), `kl_loss`, `feature_loss` (sum over taps, before
    feature_weight), `distillation_loss` (kl_weight kl + feature_weight feature),
    `total_loss` (without regularization), `fusion_loss` with `delta_objective="teacher_ce"`,
    the compiled metrics of the student, and every delta after softmax, the teachers'
    learned importances, as `importance/<tap>/t<m>` (`importance/logits/t<m>` for the
    logits; training logs only).

    Args:
        student: functional or Sequential `keras.Model` returning logits (no softmax).
        teachers: a model or a non-empty list of models with the student's input shape
            and class count, also returning logits. They are frozen in place.
        feature_taps: `"auto"` (`auto_taps`: the zoo's `kerasbnn.models.taps(model)`, which
            must agree between student and teachers), `None` (logits only), or a list of
            layer names present in every model, or of `(student_layer, teacher_layer)` pairs.
        fusion: `"learned"` (MAD), `"average"`, or a list of M non-negative weights summing
            to 1, used at every distillation point.
        kl_weight: weight of L_KL (MAD's alpha: 1).
        feature_weight: weight of L_Dis (MAD's beta: 0.2 on CIFAR-10, 0.1 on CIFAR-100 and
            ImageNet).
        temperature: T of L_KL. MAD does not state it; 1 is our UNCONFIRMED default.
        scale_by_temperature_squared: multiply L_KL by T^2 (off in MAD's equations).
        feature_reduction: `"mean"` or `"sum"` over each feature map's elements (the
            paper sums; the implementation's reduction is UNCONFIRMED). See
            `FeatureDistillation`.
        adapters: put a 1x1 conv r_i on each student feature (MAD). With False the student
            and teacher features must have the same shape.
        fusion_lr_scale: learning-rate multiplier of the fusion logits theta (MAD uses the
            student's rate, 1). See `TeacherFusion`.
        feature_fusion_lr_scale: the same for the feature taps' fusions (None: as
            `fusion_lr_scale`).
        ce_weight: weight w_ce of the label cross-entropy (1 in MAD; 0 gives ReActNet's
            distributional loss, which replaces the cross-entropy).
        delta_objective: what trains the learned fusion weights. `"kl"` (MAD eqs. 13-14):
            the gradient of L_KL and L_Dis, so delta moves towards the teachers closest to
            the student, the weakest included. `"teacher_ce"` (ours, not in the paper): the
            logits' delta minimises the fused teacher's own cross-entropy with the labels,
            `fusion_loss` = CE(y, sum_m delta_m y^t_m), so it cannot favour a teacher that
            fits the labels worse; the student's terms see that delta under stop-gradient,
            and every feature tap is fused with the same delta (no per-tap fusion).
        fuse_probabilities: fuse the teachers' softened distributions instead of their
            logits: the KL target is sum_m delta_m softmax(y^t_m / T), the "average teacher"
            of CMT-KD §4.2 (Zhao et al. 2022: "the averaged softmax outputs of teachers are
            distilled") with `fusion="average"`, rather than softmax(sum_m delta_m y^t_m / T)
            (MAD eq. 7, the default). Features, if tapped, are fused as before.
        check_finite: as in `TeacherStudent`, on here: a step whose loss terms or gradients
            are NaN or infinite raises `tf.errors.InvalidArgumentError` naming the term and
            changes nothing (no update; BatchNormalization statistics put back). With a
            `keras.optimizers.LossScaleOptimizer`, non-finite gradients are left to it.
        teacher_jit_compile: run all teachers in one XLA-compiled function.
        name: model name.
        **kwargs: other `keras.Model` arguments.

    Raises:
        ValueError: at construction, for models `check_models` rejects, an unknown tap,
            taps whose shapes differ (spatially between student and teachers, or in any
            axis between teachers), and out-of-range hyper-parameters.

    Example:
    ```python
    distiller = MultiTeacherDistiller(student, teachers=[t32, t8, t4, t2],
                                      feature_taps="auto", fusion="learned",
                                      kl_weight=1.0, feature_weight=0.2)
    distiller.compile(optimizer=keras.optimizers.Adam(2e-3), metrics=["accuracy"])
    distiller.fit(train_ds, validation_data=val_ds, epochs=10,
                  callbacks=[kerasbnn.distill.DeltaHistory("delta.csv", plot_path="delta.png")])
    distiller.student.save("student.keras")
    ```

    Config (YAML, the pipeline's `distill` section):
    ```yaml
    distill: {method: mad, fusion: learned, kl_weight: 1.0, feature_weight: 0.2,
              temperature: 1.0}
    ```
    """

    SUPERVISED = (*TeacherStudent.SUPERVISED, "fusion_loss")
    DESCRIPTIONS = {
        "fusion_loss": "fusion_loss (the fused teacher's cross-entropy)",
        "student_loss": "student_loss (cross-entropy with the labels)",
        "kl_loss": "kl_loss (KL to the fused teacher logits)",
        "feature_loss": "feature_loss (smooth L1 to the fused teacher features)"}
    WEIGHTS = {"student_loss": "ce_weight", "kl_loss": "kl_weight",
               "feature_loss": "feature_weight"}

    def __init__(self, student, teachers, feature_taps="auto", fusion="learned", kl_weight=1.0,
                 feature_weight=0.2, temperature=1.0, scale_by_temperature_squared=False,
                 feature_reduction="mean", adapters=True, fusion_lr_scale=1.0,
                 feature_fusion_lr_scale=None, ce_weight=1.0, delta_objective="kl",
                 fuse_probabilities=False, check_finite=True,
                 teacher_jit_compile=False, name="multi_teacher_distiller",
                 **kwargs):
        config = arguments(locals(), "student", "teachers")
        teachers = check_models(student, teachers, "MultiTeacherDistiller")
        checked = check_hyperparameters(
            len(teachers), fusion=fusion, kl_weight=kl_weight, feature_weight=feature_weight,
            temperature=temperature, ce_weight=ce_weight, fusion_lr_scale=fusion_lr_scale,
            feature_reduction=feature_reduction, delta_objective=delta_objective)
        taps = resolve_taps(feature_taps, student, teachers, type(self).auto_taps)
        student_shapes, teacher_shapes = _check_taps(taps, student, teachers, adapters)
        config.update(feature_taps=[list(pair) for pair in taps] or None, **{
            k: v for k, v in checked.items() if k not in ("feature_reduction", "delta_objective")})
        on_labels = delta_objective == "teacher_ce" and checked["fusion"] == "learned" and len(
            teachers) > 1
        own_fusion = {"fusion_loss": 1.0} if on_labels else {}
        super().__init__(
            student, teachers,
            {"student_loss": checked["ce_weight"], "kl_loss": checked["kl_weight"],
             "feature_loss": checked["feature_weight"], **own_fusion},
            student_taps=[s for s, _ in taps], teacher_taps=[t for _, t in taps],
            check_finite=check_finite, teacher_jit_compile=teacher_jit_compile, config=config,
            name=name, **kwargs)
        self.feature_taps, self.delta_objective = taps, delta_objective
        self.fuse_probabilities = bool(fuse_probabilities)
        self.fusion, self.fusion_lr_scale = checked["fusion"], checked["fusion_lr_scale"]
        self.feature_fusion_lr_scale = self.fusion_lr_scale if feature_fusion_lr_scale is None \
            else check_number("feature_fusion_lr_scale", feature_fusion_lr_scale, strict=True)
        self.logits_loss = LogitsDistillation(
            checked["temperature"], scale_by_temperature_squared=scale_by_temperature_squared)
        self.feature_losses = [
            FeatureDistillation(t, s, reduction=feature_reduction) for s, t in taps]
        # One fusion (eqs. 7-8) per distillation point, keyed like the logs: "logits", taps.
        self.fusions = {
            key: TeacherFusion(len(teachers), self.fusion, name=f"fusion_{key}", lr_scale=(
                self.fusion_lr_scale if key == "logits" else self.feature_fusion_lr_scale))
            for key in ["logits", *([] if own_fusion else self.student_taps)]}
        self.adapters = [
            adapter(shape, t_shape[-1], f"adapter_{key}") for key, shape, t_shape
            in zip(self.student_taps, student_shapes, teacher_shapes)] if adapters else []

    def loss_terms(self, y, outputs, sample_weight=None):
        r"""MAD eq. 12's terms: L_CE, L_KL (eq. 6) of the fused logits (eq. 7), and
        sum_i L_Dis,i (eqs. 9-11) of the fused features (eq. 8) and the adapted student's;
        with `delta_objective="teacher_ce"`, also `fusion_loss`, the fused teacher's CE."""
        logits = outputs["logits"]
        zero = ops.zeros((), logits.dtype)
        terms = {"student_loss": zero if y is None
                 else self.supervised_loss(y, logits, sample_weight)}
        if "fusion_loss" in self.term_weights:  # delta from the labels, fixed for the student
            delta = self.fusions["logits"].delta()
            terms["fusion_loss"] = zero if y is None else cross_entropy(
                y, fuse(outputs["teacher_logits"], delta), sample_weight)
            delta = ops.stop_gradient(delta)
            fusion = lambda key, tensors: fuse(tensors, delta)  # noqa: E731
        else:
            fusion = lambda key, tensors: self.fusions[key](tensors)  # noqa: E731
        fused = self._fused_logits(fusion, outputs["teacher_logits"])
        terms["kl_loss"] = self.logits_loss.compute_loss(fused, logits, sample_weight=sample_weight)
        terms["feature_loss"] = zero
        for i, key in enumerate(self.student_taps):
            feature = outputs["student_features"][i]
            if self.adapters:
                feature = self.adapters[i](feature)
            target = fusion(key, outputs["teacher_features"][i])
            terms["feature_loss"] += self.feature_losses[i].compute_loss(
                target, feature, sample_weight=sample_weight)
        return terms

    def _fused_logits(self, fusion, logits):
        """The fused teacher logits y^t of L_KL: `fusion("logits", logits)` (MAD eq. 7), or
        with `fuse_probabilities` T log(sum_m delta_m softmax(y^t_m / T)), whose softmax at T
        is the teachers' mixed distribution (CMT-KD §4.2's average teacher); float32, and
        floored at its smallest normal number so that a class no teacher gives any
        probability stays finite."""
        if not self.fuse_probabilities:
            return fusion("logits", logits)
        t = self.logits_loss.temperature
        mixed = fusion("logits", [ops.softmax(ops.cast(z, "float32") / t, axis=-1) for z in logits])
        return t * ops.log(ops.maximum(mixed, np.finfo("float32").tiny))
