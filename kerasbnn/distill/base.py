"""The teacher–student base of every distiller, and what the distillers share.

`TeacherStudent` is a `keras.Model` holding a student, its teachers (frozen or trained with
it), one dict-output feature extractor per model and the method's named, weighted loss terms;
`MultiTeacherDistiller` (MAD), `CollaborativeDistiller` (CMT-KD), `PKKDDistiller` and the
progressive block model are small subclasses of it. One rule holds for all of them, the rule
Keras' own compiled losses follow: `compute_loss` returns the replica's share,
`replica_share(loss)` = the mean over the replica's batch divided by the number of replicas
in sync, because a `tf.distribute` optimizer sums the replicas' gradients. Every term is
computed unscaled, and the logged terms stay unscaled.
"""

import inspect

import keras
import tensorflow as tf
from keras import ops

from kerasbnn.distill.checks import check_choice, check_number
from kerasbnn.distill.logits_cache import cached_inputs, teachers_from_cache
from kerasbnn.distill.losses import LogitsDistillation, cross_entropy, weighted_batch_mean

__all__ = [
    "TeacherStudent", "TermsDistiller", "Untracked", "adapter", "arguments", "check_choice",
    "check_models", "check_number", "compatible", "feature_extractor", "replica_share",
    "resolve_taps", "sparse_labels"]


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


def resolve_taps(feature_taps, student, teachers):
    """`feature_taps` as a list of (student_layer, teacher_layer) pairs: `"auto"` (the zoo's
    `kerasbnn.models.taps`, which must agree between student and teachers), None (no taps), or
    a list of layer names or of pairs (MAD and CMT-KD)."""
    if feature_taps is None:
        return []
    if isinstance(feature_taps, str):
        if feature_taps != "auto":
            raise ValueError(
                "feature_taps must be 'auto', None (logits only) or a list of layer names or "
                f"(student_layer, teacher_layer) pairs, received {feature_taps!r}.")
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
        return [(name, name) for name in student_taps]
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
class TeacherStudent(keras.Model):
    r"""One student, its teachers and named, weighted loss terms: the base of every distiller.

    Keras' `keras.distillation.Distiller` is the anchor: the training step is Keras' own, and
    only `call` and `compute_loss` are the method's. `call` returns a dict:

    - `"logits"`: the student's logits (what `predict`, `evaluate` and the metrics see);
    - `"student_features"`: the student's tapped features, one per student tap;
    - `"teacher_logits"`: one tensor per teacher;
    - `"teacher_features"`: per tap, one tensor per teacher.

    Methods with one teacher side (PKKD, the block model, CMT-KD's combined teacher) return
    one tensor for `"teacher_logits"` and one per tap for `"teacher_features"`.

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
            infinite, leaving every variable as it was (`train_step`).
        teacher_jit_compile: run the frozen teachers in one XLA-compiled function.
        teacher_accuracy: log `teacher_accuracy` of `outputs["teacher_logits"]` (one tensor).
        config: the subclass's other constructor arguments, returned by `get_config`.
        name: model name.
        **kwargs: other `keras.Model` arguments.
    """

    SUPERVISED = ("student_loss", "teacher_loss")  # the terms outside `distillation_loss`
    FUSION_LOG = "delta"  # training logs carry `self.fusions` as delta_<key>_t<m>
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
        self._config = dict(config or {})
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
        terms = {k: self._checked(ops.convert_to_tensor(v, logits.dtype),
                                  self.DESCRIPTIONS.get(k, k), training)
                 for k, v in terms.items()}
        zero = ops.zeros((), dtype=logits.dtype)
        weighted = {k: self._checked(self.term_weights[k] * v, self._weighted_name(k), training)
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
            teacher_logits = y_pred["teacher_logits"]
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

    # ------------------------------------------------------------------ non-finite check

    def _weighted_name(self, term):
        """How a non-finite message names `term` times its weight (the term was finite)."""
        weight = self.WEIGHTS.get(term, "its weight")
        return (f"{self.DESCRIPTIONS.get(term, term)} is finite, but times {weight}="
                f"{self.term_weights[term]:g} it")

    def _non_finite_message(self, name):
        fix = ("Lower that weight" if " times " in name else
               "Lower the learning rate, or check the inputs and the teachers")
        return (
            f"{type(self).__name__}: {name} is NaN or infinite, so training stopped before "
            "this step's update (the student's weights are those after the last step whose "
            "loss and gradients were finite; this step's batch-norm statistics were put "
            f"back). {fix}")

    def _checked(self, value, name, training):
        """`value`, checked for NaN/inf when training with `check_finite`: at once, or
        inside `train_step` after it has put back the step's state (`_pending_checks`)."""
        if not (self.check_finite and training):
            return value
        if self._pending_checks is not None:
            self._pending_checks.append((value, name))
            return value
        return tf.debugging.check_numerics(value, self._non_finite_message(name))

    def _forward_state(self):
        """Variables a training forward pass writes (BatchNormalization statistics)."""
        frozen = set() if self.train_teachers else {
            id(v) for t in self.teachers for v in t.variables}
        return [v for v in self.non_trainable_variables if id(v) not in frozen]

    def _guard_step(self, saved, gradients):
        """Puts back `saved` state unless every pending term and gradient is finite, then
        checks them (raising `InvalidArgumentError` naming the first bad one); returns
        `gradients` made to wait for the checks."""
        checks, self._pending_checks = self._pending_checks, None
        terms = [ops.all(ops.isfinite(value)) for value, _ in checks]
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            grads = [ops.all(ops.isfinite(g.values if isinstance(g, tf.IndexedSlices) else g))
                     for g in gradients if g is not None]
            grads_ok = ops.all(ops.stack(grads)) if grads else ops.convert_to_tensor(True)
            checks.append((ops.where(grads_ok, 0.0, float("nan")),
                           "a gradient (with a finite loss)"))
            terms.append(grads_ok)
        finite = ops.all(ops.stack(terms))
        done = []
        for variable, value in saved:
            variable.assign(ops.where(finite, variable.value, value))
            done.append(tf.identity(variable.value))  # after the assignment
        for value, name in checks:  # one after the other: the first bad term is named
            with tf.control_dependencies(done):
                done = [tf.debugging.check_numerics(value, self._non_finite_message(name))]
        with tf.control_dependencies(done):
            return [None if g is None else
                    tf.nest.map_structure(tf.identity, g, expand_composites=True)
                    for g in gradients]

    def train_step(self, data):
        """Keras' own step; with `check_finite`, a step whose loss terms or gradients are not
        finite changes no variable (`_guard_step`) and raises."""
        if not self.check_finite:
            return {**super().train_step(data), **self._fusion_logs()}
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        saved = [(v, tf.identity(v.value)) for v in self._forward_state()]
        self._pending_checks = []
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred, sample_weight, training=True)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self._pending_checks.append((loss, "loss (with the student's regularization)"))
        self.optimizer.apply(self._guard_step(saved, gradients), variables)
        return {**self.compute_metrics(x, y, y_pred, sample_weight), **self._fusion_logs()}

    def _fusion_logs(self):
        """Every fusion coefficient after softmax, as `<FUSION_LOG>_<key>_t<m>`."""
        return {f"{self.FUSION_LOG}_{key}_t{m}": f.delta()[m]
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
