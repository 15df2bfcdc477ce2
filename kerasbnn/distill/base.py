"""The teacher–student base of every distiller, and what the distillers share.

`TeacherStudent` is a `keras.Model` holding a student, its teachers (frozen or trained with
it), one dict-output feature extractor per model and the method's named, weighted loss terms;
`MultiTeacherDistiller` (MAD), `CollaborativeDistiller` (CMT-KD), `PKKDDistiller` and the
progressive block model are small subclasses of it; which layers they tap is
`kerasbnn.distill.taps`' concern, the finite-loss check `kerasbnn.distill.finite`'s. One
rule holds for all of them, the rule Keras' own compiled losses follow: `compute_loss`
returns the replica's share, `replica_share(loss)` = the mean over the replica's batch
divided by the number of replicas in sync, because a `tf.distribute` optimizer sums the
replicas' gradients. Every term is computed unscaled, and the logged terms stay unscaled.
"""

import inspect

import keras
import tensorflow as tf
from keras import ops

from kerasbnn.distill.checks import check_choice, check_number
from kerasbnn.distill.finite import FiniteCheck
from kerasbnn.distill.fusion import importance_key
from kerasbnn.distill.logits_cache import cached_inputs, teachers_from_cache
from kerasbnn.distill.losses import cross_entropy, weighted_batch_mean
from kerasbnn.distill.taps import (
    Untracked, adapter, check_models, compatible, feature_extractor, resolve_taps, zoo_taps)

__all__ = [
    "TeacherStudent", "TermsDistiller", "Untracked", "adapter", "arguments", "check_choice",
    "check_models", "check_number", "compatible", "feature_extractor", "replica_share",
    "resolve_taps", "sparse_labels", "zoo_taps"]


def replica_share(loss):
    """The replica's share of `loss` (its batch mean): `loss / replicas` in sync under the
    current `tf.distribute` strategy (module docstring)."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else ops.convert_to_tensor(loss)


def arguments(local_vars, *models):
    """A subclass's constructor arguments for `get_config`: its `locals()` at the first line,
    without `self`, `kwargs`, `name` and the model arguments `models`."""
    skip = {"self", "kwargs", "name", "__class__", *models}
    return {k: v for k, v in local_vars.items() if k not in skip}


def sparse_labels(labels, num_classes):
    """Integer labels `(batch,)` from integer or one-hot `(batch, classes)` labels."""
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 2 and labels.shape[-1] == num_classes:
        return ops.argmax(labels, axis=-1)
    return ops.cast(ops.reshape(labels, (-1,)), "int32")


@keras.saving.register_keras_serializable(package="kerasbnn")
class TeacherStudent(FiniteCheck, keras.Model):
    r"""One student, its teachers and named, weighted loss terms: the base of every distiller.

    Keras' `keras.distillation.Distiller` is the anchor: the training step is Keras' own
    (`train_step` adds the importance logs, and with `check_finite` guards the update: the
    module `kerasbnn.distill.finite` says why that needs the step), and only `call` and
    `compute_loss` are the method's. `call` returns one structure in every distiller, a dict:

    - `"logits"`: the student's logits, a tensor (what `predict`, `evaluate` and the metrics
      see);
    - `"student_features"`: a list, the student's feature at each student tap;
    - `"teacher_logits"`: a list, one logits tensor per teacher side: each teacher (MAD, KD,
      the average teacher), or the one teacher the method trains or builds (PKKD's CNN,
      CMT-KD's combined teacher, the progressive block model's float teacher);
    - `"teacher_features"`: a list with one entry per tap, matched to `"student_features"`,
      each entry a list with one tensor per teacher side.

    A method may add keys of its own after these (PKKD: `"kernel_features"`);
    tests/distill/contract_test.py runs every registered distiller against this structure.

    `feature_taps="auto"` means one thing in every distiller: the class's `auto_taps(student,
    teachers)`, the distillation points the zoo's models declare for the method: the taps of
    `kerasbnn.models.taps` (`zoo_taps`: every stage's output; MAD, CMT-KD, KD), or for PKKD's
    adder networks `pkkd_layers`.

    Learned teacher importances (MAD's delta, CMT-KD's pi: softmax of a `TeacherFusion`'s
    logits, one per distillation point in `self.fusions`) are logged by training steps as
    `importance/<point>/t<m>` (`kerasbnn.distill.fusion.importance_key`) and returned by
    `deltas()`.

    Subclasses compute their unweighted terms in `loss_terms(y, outputs, sample_weight)`, a
    dict keyed by the names given in `terms`; the base weights and sums them:

        L = sum_k w_k L_k + regularization,  distillation_loss = sum_{k not CE} w_k L_k,

    logs every term under its name (`student_loss`, `kl_loss`, `feature_loss`, ...), with
    `distillation_loss`, `total_loss` (without regularization) and `loss`, and returns the
    replica's share `replica_share(L)` (the one replica-scaling rule, module docstring).

    Teachers are either frozen (`train_teachers=False`: `trainable=False`, run in inference
    mode, outputs under stop-gradient) or trained with the student (CMT-KD, PKKD).

    Args:
        student: functional `keras.Model` returning logits.
        teachers: a model or a non-empty list of models (see `check_models`).
        terms: `{term name: weight}` of the method's loss terms, in logging order.
        student_taps: layer names of the student whose outputs `call` returns.
        teacher_taps: the teachers' layer names matched to them (default: `student_taps`).
        train_teachers: train the teachers with the student.
        track_teachers: track the teachers as sub-models (their weights are saved with the
            distiller); CMT-KD tracks only the teacher parts it trains.
        check_finite: stop `fit` before a step whose loss terms or gradients are NaN or
            infinite, leaving every variable as it was (`kerasbnn.distill.finite`).
        teacher_jit_compile: run the frozen teachers in one XLA-compiled function.
        teacher_accuracy: log `teacher_accuracy` of the first teacher side
            (`outputs["teacher_logits"][0]`; PKKD's and CMT-KD's only one).
        config: the subclass's other constructor arguments, returned by `get_config` (None:
            the base's own arguments, for a `TeacherStudent` used directly).
        name: model name.
        **kwargs: other `keras.Model` arguments.
    """

    SUPERVISED = ("student_loss", "teacher_loss")  # the terms outside `distillation_loss`
    DESCRIPTIONS = {}  # {term: what the non-finite message calls it}, default its name
    WEIGHTS = {}  # {term: the constructor argument that weights it}, default "its weight"

    def __init__(self, student, teachers, terms, *, student_taps=(), teacher_taps=None,
                 train_teachers=False, track_teachers=True, check_finite=False,
                 teacher_jit_compile=False, teacher_accuracy=False, config=None, name=None,
                 **kwargs):
        super().__init__(name=name, **kwargs)
        teachers = check_models(student, teachers, type(self).__name__)
        self.term_weights = {key: float(weight) for key, weight in terms.items()}
        self.train_teachers, self.check_finite = bool(train_teachers), bool(check_finite)
        self._config = dict(config) if config is not None else {  # the base used directly
            "terms": dict(terms), "student_taps": list(student_taps),
            "teacher_taps": None if teacher_taps is None else list(teacher_taps),
            "train_teachers": train_teachers, "track_teachers": track_teachers,
            "check_finite": check_finite, "teacher_jit_compile": teacher_jit_compile,
            "teacher_accuracy": teacher_accuracy}
        self._student_loss = None
        self._pending_checks = None  # train_step collects the finiteness checks here
        self.fusions = {}  # {key: TeacherFusion}, set by methods that fuse teachers
        for teacher in teachers:
            teacher.trainable = self.train_teachers
        self.student = student
        self._teachers = Untracked(value=tuple(teachers))
        if track_teachers:
            self.tracked_teachers = list(teachers)
        self.student_taps = list(student_taps)
        self.teacher_taps = list(self.student_taps if teacher_taps is None else teacher_taps)
        run = self._run_teachers
        self._extractors = Untracked(
            student=feature_extractor(student, self.student_taps) if self.student_taps else None,
            teachers=[feature_extractor(t, self.teacher_taps) for t in teachers]
            if self.teacher_taps else None,
            run_teachers=tf.function(run, jit_compile=True) if teacher_jit_compile else run)
        names = ("loss", *self.term_weights, "distillation_loss", "total_loss")
        self.trackers = {key: keras.metrics.Mean(name=key) for key in names}
        self.teacher_accuracy = (
            keras.metrics.SparseCategoricalAccuracy(name="teacher_accuracy")
            if teacher_accuracy else None)
        self.built = True  # every part is built; subclasses add built layers only

    @classmethod
    def auto_taps(cls, student, teachers):
        """The layer names `feature_taps="auto"` stands for: the distillation points the zoo's
        models declare for the method. Here the zoo's taps (`zoo_taps`); PKKD overrides it.

        Raises:
            ValueError: if the models declare no taps, or different ones.
        """
        return zoo_taps(student, teachers)

    @property
    def teachers(self):
        """The teacher models, in the order given."""
        return list(self._teachers.value)

    # ------------------------------------------------------------------ forward pass

    def _run_teachers(self, x, training):
        if self._extractors.teachers is None:
            return [{"logits": t(x, training=training)} for t in self.teachers]
        return [dict(e(x, training=training)) for e in self._extractors.teachers]

    def _cached_teachers(self, logits):
        """The teachers' outputs from cached logits (`kerasbnn.distill.logits_cache`)."""
        if self.train_teachers or self._extractors.teachers is not None:
            raise ValueError(
                f"{type(self).__name__}: cached teacher logits replace the teachers' pass, but "
                + ("its teachers train with the student" if self.train_teachers else
                   f"it also taps the teachers' features {self.teacher_taps}")
                + "; pass the plain inputs, or build a distiller of frozen teachers without "
                "feature taps (feature_taps=None, e.g. MAD with feature_weight=0).")
        return teachers_from_cache(logits, len(self.teachers))

    def call(self, inputs, training=None):
        """Student and teachers once; the dict of the class docstring. `inputs` may be
        `with_teacher_logits(x, logits)` (frozen teachers, no teacher taps): the teachers'
        logits are then read from it, not computed."""
        inputs, cached = cached_inputs(inputs)
        if self._extractors.student is None:
            student = {"logits": self.student(inputs, training=training)}
        else:
            student = dict(self._extractors.student(inputs, training=training))
        if cached is not None:
            teachers = self._cached_teachers(cached)
        else:
            teachers = self._extractors.run_teachers(
                inputs, bool(training and self.train_teachers))
        if not self.train_teachers:
            teachers = [{k: ops.stop_gradient(v) for k, v in t.items()} for t in teachers]
        return {
            "logits": student["logits"],
            "student_features": [student[tap] for tap in self.student_taps],
            "teacher_logits": [t["logits"] for t in teachers],
            "teacher_features": [[t[tap] for t in teachers] for tap in self.teacher_taps]}

    def predict_step(self, data):
        """`predict` returns the student's logits."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.student(cached_inputs(x)[0], training=False)

    def deltas(self):
        """The fusion coefficients after softmax, `{key: numpy array (M,)}` (`self.fusions`)."""
        return {key: ops.convert_to_numpy(f.delta()) for key, f in self.fusions.items()}

    def own_weights(self):
        """The method's own weights: every weight of the distiller that is neither the
        student's nor a teacher's, in a fixed order (`self.weights`').

        MAD: the fusion logits theta of every distillation point (eqs. 7-8) and the adapters
        r_i (eq. 10); plain KD (one teacher, no taps), the average teacher and attention
        transfer have none that learn. Optimizer state is not part of them. ReActNet's two
        steps (`kerasbnn.distill.schedules`) carry them from step 1's distiller into step
        2's (`set_own_weights`), so that what the method learned in step 1 is kept.

        Returns:
            A list of variables (empty when the method has no weights of its own).
        """
        models = {id(v) for model in (self.student, *self.teachers) for v in model.weights}
        return [v for v in self.weights if id(v) not in models]

    def set_own_weights(self, values):
        """Assigns `values`, arrays in the order of `own_weights()` (e.g. those of another
        distiller of the same method, taps and teachers), to `own_weights()`.

        Raises:
            ValueError: if the number of arrays or a shape differs (the distillers then
                differ in method, taps or teachers), listing both.
        """
        weights = self.own_weights()
        given = [tuple(ops.shape(value)) for value in values]
        if given != [tuple(w.shape) for w in weights]:
            raise ValueError(
                f"{type(self).__name__}: received arrays of shapes {given} for its own weights "
                f"{[(w.path, tuple(w.shape)) for w in weights]}; pass the own_weights() of a "
                "distiller of the same method, feature taps and teachers.")
        for weight, value in zip(weights, values):
            weight.assign(value)

    # ------------------------------------------------------------------ loss

    def loss_terms(self, y, outputs, sample_weight=None):
        """The method's unweighted loss terms, `{name: scalar}` over the names of `terms`."""
        raise NotImplementedError

    def supervised_loss(self, y, logits, sample_weight=None):
        """Batch mean of the compiled student loss (default: cross-entropy from logits),
        unscaled across replicas."""
        if self._student_loss is None:
            return cross_entropy(y, logits, sample_weight)
        fn = self._student_loss
        values = ops.convert_to_tensor(fn.call(y, logits) if isinstance(fn, keras.losses.Loss)
                                       else fn(y, logits))
        if len(values.shape) > 1:
            values = ops.mean(values, axis=tuple(range(1, len(values.shape))))
        return weighted_batch_mean(values, sample_weight)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """sum_k w_k L_k + regularization, logged per term; returns the replica's share."""
        if y_pred is None:
            y_pred = self(x, training=training)
        logits = y_pred["logits"]
        terms = self.loss_terms(y, y_pred, sample_weight)
        terms = {k: self.checked(ops.convert_to_tensor(v, logits.dtype),
                                  self.DESCRIPTIONS.get(k, k), training)
                 for k, v in terms.items()}
        zero = ops.zeros((), dtype=logits.dtype)
        weighted = {k: self.checked(self.term_weights[k] * v, self.weighted_name(k), training)
                    for k, v in terms.items()}
        distillation = sum((v for k, v in weighted.items() if k not in self.SUPERVISED), zero)
        total = sum(weighted.values(), zero)
        regularizers = [ops.cast(r, total.dtype) for r in (
            self.losses if self.train_teachers else self.student.losses)]
        loss = total + (ops.sum(ops.stack(regularizers)) if regularizers else zero)
        batch = ops.shape(logits)[0]
        logged = {**terms, "distillation_loss": distillation, "total_loss": total, "loss": loss}
        for key, value in logged.items():
            self.trackers[key].update_state(value, sample_weight=batch)
        if self.teacher_accuracy is not None and y is not None:
            teacher_logits = y_pred["teacher_logits"][0]
            labels = sparse_labels(y, teacher_logits.shape[-1])
            self.teacher_accuracy.update_state(labels, teacher_logits, sample_weight)
        return replica_share(loss)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """The compiled metrics see the student's logits."""
        return super().compute_metrics(x, y, y_pred["logits"], sample_weight=sample_weight)

    @property
    def metrics(self):
        own = [*self.trackers.values()] + ([self.teacher_accuracy] if self.teacher_accuracy else [])
        # Keras' own "loss" tracker is not reported: ours (the same value) replaces it.
        rest = [m for m in super().metrics if m.name != "loss" and not any(m is o for o in own)]
        return own[:1] + rest + own[1:]

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """`keras.Model.compile`; `loss` replaces the student's cross-entropy L_CE (a Keras
        loss or identifier called as `loss(y, student_logits)`)."""
        if loss is not None:
            fn = keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss
            if not callable(fn):
                raise ValueError(f"loss must be a Keras loss or identifier, received {loss!r}.")
            self._student_loss = fn
        super().compile(optimizer=optimizer, loss=None, metrics=metrics, **kwargs)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config and self._student_loss is not None:
            config["loss"] = keras.saving.serialize_keras_object(self._student_loss)
        return config

    def compile_from_config(self, config):
        """Re-compiles a loaded distiller with its saved optimizer, student loss and metrics."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.optimizer is not None:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------ training step

    def train_step(self, data):
        """Keras' own step with the learned teacher importances added to its logs
        (`importance_logs`); with `check_finite`, the checked step of
        `kerasbnn.distill.finite`, whose module docstring says why it replaces Keras' step."""
        logs = self.guarded_train_step(data) if self.check_finite else super().train_step(data)
        return {**logs, **self.importance_logs()}

    def importance_logs(self):
        """Every learned teacher importance (fusion coefficient after softmax) as
        `importance/<point>/t<m>` (`importance_key`), for the training logs."""
        return {importance_key(key, m): f.delta()[m]
                for key, f in self.fusions.items() for m in range(f.num_teachers)}

    # ------------------------------------------------------------------ serialization

    def get_config(self):
        teachers = [keras.saving.serialize_keras_object(t) for t in self.teachers]
        # PKKD and the block model take one `teacher`, the multi-teacher methods `teachers`.
        one = "teacher" in inspect.signature(type(self).__init__).parameters
        teachers = {"teacher": teachers[0]} if one else {"teachers": teachers}
        student = keras.saving.serialize_keras_object(self.student)
        return {"student": student, **teachers, **self._config, "name": self.name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("student", "teacher"):
            if key in config:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        if "teachers" in config:
            config["teachers"] = [keras.saving.deserialize_keras_object(t)
                                  for t in config["teachers"]]
        return cls(**config)


@keras.saving.register_keras_serializable(package="kerasbnn")
class TermsDistiller(TeacherStudent):
    r"""One frozen teacher and Keras `DistillationLoss` terms that declare their own taps.

    The shape of Keras' `keras.distillation.Distiller`, under the base's replica rule:
    L = ce_weight L_CE + sum_k w_k L_k, where term k compares the teacher's and the student's
    outputs at its `teacher_layer_name` and `student_layer_name` (the logits when None), and
    one feature extractor per model taps exactly those layers (`kerasbnn.methods.attention`
    runs attention transfer this way).

    Args:
        student: functional `keras.Model` returning logits.
        teacher: the frozen teacher.
        losses: `{term name: (DistillationLoss, weight)}`; each name is logged.
        ce_weight: the weight of the student's cross-entropy (`student_loss`).
    """

    def __init__(self, student, teacher, losses, *, ce_weight=1.0, name=None, **kwargs):
        losses = {key: (keras.saving.deserialize_keras_object(loss) if isinstance(loss, dict)
                        else loss, check_number(f"losses[{key!r}] weight", weight))
                  for key, (loss, weight) in losses.items()}
        pairs = [(getattr(loss, "student_layer_name", None),
                  getattr(loss, "teacher_layer_name", None)) for loss, _ in losses.values()]
        taps = list(dict.fromkeys(pair for pair in pairs if pair != (None, None)))
        if any(None in pair for pair in taps):
            raise ValueError(f"TermsDistiller: a loss names a layer of one model only: {taps}; "
                             "name both layers, or neither for the logits.")
        self.term_losses = {key: loss for key, (loss, _) in losses.items()}
        self._tap_of = {key: taps.index(pair) if pair in taps else None
                        for key, pair in zip(losses, pairs)}
        config = {"losses": {k: (keras.saving.serialize_keras_object(loss), w)
                             for k, (loss, w) in losses.items()}, "ce_weight": ce_weight}
        super().__init__(
            student, teacher, {"student_loss": check_number("ce_weight", ce_weight),
                               **{key: w for key, (_, w) in losses.items()}},
            student_taps=[s for s, _ in taps], teacher_taps=[t for _, t in taps],
            config=config, name=name, **kwargs)

    def loss_terms(self, y, outputs, sample_weight=None):
        terms = {"student_loss": self.supervised_loss(y, outputs["logits"], sample_weight)}
        for key, loss in self.term_losses.items():
            tap = self._tap_of[key]
            if tap is None:
                pair = outputs["teacher_logits"][0], outputs["logits"]
            else:
                pair = outputs["teacher_features"][tap][0], outputs["student_features"][tap]
            terms[key] = loss.compute_loss(*pair, sample_weight=sample_weight)
        return terms
