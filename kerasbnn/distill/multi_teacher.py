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
import tensorflow as tf
from keras import ops

from kerasbnn.distill.base import (
    Untracked,
    check_models,
    check_number,
    feature_extractor,
    replica_share,
)
from kerasbnn.distill.fusion import TeacherFusion, resolve_fusion
from kerasbnn.distill.losses import (
    FEATURE_REDUCTIONS,
    FeatureDistillation,
    LogitsDistillation,
    _weighted_batch_mean,
    ends_with_softmax,
    layer_output,
)

__all__ = ["LOGITS", "MultiTeacherDistiller", "check_hyperparameters"]

LOGITS = "logits"


def check_hyperparameters(
    num_teachers,
    *,
    fusion="learned",
    kl_weight=1.0,
    feature_weight=0.2,
    temperature=1.0,
    ce_weight=1.0,
    fusion_lr_scale=1.0,
    feature_reduction="mean",
    prefix="",
):
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
        "fusion_lr_scale": check_number(f"{prefix}fusion_lr_scale", fusion_lr_scale, strict=True),
    }
    if feature_reduction not in FEATURE_REDUCTIONS:
        raise ValueError(
            f"{prefix}feature_reduction must be one of {FEATURE_REDUCTIONS}, received "
            f"{feature_reduction!r}."
        )
    try:
        values["fusion"] = resolve_fusion(fusion, num_teachers)
    except ValueError as error:  # its messages start with "fusion ..."
        raise ValueError(f"{prefix}{error}") from None
    values["feature_reduction"] = feature_reduction
    return values


def _single_input_shape(model, role):
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return None
    if len(inputs) != 1:
        raise ValueError(
            f"The {role} {model.name!r} has {len(inputs)} inputs; MultiTeacherDistiller "
            "supports single-input models."
        )
    return tuple(inputs[0].shape)


def _compatible(a, b):
    return len(a) == len(b) and all(p is None or q is None or p == q for p, q in zip(a, b))


def _resolve_taps(feature_taps, student, teachers):
    """Normalises `feature_taps` into a list of (student_layer, teacher_layer) pairs."""
    if feature_taps is None:
        return []
    if isinstance(feature_taps, str):
        if feature_taps != "auto":
            raise ValueError(
                "feature_taps must be 'auto', None (logits only) or a list of layer names or "
                f"(student_layer, teacher_layer) pairs, received {feature_taps!r}."
            )
        from kerasbnn import models  # the zoo declares its taps; distill itself needs only Keras

        taps_of = getattr(models, "taps", None)
        if taps_of is None:
            raise ValueError(
                "feature_taps='auto' needs kerasbnn.models.taps, which this install lacks; "
                "pass a list of layer names or feature_taps=None."
            )
        student_taps = list(taps_of(student))
        if not student_taps:
            raise ValueError(
                f"feature_taps='auto' found no distillation taps in the student "
                f"{student.name!r}; pass a list of layer names or feature_taps=None."
            )
        for m, teacher in enumerate(teachers):
            teacher_taps = list(taps_of(teacher))
            if teacher_taps != student_taps:
                raise ValueError(
                    f"feature_taps='auto': teacher {m} ({teacher.name!r}) declares taps "
                    f"{teacher_taps}, the student {student_taps}. Teachers of another "
                    "architecture distill logits only: pass feature_taps=None."
                )
        return [(name, name) for name in student_taps]
    pairs = []
    for entry in feature_taps:
        if isinstance(entry, str):
            pairs.append((entry, entry))
        elif (
            isinstance(entry, (list, tuple))
            and len(entry) == 2
            and all(isinstance(name, str) for name in entry)
        ):
            pairs.append((entry[0], entry[1]))
        else:
            raise ValueError(
                "Each feature tap must be a layer name or a (student_layer, teacher_layer) "
                f"pair of names, received {entry!r}."
            )
    if len({s for s, _ in pairs}) != len(pairs):
        raise ValueError(f"feature_taps names a student layer twice: {pairs}.")
    return pairs


def _adapter(student_shape, teacher_channels, name):
    """The 1x1 transform r_i of MAD: a point-wise conv on the student feature."""
    rank = len(student_shape)
    if rank == 4:
        layer = keras.layers.Conv2D(teacher_channels, 1, name=name)
    elif rank == 3:
        layer = keras.layers.Conv1D(teacher_channels, 1, name=name)
    elif rank == 2:
        layer = keras.layers.Dense(teacher_channels, name=name)
    else:
        raise ValueError(
            f"Feature tap {name!r} has rank {rank} (shape {student_shape}); adapters exist for "
            "rank 2, 3 and 4 features (channels last)."
        )
    layer.build(student_shape)
    return layer


@keras.saving.register_keras_serializable(package="kerasbnn")
class MultiTeacherDistiller(keras.Model):
    r"""Distils M frozen teachers into a student with adaptive fusion (MAD).

    L = ce_weight L_CE + kl_weight L_KL(fused logits, student logits)
        + feature_weight sum_i L_Dis(fused feature_i, r_i(student feature_i))   (MAD eq. 12)

    plus the student's regularization losses. The same class gives the baselines:
    `fusion="average"` (delta = 1/M), fixed weights (`fusion=[0.4, 0.3, 0.2, 0.1]`), one
    teacher (classic KD; with taps, KD + FitNet-style hints), and `feature_taps=None`
    (logits only, for teachers of another architecture, as MAD's ReActNet-A with
    ResNet-50 teachers).

    Teachers are frozen (`trainable=False`) and run with `training=False` once per batch,
    outside the gradient tape; their outputs only enter the loss through the fusion
    weights, so the gradient reaches delta but never the teachers. Adapters live in the
    distiller, never in `distiller.student`, which is what to save and convert.

    Logged per epoch: `loss` (the optimised total, with regularization), `student_loss`
    (cross-entropy with the labels), `kl_loss`, `feature_loss` (sum over taps, before
    feature_weight), `distillation_loss` (kl_weight kl + feature_weight feature),
    `total_loss` (without
    regularization), the compiled metrics of the student, and every delta after softmax
    as `delta_<tap>_t<m>` (`delta_logits_t<m>` for the logits; training logs only).

    Args:
        student: functional or Sequential `keras.Model` returning logits (no softmax).
        teachers: a model or a non-empty list of models with the student's input shape
            and class count, also returning logits. They are frozen in place.
        feature_taps: `"auto"` (the zoo's `kerasbnn.models.taps(model)`, which must agree
            between student and teachers), `None` (logits only), or a list of layer names
            present in every model, or of `(student_layer, teacher_layer)` pairs.
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
        check_finite: stop `fit` before applying a step whose loss terms or gradients
            are NaN or infinite, with a `tf.errors.InvalidArgumentError` that names the
            term. That step changes nothing: its update is not applied and the moving
            statistics its forward pass wrote (BatchNormalization) are put back, so the
            student's weights are those after the last step whose loss and gradients were
            finite. (With a `keras.optimizers.LossScaleOptimizer`, non-finite gradients are
            left to it.)
        teacher_jit_compile: run all teachers' forward passes in one XLA-compiled
            function (`tf.function(jit_compile=True)`), which fuses the quantizers'
            element-wise ops into the convolutions.
        name: model name.
        **kwargs: other `keras.Model` arguments.

    Raises:
        ValueError: at construction, for no teachers, a teacher that is not a Keras model,
            teachers whose input shape or class count differ from the student's, models
            ending in softmax, an unknown tap, taps whose shapes differ (spatially between
            student and teachers, or in any axis between teachers), and out-of-range
            hyper-parameters.

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

    Config (YAML):
    ```yaml
    distiller: {feature_taps: auto, fusion: learned, kl_weight: 1.0, feature_weight: 0.2,
                temperature: 1.0}
    ```
    """

    def __init__(
        self,
        student,
        teachers,
        feature_taps="auto",
        fusion="learned",
        kl_weight=1.0,
        feature_weight=0.2,
        temperature=1.0,
        scale_by_temperature_squared=False,
        feature_reduction="mean",
        adapters=True,
        fusion_lr_scale=1.0,
        feature_fusion_lr_scale=None,
        ce_weight=1.0,
        check_finite=True,
        teacher_jit_compile=False,
        name="multi_teacher_distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        teachers = check_models(student, teachers, "MultiTeacherDistiller")
        checked = check_hyperparameters(
            len(teachers), fusion=fusion, kl_weight=kl_weight, feature_weight=feature_weight,
            temperature=temperature,
            ce_weight=ce_weight, fusion_lr_scale=fusion_lr_scale,
            feature_reduction=feature_reduction)
        self.kl_weight, self.feature_weight = checked["kl_weight"], checked["feature_weight"]
        self.ce_weight = checked["ce_weight"]
        self.temperature, self.fusion_lr_scale = checked["temperature"], checked["fusion_lr_scale"]
        self.feature_fusion_lr_scale = self.fusion_lr_scale if feature_fusion_lr_scale is None \
            else check_number("feature_fusion_lr_scale", feature_fusion_lr_scale, strict=True)
        self.feature_reduction = feature_reduction
        self.scale_by_temperature_squared = bool(scale_by_temperature_squared)
        self.use_adapters = bool(adapters)
        self.check_finite = bool(check_finite)
        self.teacher_jit_compile = bool(teacher_jit_compile)
        self.fusion = checked["fusion"]
        self._pending_checks = None  # train_step collects the finiteness checks here

        self._check_models(student, list(teachers))
        self.feature_taps = _resolve_taps(feature_taps, student, teachers)
        student_shapes, teacher_shapes = self._check_taps(student, list(teachers))

        for teacher in teachers:
            teacher.trainable = False
        self.student = student
        self.teachers = list(teachers)

        self._build_terms(student_shapes, teacher_shapes)
        student_taps = [s for s, _ in self.feature_taps]
        teacher_taps = [t for _, t in self.feature_taps]
        self._extractors = Untracked(
            student=feature_extractor(student, student_taps) if student_taps else None,
            teachers=[feature_extractor(t, teacher_taps) if teacher_taps else None
                      for t in teachers],
        )
        run = self._run_teachers
        self._extractors.run_teachers = (
            tf.function(run, jit_compile=True) if teacher_jit_compile else run
        )

        self._student_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")
        self.feature_loss_tracker = keras.metrics.Mean(name="feature_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
        self.built = True

    def _build_terms(self, student_shapes, teacher_shapes):
        """The loss terms (KL, one feature loss per tap), the fusions (eqs. 7-8) and the
        adapters r_i, one per tap."""
        num_teachers = len(self.teachers)
        self.logits_loss = LogitsDistillation(
            self.temperature, scale_by_temperature_squared=self.scale_by_temperature_squared
        )
        self.feature_losses = [
            FeatureDistillation(t, s, reduction=self.feature_reduction)
            for s, t in self.feature_taps
        ]
        # Unique, config-safe names for the per-tap layers and log keys.
        self.tap_keys = [s for s, _ in self.feature_taps]
        self.logits_fusion = TeacherFusion(
            num_teachers, self.fusion, lr_scale=self.fusion_lr_scale, name="fusion_logits"
        )
        self.feature_fusions = [
            TeacherFusion(num_teachers, self.fusion, self.feature_fusion_lr_scale, name=f"fusion_{key}")
            for key in self.tap_keys
        ]
        self.adapters = [
            _adapter(student_shapes[i], teacher_shapes[i][-1], f"adapter_{key}")
            for i, key in enumerate(self.tap_keys)
        ] if self.use_adapters else []

    # ------------------------------------------------------------------ construction checks

    @staticmethod
    def _check_models(student, teachers):
        student_in = _single_input_shape(student, "student")
        student_out = tuple(student.outputs[0].shape) if getattr(student, "outputs", None) else None
        for m, teacher in enumerate(teachers):
            teacher_in = _single_input_shape(teacher, f"teacher {m}")
            if student_in and teacher_in and not _compatible(student_in, teacher_in):
                raise ValueError(
                    f"Teacher {m} ({teacher.name!r}) takes inputs of shape {teacher_in}, the "
                    f"student {student_in}; every teacher must see the student's input."
                )
            teacher_out = (
                tuple(teacher.outputs[0].shape) if getattr(teacher, "outputs", None) else None
            )
            if student_out and teacher_out and not _compatible(student_out, teacher_out):
                raise ValueError(
                    f"Teacher {m} ({teacher.name!r}) outputs shape {teacher_out}, the student "
                    f"{student_out}: teachers must predict the student's {student_out[-1]} classes."
                )
        LogitsDistillation().validate_model_compatibility(student, student)
        for m, teacher in enumerate(teachers):
            if ends_with_softmax(teacher):
                raise ValueError(
                    f"Teacher {m} ({teacher.name!r}) ends with a softmax; the KL term needs "
                    "logits. Build it with a linear last layer."
                )

    def _check_taps(self, student, teachers):
        student_shapes, teacher_shapes = [], []
        for s_name, t_name in self.feature_taps:
            s_shape = tuple(layer_output(student, s_name, "student").shape)
            t_shapes = [
                tuple(layer_output(t, t_name, f"teacher {m}").shape) for m, t in enumerate(teachers)
            ]
            for m, t_shape in enumerate(t_shapes):
                if not _compatible(t_shape, t_shapes[0]):
                    raise ValueError(
                        f"Tap {t_name!r} has shape {t_shapes[0]} in teacher 0 but {t_shape} in "
                        f"teacher {m}; fused teacher features need one shape."
                    )
                if len(t_shape) != len(s_shape) or not _compatible(t_shape[1:-1], s_shape[1:-1]):
                    raise ValueError(
                        f"Tap {s_name!r}: the student feature has shape {s_shape} but "
                        f"teacher {m}'s "
                        f"{t_name!r} has {t_shape}; spatial shapes must match (1x1 adapters map "
                        "channels only)."
                    )
            if not self.use_adapters and s_shape[-1] != t_shapes[0][-1]:
                raise ValueError(
                    f"Tap {s_name!r}: {s_shape[-1]} student channels vs {t_shapes[0][-1]} teacher "
                    "channels need an adapter; set adapters=True."
                )
            student_shapes.append(s_shape)
            teacher_shapes.append(t_shapes[0])
        return student_shapes, teacher_shapes

    # ------------------------------------------------------------------ forward passes

    def call(self, inputs, training=None):
        """The student's prediction: distillers predict and evaluate like their student."""
        return self.student(inputs, training=training)

    def _run_teachers(self, x):
        per_teacher = []
        for teacher, extractor in zip(self.teachers, self._extractors.teachers):
            if extractor is None:
                per_teacher.append({LOGITS: teacher(x, training=False)})
            else:
                per_teacher.append(extractor(x, training=False))
        return per_teacher

    def teacher_outputs(self, x):
        """Every teacher's logits and tapped features, computed once, without gradient.

        Args:
            x: a batch of inputs.

        Returns:
            Dict `{"logits": [y_1..y_M], <tap>: [F_1..F_M], ...}` (taps keyed by the
            student layer name).
        """
        per_teacher = self._extractors.run_teachers(x)
        keys = [(LOGITS, LOGITS)] + list(self.feature_taps)
        return {
            key: [ops.stop_gradient(outputs[name]) for outputs in per_teacher]
            for key, name in keys
        }

    def student_outputs(self, x, training=False):
        """The student's logits and raw tapped features (before adapters), in one pass.

        Returns:
            Dict `{"logits": y_s, <tap>: F_s, ...}`.
        """
        extractor = self._extractors.student
        if extractor is None:
            return {LOGITS: self.student(x, training=training)}
        return dict(extractor(x, training=training))

    def deltas(self):
        """Current fusion coefficients after softmax, as `{tap: numpy array (M,)}`."""
        fusions = [self.logits_fusion] + list(self.feature_fusions)
        return {
            key: keras.ops.convert_to_numpy(fusion.delta())
            for key, fusion in zip([LOGITS] + self.tap_keys, fusions)
        }

    def _delta_logs(self):
        logs = {}
        for key, fusion in zip(
            [LOGITS] + self.tap_keys, [self.logits_fusion] + list(self.feature_fusions)
        ):
            delta = fusion.delta()
            for m in range(len(self.teachers)):
                logs[f"delta_{key}_t{m}"] = delta[m]
        return logs

    # ------------------------------------------------------------------ losses

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Configures training like `keras.Model.compile`.

        Args:
            optimizer: trains the student, the adapters and the fusion logits.
            loss: the student's supervised loss L_CE, a Keras loss or identifier called as
                `loss(y, student_logits)`. Default: sparse categorical cross-entropy from
                logits (integer labels).
            metrics: metrics of the student's predictions, e.g. `["accuracy"]`.
            **kwargs: other `keras.Model.compile` arguments.
        """
        if loss is not None:
            self._student_loss = keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss
            if not callable(self._student_loss):
                raise ValueError(f"loss must be a Keras loss or identifier, received {loss!r}.")
        super().compile(optimizer=optimizer, loss=None, metrics=metrics, **kwargs)

    def _per_example_student_loss(self, y, logits):
        loss_fn = self._student_loss
        if isinstance(loss_fn, keras.losses.Loss):
            values = loss_fn.call(y, logits)  # unreduced: replicas are scaled by replica_share
        else:
            values = loss_fn(y, logits)
        values = ops.convert_to_tensor(values)
        if len(values.shape) > 1:
            values = ops.mean(values, axis=tuple(range(1, len(values.shape))))
        return values

    @staticmethod
    def _non_finite_message(name):
        return (
            f"MultiTeacherDistiller: {name} is NaN or infinite, so training stopped before "
            "this step's update (the student's weights are those after the last step whose "
            "loss and gradients were finite; this step's batch-norm statistics were put "
            "back). Lower the learning rate, or check the inputs and the teachers"
        )

    def _checked(self, value, name, training):
        """`value`, checked for NaN/inf when training: at once, or inside `train_step`
        after it has put back the step's state (`_pending_checks`)."""
        if not (self.check_finite and training):
            return value
        if self._pending_checks is not None:
            self._pending_checks.append((value, name))
            return value
        return tf.debugging.check_numerics(value, self._non_finite_message(name))

    def compute_loss(
        self,
        x=None,
        y=None,
        y_pred=None,
        sample_weight=None,
        training=True,
        teacher_outputs=None,
        student_outputs=None,
    ):
        r"""L = ce_weight L_CE + kl_weight L_KL + feature_weight sum_i L_Dis,i + regularization
        (MAD eq. 12).

        Updates the loss trackers (unscaled) and returns the replica's share of the loss:
        the mean over this replica's batch divided by the replicas in sync
        (`kerasbnn.distill.base.replica_share`, the rule of Keras' own losses).

        Args:
            x: inputs, used to run the teachers (and the student) when their outputs are
                not given.
            y: labels; None skips the cross-entropy.
            y_pred: student logits (taken from `student_outputs` when given).
            sample_weight: optional per-example weights applied to every term.
            training: whether the student runs in training mode.
            teacher_outputs: `teacher_outputs(x)`, to reuse one teacher pass.
            student_outputs: `student_outputs(x, training)`, to reuse one student pass.

        Returns:
            Scalar loss tensor.
        """
        if teacher_outputs is None:
            teacher_outputs = self.teacher_outputs(x)
        if student_outputs is None:
            if y_pred is not None and not self.feature_taps:
                student_outputs = {LOGITS: y_pred}
            else:
                student_outputs = self.student_outputs(x, training=training)
        logits = student_outputs[LOGITS]

        if y is not None:
            ce = _weighted_batch_mean(self._per_example_student_loss(y, logits), sample_weight)
        else:
            ce = ops.zeros((), dtype=logits.dtype)
        ce = self._checked(ce, "student_loss (cross-entropy with the labels)", training)

        fused_logits = self.logits_fusion(teacher_outputs[LOGITS])
        kl = self.logits_loss.compute_loss(fused_logits, logits, sample_weight=sample_weight)
        kl = self._checked(kl, "kl_loss (KL to the fused teacher logits)", training)

        feature = ops.zeros((), dtype=logits.dtype)
        for i, key in enumerate(self.tap_keys):
            fused = self.feature_fusions[i](teacher_outputs[key])
            student_feature = student_outputs[key]
            if self.use_adapters:
                student_feature = self.adapters[i](student_feature)
            term = self.feature_losses[i].compute_loss(
                fused, student_feature, sample_weight=sample_weight
            )
            feature = feature + self._checked(term, f"feature_loss at tap {key!r}", training)

        distillation = self.kl_weight * kl + self.feature_weight * feature
        total = self.ce_weight * ce + distillation
        loss = total
        regularization = self.student.losses
        if regularization:
            loss = loss + ops.sum(ops.stack([ops.cast(r, loss.dtype) for r in regularization]))

        batch = ops.shape(logits)[0]
        for tracker, value in (
            (self.loss_tracker, loss),
            (self.student_loss_tracker, ce),
            (self.kl_loss_tracker, kl),
            (self.feature_loss_tracker, feature),
            (self.distillation_loss_tracker, distillation),
            (self.total_loss_tracker, total),
        ):
            tracker.update_state(value, sample_weight=batch)
        return replica_share(loss)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config["loss"] = keras.saving.serialize_keras_object(self._student_loss)
        return config

    def compile_from_config(self, config):
        """Re-compiles a loaded distiller with its saved optimizer, student loss and metrics."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.optimizer is not None:
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        own = [
            self.loss_tracker,
            self.student_loss_tracker,
            self.kl_loss_tracker,
            self.feature_loss_tracker,
            self.distillation_loss_tracker,
            self.total_loss_tracker,
        ]
        # Keras' own "loss" tracker is never updated here: ours replaces it.
        rest = [m for m in super().metrics if m.name != "loss" and not any(m is o for o in own)]
        return own[:1] + rest + own[1:]

    # ------------------------------------------------------------------ steps

    def _forward_state(self):
        """Variables a training forward pass writes: the student's and the adapters'
        non-trainable ones (BatchNormalization moving statistics); teachers run in inference."""
        layers = (self.student, *self.adapters)
        return [v for layer in layers for v in layer.non_trainable_variables]

    def _guard_step(self, saved, gradients):
        """Puts back `saved` state unless every pending term and gradient is finite, then
        checks them (raising `InvalidArgumentError` naming the first bad one); returns
        `gradients` made to wait for the checks."""
        checks, self._pending_checks = self._pending_checks, None
        terms = [ops.all(ops.isfinite(value)) for value, _ in checks]
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            grads = [
                ops.all(ops.isfinite(g.values if isinstance(g, tf.IndexedSlices) else g))
                for g in gradients
                if g is not None
            ]
            grads_ok = ops.all(ops.stack(grads)) if grads else ops.convert_to_tensor(True)
            bad = ops.where(grads_ok, 0.0, float("nan"))
            checks.append((bad, "a gradient (with a finite loss)"))
            terms.append(grads_ok)
        finite = ops.all(ops.stack(terms))
        reads = []
        for variable, value in saved:
            variable.assign(ops.where(finite, variable.value, value))
            reads.append(tf.identity(variable.value))  # after the assignment
        done = reads
        for value, name in checks:  # one after the other: the first bad term is named
            with tf.control_dependencies(done):
                done = [tf.debugging.check_numerics(value, self._non_finite_message(name))]
        with tf.control_dependencies(done):
            return [
                None if g is None else tf.nest.map_structure(tf.identity, g, expand_composites=True)
                for g in gradients
            ]

    def train_step(self, data):
        """One optimisation step: teachers once (no tape), student once, one update.

        A thin copy of Keras' TensorFlow `train_step` on public APIs; the arithmetic is in
        `compute_loss`, which returns each replica's share of the loss (the optimizer sums
        the replicas' gradients). With `check_finite`,
        a step whose loss terms or gradients are not finite changes no variable (see
        `_guard_step`) and raises.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        teacher_outputs = self.teacher_outputs(x)
        saved = []
        if self.check_finite:
            saved = [(v, tf.identity(v.value)) for v in self._forward_state()]
            self._pending_checks = []
        with tf.GradientTape() as tape:
            student_outputs = self.student_outputs(x, training=True)
            y_pred = student_outputs[LOGITS]
            loss = self.compute_loss(
                x,
                y,
                y_pred,
                sample_weight,
                training=True,
                teacher_outputs=teacher_outputs,
                student_outputs=student_outputs,
            )
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        if self.check_finite:
            self._pending_checks.append((loss, "loss (with the student's regularization)"))
            gradients = self._guard_step(saved, gradients)
        self.optimizer.apply(gradients, variables)
        logs = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        logs.update(self._delta_logs())
        return logs

    def test_step(self, data):
        """Evaluates the same loss terms with the student in inference mode."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        teacher_outputs = self.teacher_outputs(x)
        student_outputs = self.student_outputs(x, training=False)
        y_pred = student_outputs[LOGITS]
        self.compute_loss(
            x,
            y,
            y_pred,
            sample_weight,
            training=False,
            teacher_outputs=teacher_outputs,
            student_outputs=student_outputs,
        )
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    # ------------------------------------------------------------------ serialization

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "student": keras.saving.serialize_keras_object(self.student),
                "teachers": [keras.saving.serialize_keras_object(t) for t in self.teachers],
                "feature_taps": [list(pair) for pair in self.feature_taps] or None,
                "fusion": self.fusion,
                "kl_weight": self.kl_weight,
                "feature_weight": self.feature_weight,
                "temperature": self.temperature,
                "scale_by_temperature_squared": self.scale_by_temperature_squared,
                "feature_reduction": self.feature_reduction,
                "adapters": self.use_adapters,
                "fusion_lr_scale": self.fusion_lr_scale,
                "feature_fusion_lr_scale": self.feature_fusion_lr_scale,
                "ce_weight": self.ce_weight,
                "check_finite": self.check_finite,
                "teacher_jit_compile": self.teacher_jit_compile,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["student"] = keras.saving.deserialize_keras_object(config["student"])
        config["teachers"] = [keras.saving.deserialize_keras_object(t) for t in config["teachers"]]
        return cls(**config)
