r"""Block-wise distillation of a binary student from its float teacher (thesis methods I, II, III).

The student is a binarized copy of the teacher (same builder, same layer names); both are cut
with `kerasbnn.models.parts` into stem, stages 1..S and head, which share the models' layers,
so training a part trains the student. Each method is a short schedule of Keras `fit` phases,
followed by ordinary training of the whole binary student:

- Method I, progressive block-wise KD (Wang et al., IJCAI 2018; thesis eq. 2.13): at stage s the
  image runs through [student stem, student stages 1..s, teacher stages s+1..S, student head];
  L_I = feature_weight * L_local + (1 - feature_weight) * CE, with L_local = mean (x^t_s - x^s_s)^2 (thesis eq. 2.14)
  between the student's and the teacher's stage-s outputs, and only stage s (or 1..s) trainable.
- Method II, LIT (Koratana et al., ICML 2019; thesis eq. 2.15): all stages at once; student
  stage s is fed the teacher's stage s-1 output and regressed onto the teacher's stage s output,
  L_local = sum_s MSE(Stu_s(T_{s-1}(x)), T_s(x)); the student also runs end to end for
  L_KD = ce_weight * CE(z_s, y) + (1 - ce_weight) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T));
  L_II = feature_weight * L_local + (1 - feature_weight) * L_KD, stem and head frozen copies of the teacher's.
- Method III, stage-by-stage KD (Gao et al., 2018; thesis eq. 2.17): progressive like I with
  the MSE term alone (L_III = L_local; feature_weight = 1).

The final phase trains every layer of the student with CE (the thesis) or with L_KD (LIT's code).

References:
    Thesis "Training Binary Deep Neural Networks Using Knowledge Distillation", section 2.2.1.
    Wang et al., "Progressive Blockwise Knowledge Distillation for Neural Network
    Acceleration", IJCAI 2018. Koratana et al., "LIT: Learned Intermediate Representation
    Training for Model Compression", ICML 2019 (code: stanford-futuredata/lit-code).
    Gao et al., "An Embarrassingly Simple Approach for Knowledge Distillation",
    arXiv:1812.01819.
"""

import copy
import logging
import os

import keras
from keras import ops

from kerasbnn import data, models
from kerasbnn.distill.base import replica_share
from kerasbnn.distill.losses import LogitsDistillation, cross_entropy
from kerasbnn.models import parts as model_parts
from kerasbnn.transfer import copy_matching_weights  # noqa: F401  (re-exported)

__all__ = ["METHODS", "RUN_DEFAULTS", "ProgressiveDistiller", "copy_matching_weights", "run_progressive"]

METHODS = ("I", "II", "III")
TRAINABLE = ("active", "cumulative")
FINAL_LOSSES = ("ce", "kd")

logger = logging.getLogger(__name__)


def _mse(a, b):
    return ops.mean(ops.square(ops.subtract(a, b)))


class _BlockwiseModel(keras.Model):
    """One training phase: runs teacher and student parts and computes the phase's loss.

    Training-only: `fit` on it trains the student's layers; the artefact is the student.
    """

    def __init__(self, teacher_parts, student_parts, *, mode, stage, feature_weight, ce_weight, temperature, **kwargs):
        super().__init__(**kwargs)
        self.teacher_parts = teacher_parts
        self.student_parts = student_parts
        self.mode = mode
        self.stage = stage
        self.feature_weight = feature_weight
        self.ce_weight = ce_weight
        self.kd = LogitsDistillation(temperature=temperature, scale_by_temperature_squared=True)
        self.num_stages = len([k for k in student_parts if k.startswith("stage")])
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")

    def _teacher(self, name, x):
        return self.teacher_parts[name](x, training=False)

    def _student(self, name, x, training):
        return self.student_parts[name](x, training=training)

    def call(self, inputs, training=None):
        t = [self._teacher("stem", inputs)]
        for s in range(1, self.num_stages + 1):
            t.append(self._teacher(f"stage{s}", t[-1]))
        if self.mode == "progressive":
            u = self._student("stem", inputs, training)
            for s in range(1, self.stage + 1):
                u = self._student(f"stage{s}", u, training)
            student_features, teacher_features = [u], [t[self.stage]]
            h = u
            for s in range(self.stage + 1, self.num_stages + 1):
                h = self._teacher(f"stage{s}", h)
            return {
                "logits": self._student("head", h, training),
                "student_features": student_features,
                "teacher_features": teacher_features,
            }
        # LIT (and the final KD phase): the student end to end, plus (LIT) each student stage
        # fed with the teacher's previous-stage output.
        u = self._student("stem", inputs, training)
        for s in range(1, self.num_stages + 1):
            u = self._student(f"stage{s}", u, training)
        outputs = {"logits": self._student("head", u, training), "teacher_logits": self._teacher("head", t[-1])}
        if self.mode == "lit":
            outputs["student_features"] = [
                self._student(f"stage{s}", t[s - 1], training) for s in range(1, self.num_stages + 1)
            ]
            outputs["teacher_features"] = t[1:]
        return outputs

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y_pred is None:
            y_pred = self(x, training=training)
        ce = cross_entropy(y, y_pred["logits"], sample_weight)
        if self.mode == "progressive":
            student_loss = ce
        else:
            soft = self.kd.compute_loss(y_pred["teacher_logits"], y_pred["logits"], sample_weight=sample_weight)
            student_loss = self.ce_weight * ce + (1.0 - self.ce_weight) * soft
        if self.mode == "kd":
            local = ops.zeros_like(student_loss)
            total = student_loss
        else:
            local = sum(
                _mse(s, ops.stop_gradient(t)) for s, t in zip(y_pred["student_features"], y_pred["teacher_features"])
            )
            total = self.feature_weight * local + (1.0 - self.feature_weight) * student_loss
        self.student_loss_tracker.update_state(student_loss)
        self.distillation_loss_tracker.update_state(local)
        return replica_share(total)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, y_pred["logits"], sample_weight=sample_weight)

    @property
    def metrics(self):
        return [*super().metrics, self.student_loss_tracker, self.distillation_loss_tracker]


class ProgressiveDistiller:
    r"""Schedules block-wise distillation of a binary student from a float teacher.

    The student must be built by the teacher's builder (same `stem_out`, `stage<i>_out`,
    `logits` layers, e.g. `resnet20(bits=32)` and `resnet20(bits=1, binary="xnorpp",
    block="double_relu")`). By default it starts as a copy of the teacher
    (`copy_matching_weights`); the teacher is frozen and always runs in inference mode.

    Schedules (S = number of stages), each KD phase lasting `epochs_per_stage` epochs, then
    `final_epochs` of training the whole student:

    - `"I"`: stages s = 1..S, loss feature_weight * MSE(stage s) + (1 - feature_weight) * CE of the hybrid network
      [student 1..s | teacher s+1..S]; trainable: stage s (`trainable="active"`) or stages
      1..s (`"cumulative"`).
    - `"II"`: one phase with every stage trainable, student stage s fed the teacher's stage
      s-1 output; loss feature_weight * sum_s MSE + (1 - feature_weight) * (ce_weight CE + (1 - ce_weight) T^2 KL).
    - `"III"`: as `"I"` with feature_weight = 1 (MSE only; the hybrid logits are only reported).

    During the KD phases the student's stem and head are frozen (they are copies of the
    teacher's). Frozen BatchNormalization layers run in inference mode (Keras 3 semantics).
    Each phase prints one line saying which stages are binary, which float (teacher), which
    trainable, and the loss; `fit` returns the same records with each phase's Keras history.

    Logged metrics: `loss` (the phase total), `student_loss` (CE, or LIT's L_KD),
    `distillation_loss` (L_local), and the compiled metrics of the (hybrid) logits.

    Args:
        teacher: float functional model from a `kerasbnn.models` builder (logits output).
        student: binary model from the same builder.
        method: `"I"`, `"II"` or `"III"`.
        feature_weight: weight of L_local (thesis best for method I: 0.4). Ignored by method III.
        ce_weight: weight of the hard CE inside L_KD (method II; LIT's code: 0.95).
        temperature: T of the soft term (method II; LIT's code: 6).
        trainable: `"active"` (only the current stage; the thesis' recommended reading) or
            `"cumulative"` (stages 1..s) for methods I and III.
        final_loss: `"ce"` (the thesis) or `"kd"` (LIT's fine-tuning with L_KD).
        copy_teacher: initialise the student from the teacher's weights.
        optimizer: optimizer identifier (name, config dict or instance, cloned for every
            phase) or a zero-argument callable returning a fresh optimizer.
        final_optimizer: the same for the final phase (default: `optimizer`).
        metrics: compiled metrics of every phase (default `["accuracy"]`).
        jit_compile: passed to `compile` (XLA).
        run_eagerly: passed to `compile` (skips graph tracing: faster for tiny runs).
        verbose: print the schedule lines (they always go to the `kerasbnn.distill.progressive`
            logger).

    Raises:
        ValueError: for an unknown method, trainable or final_loss, feature_weight or ce_weight outside
            [0, 1], a non-positive temperature, a student whose parts do not match the
            teacher's (names or shapes), or a teacher without a head.

    Example:
    ```python
    teacher = kerasbnn.models.resnet20((28, 28, 1), 10)
    ...  # train the teacher
    student = kerasbnn.models.resnet20((28, 28, 1), 10, bits=1, binary="xnorpp", block="double_relu")
    distiller = ProgressiveDistiller(student, teacher, method="I", feature_weight=0.4)
    history = distiller.fit(train_ds, epochs_per_stage=2, final_epochs=6, validation_data=test_ds)
    distiller.student.save("student.keras")
    ```

    Config (YAML, for `run_progressive`):
    ```yaml
    method: I
    feature_weight: 0.4
    trainable: active
    epochs_per_stage: 40
    final_epochs: 120
    ```
    """

    def __init__(
        self,
        student,
        teacher,
        method="I",
        *,
        feature_weight=0.4,
        ce_weight=0.95,
        temperature=6.0,
        trainable="active",
        final_loss="ce",
        copy_teacher=True,
        optimizer="adam",
        final_optimizer=None,
        metrics=("accuracy",),
        jit_compile="auto",
        run_eagerly=False,
        verbose=True,
    ):
        method = str(method).upper()
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}. Valid methods: {', '.join(METHODS)}.")
        for name, value in (("feature_weight", feature_weight), ("ce_weight", ce_weight)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], received {value!r}.")
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be positive, received {temperature!r}.")
        if trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, received {trainable!r}.")
        if final_loss not in FINAL_LOSSES:
            raise ValueError(f"final_loss must be one of {FINAL_LOSSES}, received {final_loss!r}.")
        self.teacher_parts = model_parts(teacher)
        self.student_parts = model_parts(student)
        self._check_parts(teacher, student)
        self.teacher = teacher
        self.student = student
        self.method = method
        self.feature_weight = 1.0 if method == "III" else float(feature_weight)
        self.ce_weight = float(ce_weight)
        self.temperature = float(temperature)
        self.trainable = trainable
        self.final_loss = final_loss
        self.optimizer = optimizer
        self.final_optimizer = optimizer if final_optimizer is None else final_optimizer
        self.metrics = list(metrics)
        self.jit_compile = jit_compile
        self.run_eagerly = bool(run_eagerly)
        self.verbose = verbose
        self.teacher.trainable = False
        self._initially_trainable = {layer.name: layer.trainable for layer in student.layers}
        if copy_teacher:
            copy_matching_weights(teacher, student)

    def _check_parts(self, teacher, student):
        if list(self.teacher_parts) != list(self.student_parts) or "head" not in self.teacher_parts:
            raise ValueError(
                f"Teacher parts {list(self.teacher_parts)} and student parts "
                f"{list(self.student_parts)} must be equal and end with a head: build both with "
                "the same kerasbnn.models builder and include_top=True."
            )
        for name in self.teacher_parts:
            if name == "head":
                continue
            t_shape = tuple(self.teacher_parts[name].outputs[0].shape[1:])
            s_shape = tuple(self.student_parts[name].outputs[0].shape[1:])
            if t_shape != s_shape:
                raise ValueError(
                    f"The {name} outputs differ: teacher {t_shape}, student {s_shape}; block-wise "
                    "distillation feeds one network's features to the other's stages."
                )
        t_out, s_out = tuple(teacher.outputs[0].shape[1:]), tuple(student.outputs[0].shape[1:])
        if t_out != s_out:
            raise ValueError(f"Teacher logits {t_out} and student logits {s_out} differ.")

    @property
    def stage_names(self):
        return [name for name in self.student_parts if name.startswith("stage")]

    def schedule(self):
        """The phases `fit` will run, as dicts: name, binary/float/trainable stages, loss."""
        stages = self.stage_names
        phases = []
        if self.method in ("I", "III"):
            for s, name in enumerate(stages, start=1):
                trainable = [name] if self.trainable == "active" else stages[:s]
                if self.method == "I":
                    loss = f"{self.feature_weight:g}*MSE({name}) + {1 - self.feature_weight:g}*CE"
                else:
                    loss = f"MSE({name})"
                phases.append(
                    dict(
                        phase=f"stage {s}/{len(stages)}",
                        mode="progressive",
                        stage=s,
                        binary=stages[:s],
                        float=stages[s:],
                        trainable=trainable,
                        loss=loss,
                    )
                )
        else:
            phases.append(
                dict(
                    phase="LIT",
                    mode="lit",
                    stage=len(stages),
                    binary=stages,
                    float=[],
                    trainable=list(stages),
                    loss=(
                        f"{self.feature_weight:g}*sum MSE(student stage s <- teacher stage s-1) + "
                        f"{1 - self.feature_weight:g}*({self.ce_weight:g}*CE + {1 - self.ce_weight:g}*T^2*KL, T={self.temperature:g})"
                    ),
                )
            )
        final = "CE" if self.final_loss == "ce" else f"{self.ce_weight:g}*CE + {1 - self.ce_weight:g}*T^2*KL"
        phases.append(
            dict(
                phase="final",
                mode=self.final_loss,
                stage=len(stages),
                binary=stages,
                float=[],
                trainable=["stem", *stages, "head"],
                loss=final,
            )
        )
        return phases

    def _make_optimizer(self, identifier):
        if callable(identifier) and not isinstance(identifier, keras.optimizers.Optimizer):
            return identifier()
        if isinstance(identifier, keras.optimizers.Optimizer):
            return identifier.__class__.from_config(identifier.get_config())
        return keras.optimizers.get(copy.deepcopy(identifier))

    def _set_trainable(self, names):
        # Layer by layer, so that layers the builder made non-trainable (fixed shifts) stay so.
        for name, part in self.student_parts.items():
            for layer in part.layers:
                if layer.name in self._initially_trainable:
                    layer.trainable = name in names and self._initially_trainable[layer.name]

    def _log(self, phase):
        line = (
            f"[progressive method {self.method}] {phase['phase']}: binary: {', '.join(phase['binary']) or '-'}"
            f" | float (teacher): {', '.join(phase['float']) or '-'}"
            f" | trainable: {', '.join(phase['trainable'])} | loss = {phase['loss']}"
        )
        logger.info(line)
        if self.verbose:
            print(line)

    def _phase_model(self, phase):
        if phase["mode"] == "ce":
            return self.student
        return _BlockwiseModel(
            self.teacher_parts,
            self.student_parts,
            mode=phase["mode"],
            stage=phase["stage"],
            feature_weight=self.feature_weight,
            ce_weight=self.ce_weight,
            temperature=self.temperature,
            name=f"progressive_{phase['mode']}_stage{phase['stage']}",
        )

    def fit(self, x, epochs_per_stage=1, final_epochs=1, validation_data=None, callbacks=None, verbose="auto", **kwargs):
        """Runs the schedule: the KD phases, then the final training of the whole student.

        Args:
            x: a dataset of `(images, int labels)` batches (anything `keras.Model.fit` takes).
            epochs_per_stage: epochs of each KD phase (method II: of its single LIT phase).
            final_epochs: epochs of the final phase (0 skips it).
            validation_data: passed to every phase's `fit`.
            callbacks: passed to every phase's `fit`.
            verbose: Keras' `fit` verbosity.
            **kwargs: other `keras.Model.fit` arguments (e.g. `steps_per_epoch`).

        Returns:
            A list of phase records (the `schedule()` dicts) with a `history` key holding
            that phase's `History.history`.

        Raises:
            ValueError: for negative epochs.
        """
        for name, value in (("epochs_per_stage", epochs_per_stage), ("final_epochs", final_epochs)):
            if int(value) != value or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, received {value!r}.")
        # Keras warns that it cannot shuffle a tf.data.Dataset (it is shuffled by its pipeline).
        kwargs.setdefault("shuffle", not hasattr(x, "element_spec"))
        records = []
        try:
            for phase in self.schedule():
                epochs = final_epochs if phase["phase"] == "final" else epochs_per_stage
                if epochs == 0:
                    continue
                self._log(phase)
                self._set_trainable(phase["trainable"])
                model = self._phase_model(phase)
                optimizer = self._make_optimizer(self.final_optimizer if phase["phase"] == "final" else self.optimizer)
                if model is self.student:
                    model.compile(
                        optimizer,
                        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        metrics=list(self.metrics),
                        jit_compile=self.jit_compile,
                        run_eagerly=self.run_eagerly,
                    )
                else:
                    model.compile(
                        optimizer, metrics=list(self.metrics), jit_compile=self.jit_compile, run_eagerly=self.run_eagerly
                    )
                history = model.fit(
                    x,
                    epochs=int(epochs),
                    validation_data=validation_data,
                    callbacks=callbacks,
                    verbose=verbose,
                    **kwargs,
                )
                records.append({**phase, "history": history.history})
        finally:
            self._set_trainable(list(self.student_parts))
        return records


RUN_DEFAULTS = {
    "method": "I",
    "dataset": "fashion_mnist",
    "model": "resnet20",
    "teacher_kwargs": {},
    "student_kwargs": {"bits": 1, "binary": "xnorpp", "block": "double_relu"},
    "teacher_path": None,
    "teacher_epochs": 1,
    "epochs_per_stage": 1,
    "final_epochs": 1,
    "plain_init": "teacher",
    "batch_size": 128,
    "train_limit": None,
    "test_limit": None,
    "learning_rate": 1e-3,
    "feature_weight": 0.4,
    "ce_weight": 0.95,
    "temperature": 6.0,
    "trainable": "active",
    "final_loss": "ce",
    "seed": 0,
    "output": None,
    "jit_compile": "auto",
    "verbose": 2,
}


def _train_teacher(config, builder, info, train, test):
    path = config["teacher_path"]
    if path and os.path.exists(path):
        teacher = keras.saving.load_model(path)
        logger.info("loaded teacher %s", path)
    else:
        teacher = builder(info.input_shape, info.num_classes, **config["teacher_kwargs"])
        teacher.compile(
            keras.optimizers.Adam(config["learning_rate"]),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=config["jit_compile"],
        )
        teacher.fit(train, epochs=int(config["teacher_epochs"]), verbose=config["verbose"], shuffle=False)
        if path:
            teacher.save(path)
    teacher.compile(
        metrics=["accuracy"], loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return teacher, float(teacher.evaluate(test, verbose=0, return_dict=True)["accuracy"])


def _checked_run_config(config):
    """`(config over RUN_DEFAULTS, method)`, checked before any data is loaded."""
    unknown = sorted(set(config) - set(RUN_DEFAULTS))
    if unknown:
        raise ValueError(
            f"Unknown progressive config key(s) {unknown}. Valid keys: {', '.join(RUN_DEFAULTS)}."
        )
    config = {**RUN_DEFAULTS, **config}
    method = str(config["method"]).upper() if str(config["method"]).lower() != "plain" else "plain"
    if method not in (*METHODS, "plain"):
        raise ValueError(f"Unknown method {config['method']!r}. Valid methods: I, II, III, plain.")
    if config["plain_init"] not in ("teacher", "scratch"):
        raise ValueError(
            f"plain_init must be 'teacher' or 'scratch', received {config['plain_init']!r}."
        )
    return config, method


def _train_plain(config, teacher, student, optimizer, train, epochs):
    """The "plain" arm: the student with CE alone for every epoch, from the teacher's weights
    (or from scratch with `plain_init: scratch`); returns its phase record."""
    if config["plain_init"] == "teacher":
        copy_matching_weights(teacher, student)
    student.compile(
        keras.optimizers.get(optimizer),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=config["jit_compile"],
    )
    history = student.fit(train, epochs=epochs, verbose=config["verbose"], shuffle=False)
    return [dict(phase="plain", trainable=["all"], loss="CE", history=history.history)]


def run_progressive(config):
    """Runs one block-wise distillation experiment from a config dict (the CLI's entry point).

    Trains (or loads, `teacher_path`) the float teacher, builds the binary student with the
    same builder, runs the method, evaluates the student on the test split and optionally
    saves it (`output`). Every method gets the same total number of epochs: S stages x
    `epochs_per_stage` + `final_epochs` (method II's single LIT phase lasts S x
    `epochs_per_stage`; `"plain"` trains the student with CE for all of them, starting from the
    teacher's weights, or from scratch with `plain_init: scratch`).

    Args:
        config: dict with any of the keys of `RUN_DEFAULTS`: `method` (I, II, III or plain),
            `dataset` (a `kerasbnn.data` name), `model` (a zoo builder), `teacher_kwargs`,
            `student_kwargs`, `teacher_path`, `teacher_epochs`, `epochs_per_stage`,
            `final_epochs`, `plain_init`, `batch_size`, `train_limit`, `test_limit`,
            `learning_rate` (Adam), `feature_weight`, `ce_weight`, `temperature`, `trainable`, `final_loss`,
            `seed`, `output`, `jit_compile`, `verbose`.

    Returns:
        dict with `method`, `seed`, `teacher_accuracy`, `test_accuracy`, `total_epochs` and
        `phases` (the schedule records with their histories).

    Raises:
        ValueError: for an unknown key or method (and everything `ProgressiveDistiller` checks).

    Config (YAML):
    ```yaml
    method: I
    dataset: fashion_mnist
    student_kwargs: {bits: 1, binary: xnorpp, block: double_relu}
    teacher_path: runs/teacher_seed0.keras
    epochs_per_stage: 2
    final_epochs: 4
    ```
    """
    config, method = _checked_run_config(config)
    keras.utils.set_random_seed(int(config["seed"]))
    info = data.info(config["dataset"])
    load = dict(batch_size=int(config["batch_size"]), seed=int(config["seed"]))
    train = data.load(config["dataset"], "train", limit=config["train_limit"], **load)
    test = data.load(config["dataset"], "test", limit=config["test_limit"], **load)
    builder = models.get(config["model"])
    teacher, teacher_accuracy = _train_teacher(config, builder, info, train, test)
    student = builder(info.input_shape, info.num_classes, **config["student_kwargs"])
    num_stages = len(models.taps(student))
    total = num_stages * int(config["epochs_per_stage"]) + int(config["final_epochs"])
    optimizer = {"class_name": "adam", "config": {"learning_rate": float(config["learning_rate"])}}
    if method == "plain":
        phases = _train_plain(config, teacher, student, optimizer, train, total)
    else:
        distiller = ProgressiveDistiller(
            student,
            teacher,
            method,
            feature_weight=config["feature_weight"],
            ce_weight=config["ce_weight"],
            temperature=config["temperature"],
            trainable=config["trainable"],
            final_loss=config["final_loss"],
            optimizer=optimizer,
            jit_compile=config["jit_compile"],
        )
        kd_epochs = int(config["epochs_per_stage"]) * (num_stages if method == "II" else 1)
        phases = distiller.fit(
            train, epochs_per_stage=kd_epochs, final_epochs=int(config["final_epochs"]), verbose=config["verbose"]
        )
    if config["output"]:  # before the evaluation compile replaces the training state
        student.save(config["output"])
    student.compile(metrics=["accuracy"], loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    accuracy = float(student.evaluate(test, verbose=0, return_dict=True)["accuracy"])
    return {
        "method": method,
        "seed": int(config["seed"]),
        "teacher_accuracy": teacher_accuracy,
        "test_accuracy": accuracy,
        "total_epochs": total,
        "phases": phases,
    }
