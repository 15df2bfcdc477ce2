r"""CMT-KD: collaborative multi-teacher knowledge distillation.

Pham, Hoang, Do, "Collaborative Multi-Teacher Knowledge Distillation for Learning Low
Bit-width Deep Neural Networks", WACV 2023 (arXiv:2210.16103). No official code was
released; the equations follow `METHODS.md` section 1 (eqs 1-10), the ensemble logits
follow KDCL (Guo et al., CVPR 2020, arXiv:2002.12597), attention transfer follows
Zagoruyko & Komodakis (ICLR 2017, arXiv:1612.03928) and FitNets Romero et al.
(ICLR 2015, arXiv:1412.6550).

n teachers share the student's architecture at other (higher) precisions and are trained
together with the student and one importance vector pi^l per shared layer l: the fused
teacher features F^l (eq 1) feed every teacher's next stage and a combined-teacher
classifier, the student's features are pulled towards F^l (eqs 4-6), teacher and student
learn from each other through KDCL-MinLogit ensemble logits (eqs 7-9), and eq 10 weighs
the terms, with weights named after them (`CollaborativeDistiller` gives each equation).
"""

import keras
from keras import ops

from kerasbnn.distill.base import (
    TeacherStudent, adapter, arguments, check_choice, check_models, check_number, resolve_taps,
    sparse_labels)
from kerasbnn.distill.fusion import FUSION_MODES, TeacherFusion
from kerasbnn.distill.losses import ConfigurableLoss, LogitsDistillation, cross_entropy
from kerasbnn.renames import renamed

__all__ = ["AttentionTransfer", "CollaborativeDistiller", "attention_map", "min_logit"]

FEATURE_LOSSES = ("attention", "fitnet")
HEADS = ("shared", "average")
# eq 10's gamma per feature loss: 100 for attention transfer (3P transcription of the
# paper); the FitNet value is stripped from the paper (UNCONFIRMED), 1 is our default.
DEFAULT_FEATURE_WEIGHT = {"attention": 100.0, "fitnet": 1.0}


def attention_map(features, p=2):
    r"""Spatial attention map of a feature map, normalised per sample (eq 5).

    Q(A) = mean_j |A_j|^p over the c channels, flattened to (batch, h*w) and divided by
    its L2 norm. The channel mean of the official AT code equals the paper's channel sum
    after normalisation.

    Args:
        features: tensor `(batch, h, w, c)` (channels_last).
        p: exponent of the activation magnitude (2 in CMT-KD).

    Returns:
        Tensor `(batch, h*w)` of unit L2 norm per row.
    """
    q = ops.mean(ops.power(ops.abs(features), p), axis=-1)
    q = ops.reshape(q, (ops.shape(q)[0], -1))
    return q / ops.maximum(ops.norm(q, axis=-1, keepdims=True), 1e-12)


def _pool_to(features, size):
    """Average-pools a `(b, h, w, c)` map down to spatial `size` (integer ratios only)."""
    h, w = features.shape[1], features.shape[2]
    if (h, w) == tuple(size):
        return features
    return ops.average_pool(features, (h // size[0], w // size[1]), padding="valid")


@keras.saving.register_keras_serializable(package="kerasbnn")
class AttentionTransfer(ConfigurableLoss):
    r"""Attention-transfer feature loss (CMT-KD eq 5, Zagoruyko & Komodakis 2017).

    D_at(F, A_s) = mean_{b, x} ( Q(F)_{b,x} - Q(A_s)_{b,x} )^2, with Q the normalised
    attention map of `attention_map` (the official `at_loss` reduction: the mean of the
    squared difference over batch and spatial positions). Channel counts may differ. If
    the spatial sizes differ by an integer factor, the larger map is average-pooled.

    With `teacher_layer_name` and `student_layer_name` it plugs into Keras' own
    `keras.distillation.Distiller`, which taps those layers (`kerasbnn.methods.attention`).

    Args:
        p: exponent of `attention_map` (2 in CMT-KD); must be positive.
        teacher_layer_name: the teacher layer whose output is compared (Keras' Distiller).
        student_layer_name: the student layer whose output is compared (Keras' Distiller).

    Raises:
        ValueError: if `p` is not a positive number.

    Example:
    ```python
    loss = AttentionTransfer()
    value = loss.compute_loss(teacher_feature, student_feature)
    ```
    """

    CONFIG = ("p", "teacher_layer_name", "student_layer_name")

    def __init__(self, p=2, teacher_layer_name=None, student_layer_name=None):
        self.p = check_number("AttentionTransfer: `p`", p, strict=True)
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name

    def validate_outputs(self, teacher_outputs, student_outputs):
        """The smaller spatial size `(h, w)`, to which both maps are pooled; ValueError unless
        both are 4-D with spatial sizes equal or in an integer ratio."""
        t_shape, s_shape = tuple(teacher_outputs.shape), tuple(student_outputs.shape)
        if len(t_shape) != 4 or len(s_shape) != 4:
            raise ValueError(
                "AttentionTransfer compares 4-D feature maps (batch, h, w, c); received "
                f"teacher {t_shape} and student {s_shape}.")
        small = (min(t_shape[1], s_shape[1]), min(t_shape[2], s_shape[2]))
        for shape in (t_shape, s_shape):
            if shape[1] % small[0] or shape[2] % small[1]:
                raise ValueError(
                    "AttentionTransfer needs spatial sizes in an integer ratio; received "
                    f"teacher {t_shape[1:3]} and student {s_shape[1:3]}.")
        return small

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """Scalar attention-transfer distance; see the class docstring."""
        size = self.validate_outputs(teacher_outputs, student_outputs)
        q_t = attention_map(_pool_to(teacher_outputs, size), self.p)
        q_s = attention_map(_pool_to(student_outputs, size), self.p)
        return ops.mean(ops.square(q_t - q_s))


def min_logit(logits, labels):
    r"""KDCL-MinLogit ensemble logits (CMT-KD eq 7, KDCL section 3.2).

    Every member's logits are shifted so that the true class c sits at 0,
    zbar_k = z_k - z_{k,c}, and the ensemble takes the element-wise minimum,
    z^{ens}_j = min_k zbar_{k,j}. Its softmax is at least as confident on c as any member.

    Args:
        logits: list of `(batch, classes)` tensors (CMT-KD: [z^t, z^s]).
        labels: integer labels `(batch,)` or one-hot `(batch, classes)`.

    Returns:
        Tensor `(batch, classes)`; gradients flow into every member (apply
        `ops.stop_gradient` to use it as a target, as KDCL does).
    """
    num_classes = logits[0].shape[-1]
    labels = sparse_labels(labels, num_classes)
    mask = ops.one_hot(labels, num_classes, dtype=logits[0].dtype)
    shifted = [z - ops.sum(z * mask, axis=-1, keepdims=True) for z in logits]
    return ops.min(ops.stack(shifted, axis=0), axis=0)


def _check_architectures(student, teachers):
    """Every teacher must have the student's kernel shapes, weight layer by weight layer."""
    def kernels(model):
        return [(layer.name, tuple(v.shape)) for layer in model.layers for v in layer.weights
                if v.name in ("kernel", "depthwise_kernel", "pointwise_kernel")]

    reference = kernels(student)
    for i, teacher in enumerate(teachers):
        arch = kernels(teacher)
        if [s for _, s in arch] != [s for _, s in reference]:
            first = next((f"{a} vs {b}" for a, b in zip(reference, arch) if a[1] != b[1]),
                         f"{len(reference)} vs {len(arch)} weight layers")
            raise ValueError(
                f"CollaborativeDistiller: teachers[{i}] ({teacher.name!r}) does not have the "
                f"student's architecture ({student.name!r}); first difference (student vs "
                f"teacher): {first}. Build every teacher with the student's builder and "
                "options, changing only the precision.")


@keras.saving.register_keras_serializable(package="kerasbnn")
@renamed(shared_layers="feature_taps", alpha="ce_weight", beta="kl_weight",
         gamma="feature_weight", pi_learning_rate_scale="fusion_lr_scale")
class CollaborativeDistiller(TeacherStudent):
    r"""CMT-KD: teachers at several precisions, student and importance factors trained jointly.

    Forward pass (one batch):
    - the student runs on its own and exposes its features at the shared layers;
    - each teacher runs its stem and stages (zoo `parts`); at every shared layer l the
      teachers' outputs are fused, F^l = sum_i softmax(pi^l)_i F_i^l (eq 1,
      `TeacherFusion`), and F^l is the input of every teacher's next stage;
    - the combined teacher classifies the last shared feature: `head="shared"` (default)
      adds one new head with the teachers' head architecture; `head="average"` averages
      the teachers' own heads, each fed the final feature.

    Loss (eq 10), every term optional:
        L = ce_weight (CE(z^s, y) + CE(z^t, y)) + kl_weight (L_KL^s + L_KL^t)
            + feature_weight L_feat,
    - L_feat = sum_l D(sg(F^l), A_s^l) (eq 4), D = attention transfer (eq 5,
      `AttentionTransfer`) or FitNet, mean (F^l - r_l(A_s^l))^2 with a 1x1 conv adapter r_l
      on the student side (eq 6); `feature_loss=None` is the "w/o Att" ablation;
    - L_KL^x = T^2 KL(softmax(sg(z^{t,s})/T) || softmax(z^x/T)) (eqs 8-9, `LogitsDistillation`
      with T^2) with the KDCL-MinLogit ensemble z^{t,s} = min(zbar^t, zbar^s) (eq 7,
      `min_logit`); `mutual_learning=False` is the "w/o ML" ablation;
    - `fusion="average"` fixes pi to 1/n, the teachers still training with the student. This is
      not the paper's "average teacher" baseline (§4.2: separately trained teachers, their
      softmax outputs averaged, plain KD), which is the pipeline's `average` method
      (`kerasbnn.methods.average`).

    The importance factors learn at `fusion_lr_scale` times the network's rate through the
    one optimizer of Keras' own train step (`TeacherFusion`). Their values after softmax,
    the teachers' learned importances softmax(pi^l), are logged at every epoch as
    `importance/<layer>/t<i>` (the name MAD's delta has too), returned by `importances()`
    (alias `deltas()`), and recorded and plotted by `kerasbnn.distill.DeltaHistory` (CMT-KD
    Fig. 2).

    Logged: `loss` (= `total_loss`), `student_loss`, `teacher_loss` (the combined
    teacher's CE), `mutual_student_loss`, `mutual_teacher_loss`, `feature_loss` (each
    unweighted; absent when switched off), `distillation_loss` (the weighted non-CE part),
    `teacher_accuracy` (the combined teacher), `importance/<layer>/t<i>` (training only), and
    the compiled metrics on the student's logits. `predict` returns
    `{"student": z^s, "teacher": z^t}`; ship `distiller.student`.

    Args:
        student: functional zoo model (logits output).
        teachers: list of n >= 1 zoo models with the student's architecture (other
            precisions); all are trained (set `trainable=True` in place).
        feature_taps: "auto" (`auto_taps`: the zoo's taps, the output of every stage, as the
            paper's ResNet-18 fusion layers 5, 9, 13, 17) or a list of tap names among the
            parts' boundaries (`"stem_out"`, `"stage1_out"`, ...).
        feature_loss: "attention" (default), "fitnet" or None.
        mutual_learning: bool, the KDCL-MinLogit KL terms.
        fusion: "learned" (softmax importance factors) or "average".
        head: "shared" or "average" (combined-teacher classifier; the paper's form is
            UNCONFIRMED, see METHODS.md).
        ce_weight, kl_weight: eq 10's alpha and beta (paper: 1 and 0.5).
        feature_weight: eq 10's gamma, the weight of L_feat; None means 100 for attention,
            1 for FitNet (UNCONFIRMED).
        temperature: T of eqs 8-9 (default 4; UNCONFIRMED in the paper).
        fusion_lr_scale: learning rate of pi relative to the network (default 0.1).
        stop_gradient_feature_target: apply sg to F^l inside L_feat (default True), so the
            feature loss trains the student only.
        name: model name.

    Raises:
        ValueError: at construction, for teachers of another architecture than the
            student, a shared layer that is not a part boundary, or bad hyper-parameters.

    Example:
    ```python
    distiller = CollaborativeDistiller.from_zoo(
        "resnet20", (32, 32, 3), 10, student_bits=2, teacher_bits=(4, 6, 8), quantizer="hwgq")
    distiller.compile(keras.optimizers.SGD(0.1, momentum=0.9), metrics=["accuracy"])
    distiller.fit(train, epochs=120, callbacks=[DeltaHistory("pi.csv", "pi.png")])
    distiller.student.save("student.keras")
    ```

    References:
        CMT-KD arXiv:2210.16103; KDCL arXiv:2002.12597; AT arXiv:1612.03928;
        FitNets arXiv:1412.6550.
    """

    def __init__(self, student, teachers, feature_taps="auto", feature_loss="attention",
                 mutual_learning=True, fusion="learned", head="shared", ce_weight=1.0,
                 kl_weight=0.5, feature_weight=None, temperature=4.0, fusion_lr_scale=0.1,
                 stop_gradient_feature_target=True, name="collaborative_distiller", **kwargs):
        config = arguments(locals(), "student", "teachers")
        teachers = check_models(student, teachers, "CollaborativeDistiller")
        check_choice("feature_loss", feature_loss, FEATURE_LOSSES + (None,))
        check_choice("fusion", fusion, FUSION_MODES)
        check_choice("head", head, HEADS)
        if feature_weight is None:
            feature_weight = DEFAULT_FEATURE_WEIGHT.get(feature_loss, 0.0)
        weights = {name: check_number(name, value) for name, value in (
            ("ce_weight", ce_weight), ("kl_weight", kl_weight), ("feature_weight", feature_weight))}
        temperature = check_number("temperature", temperature, strict=True)
        fusion_lr_scale = check_number("fusion_lr_scale", fusion_lr_scale, strict=True)
        _check_architectures(student, teachers)
        feature_taps = [s for s, _ in resolve_taps(
            feature_taps, student, teachers, type(self).auto_taps)]
        if not feature_taps:
            raise ValueError("CollaborativeDistiller: no feature taps; pass stage taps such as "
                             "['stage1_out'] (kerasbnn.models.taps(model)).")
        terms = {"student_loss": weights["ce_weight"], "teacher_loss": weights["ce_weight"]}
        if mutual_learning:
            terms.update(mutual_student_loss=weights["kl_weight"],
                         mutual_teacher_loss=weights["kl_weight"])
        if feature_loss:
            terms["feature_loss"] = weights["feature_weight"]
        # The student's extractor is built before any `parts` call: parts may add nodes to
        # the student's layers. Teachers are trained, and tracked through their parts only.
        super().__init__(student, teachers, terms, student_taps=feature_taps, teacher_taps=[],
                         train_teachers=True, track_teachers=False, teacher_accuracy=True,
                         config=config, name=name, **kwargs)
        self.feature_taps, self.feature_loss, self.head = feature_taps, feature_loss, head
        self.mutual_learning, self.temperature = bool(mutual_learning), temperature
        self.ce_weight, self.kl_weight, self.feature_weight = weights.values()
        self.stop_gradient_feature_target = bool(stop_gradient_feature_target)
        self.num_classes = int(student.outputs[0].shape[-1])
        self._build_teacher_parts(teachers)
        # The importance factors pi^l (eq 1), one per shared layer.
        self.fusions = {
            tap: TeacherFusion(len(teachers), mode=fusion, lr_scale=fusion_lr_scale,
                               name=f"shared_{tap}")
            for tap in feature_taps}
        shapes = [tuple(student.get_layer(tap).output.shape) for tap in feature_taps]
        self.adapters = [
            adapter(shape, shape[-1], f"adapter_{tap}", use_bias=False)
            for tap, shape in zip(feature_taps, shapes)] if feature_loss == "fitnet" else []
        self._feature_distance = (
            AttentionTransfer(p=2) if feature_loss == "attention"
            else keras.distillation.FeatureDistillation(loss="mse"))
        self._mutual = LogitsDistillation(temperature, scale_by_temperature_squared=True)

    def _build_teacher_parts(self, teachers):
        """Each teacher cut at its stage boundaries (zoo `parts`: stem, stages, head, sharing
        the teacher's weights; segment s ends at layer `s + "_out"`), and the combined head."""
        from kerasbnn import models

        parts = []
        for model in teachers:
            try:
                parts.append(list(models.parts(model).items()))
            except ValueError as error:
                raise ValueError(
                    f"CollaborativeDistiller needs zoo models split into parts "
                    f"(kerasbnn.models.parts); model {model.name!r}: {error}") from error
            if "head" not in dict(parts[-1]):
                raise ValueError(
                    f"CollaborativeDistiller: model {model.name!r} has no classifier head (built "
                    "with include_top=False?); the student and teachers must output logits.")
        self._segment_taps = [f"{name}_out" for name, _ in parts[0][:-1]]
        missing = [tap for tap in self.feature_taps if tap not in self._segment_taps]
        if missing:
            raise ValueError(
                f"CollaborativeDistiller: feature taps {missing} are not stage boundaries of the "
                f"teachers; valid feature taps: {self._segment_taps}.")
        self.teacher_parts = [[part for _, part in model_parts[:-1]] for model_parts in parts]
        if self.head == "shared":
            self.combined_head = keras.models.clone_model(parts[0][-1][1])
            self.combined_head.name = "combined_head"
        else:
            self.teacher_heads = [model_parts[-1][1] for model_parts in parts]

    def call(self, inputs, training=None):
        """Runs student and teachers once (the base's structure): the student's "logits", the
        combined teacher's logits as the one entry of "teacher_logits", and over
        `feature_taps` the "student_features" and the shared knowledge F^l as the one entry
        of each "teacher_features"."""
        outputs = self._extractors.student(inputs, training=training)
        n = len(self.teacher_parts)
        fused = {}
        hidden = [inputs] * n
        for k, tap in enumerate(self._segment_taps):
            hidden = [self.teacher_parts[i][k](hidden[i], training=training) for i in range(n)]
            if tap in self.fusions:
                fused[tap] = self.fusions[tap](hidden)
                hidden = [fused[tap]] * n
        if self.head == "shared":
            final = hidden[0] if self._segment_taps[-1] in fused else ops.mean(
                ops.stack(hidden), axis=0)
            teacher_logits = self.combined_head(final, training=training)
        else:
            teacher_logits = ops.mean(ops.stack(
                [h(x, training=training) for h, x in zip(self.teacher_heads, hidden)]), axis=0)
        return {
            "logits": outputs["logits"],
            "student_features": [outputs[tap] for tap in self.feature_taps],
            "teacher_logits": [teacher_logits],
            "teacher_features": [[fused[tap]] for tap in self.feature_taps]}

    def loss_terms(self, y, outputs, sample_weight=None):
        """The unweighted terms of eq 10 that are switched on: "student_loss" and
        "teacher_loss" (the CEs, with `sample_weight`), "mutual_student_loss" and
        "mutual_teacher_loss" (eqs 7-9), "feature_loss" (eq 4). `y`: integer or one-hot."""
        if y is None:
            raise ValueError("CollaborativeDistiller needs labels: pass (x, y) to fit/evaluate.")
        labels = sparse_labels(y, self.num_classes)
        z_s, (z_t,) = outputs["logits"], outputs["teacher_logits"]
        terms = {
            "student_loss": self.supervised_loss(labels, z_s, sample_weight),
            "teacher_loss": cross_entropy(labels, z_t, sample_weight)}
        if self.mutual_learning:
            target = ops.stop_gradient(min_logit([z_t, z_s], labels))
            terms["mutual_student_loss"] = self._mutual.compute_loss(target, z_s)
            terms["mutual_teacher_loss"] = self._mutual.compute_loss(target, z_t)
        if self.feature_loss:
            terms["feature_loss"] = 0.0
            for j, ((shared,), feature) in enumerate(
                    zip(outputs["teacher_features"], outputs["student_features"])):
                if self.stop_gradient_feature_target:
                    shared = ops.stop_gradient(shared)
                if self.adapters:
                    feature = self.adapters[j](feature)
                terms["feature_loss"] += self._feature_distance.compute_loss(shared, feature)
        return terms

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        outputs = self(x, training=False)
        return {"student": outputs["logits"], "teacher": outputs["teacher_logits"][0]}

    def importances(self):
        """softmax(pi^l) per shared layer, as `{layer: numpy array (n,)}`: `deltas()`, the
        name `kerasbnn.distill.DeltaHistory` reads, which records and plots pi per epoch
        (CMT-KD Fig. 2)."""
        return self.deltas()

    @classmethod
    def from_zoo(cls, name, input_shape, num_classes, *, student_bits=2, teacher_bits=(4, 6, 8),
                 quantizer="hwgq", builder_kwargs=None, **kwargs):
        """Builds the student and its teachers with one zoo builder, then the distiller.

        Args:
            name: zoo builder name (`kerasbnn.models.get`), e.g. "resnet20".
            input_shape, num_classes: the builder's first arguments.
            student_bits: the student's `bits` (2, or (1, 2) for W1/A2).
            teacher_bits: one `bits` value per teacher (paper: (4, 6, 8); (2, 4, 8) for W1/A2).
            quantizer: the k-bit quantizer family of every network ("hwgq" or "lsq" in the paper).
            builder_kwargs: further keyword arguments of the builder (shared by all).
            **kwargs: `CollaborativeDistiller` arguments.
        """
        from kerasbnn import models

        build = models.get(name)
        options = dict(builder_kwargs or {})
        student, *teachers = [
            build(input_shape, num_classes, bits=bits, quantizer=quantizer, **options)
            for bits in (student_bits, *teacher_bits)]
        return cls(student, teachers, **kwargs)
