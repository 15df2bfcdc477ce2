r"""Block-wise distillation of a binary student from its float teacher (thesis methods I-III).

The student is a binarized copy of the teacher (same builder, same layer names); both are cut
with `kerasbnn.models.parts` into stem, stages 1..S and head, which share the models' layers,
so training a part trains the student. Each method is a short schedule of Keras `fit` phases,
followed by ordinary training of the whole binary student:

- Method I, progressive block-wise KD (Wang et al., IJCAI 2018; thesis eq. 2.13): at stage s the
  image runs through [student stem, student stages 1..s, teacher stages s+1..S, student head];
  L_I = feature_weight * L_local + (1 - feature_weight) * CE, with L_local = mean (x^t_s -
  x^s_s)^2 (thesis eq. 2.14) between the student's and the teacher's stage-s outputs, and
  stages 1..s trainable (`trainable="cumulative"`, the default: the thesis' "sub-network s"
  is parts 1..s, and "the individual parts of the networks are trained multiple times",
  section 2.2.1) or stage s alone (`"active"`, an alternative the thesis does not describe).
- Method II, LIT (Koratana et al., ICML 2019; thesis eq. 2.15): all stages at once; student
  stage s is fed the teacher's stage s-1 output and regressed onto the teacher's stage s output,
  L_local = sum_s MSE(Stu_s(T_{s-1}(x)), T_s(x)); the student also runs end to end for
  L_KD = kd_label_fraction * CE(z_s, y) + (1 - kd_label_fraction) * [T^2] *
  KL(softmax(z_t / T) || softmax(z_s / T))
  (thesis eq. 2.16: no T^2, the default; LIT's code multiplies the soft term by T^2:
  `scale_by_temperature_squared=True`);
  L_II = feature_weight * L_local + (1 - feature_weight) * L_KD, with stem and head frozen
  copies of the teacher's.
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

import contextlib
import copy
import logging

import keras
from keras import ops

from kerasbnn.distill.base import (
    TeacherStudent, Untracked, check_choice, check_models, check_number)
from kerasbnn.distill.losses import LogitsDistillation, cross_entropy
from kerasbnn.models import parts as model_parts
from kerasbnn.transfer import copy_matching_weights  # noqa: F401  (re-exported)
from kerasbnn.renames import renamed

__all__ = ["BlockwiseModel", "METHODS", "ProgressiveDistiller", "copy_matching_weights"]

METHODS = ("I", "II", "III")
PHASE_MODES = ("progressive", "lit", "kd")
TRAINABLE = ("active", "cumulative")
FINAL_LOSSES = ("ce", "kd")

logger = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="kerasbnn")
class BlockwiseModel(TeacherStudent):
    """One training phase of `ProgressiveDistiller`: runs teacher and student parts, with the
    phase's weighted terms.

    - `"progressive"` (methods I, III; eqs. 2.13, 2.17): (1 - feature_weight) CE of the hybrid
      network + feature_weight L_local;
    - `"lit"` (method II, eq. 2.15): (1 - feature_weight) L_KD + feature_weight L_local, with
      L_KD = kd_label_fraction CE + (1 - kd_label_fraction) [T^2] KL (eq. 2.16; T^2 as LIT's
      code), logged as `student_loss` and `kl_loss`;
    - `"kd"` (LIT's final phase): L_KD alone.

    Training-only: `fit` on it trains the student's layers; the artefact is the student.

    Args:
        student, teacher: the binary student and its float teacher (same builder).
        mode: `"progressive"`, `"lit"` or `"kd"`.
        stage: the last student stage in the hybrid network (S for `"lit"` and `"kd"`).
        feature_weight, kd_label_fraction, temperature, scale_by_temperature_squared: as in
            `ProgressiveDistiller`.
        student_parts, teacher_parts: the models' `kerasbnn.models.parts` (None: cut here).
        **kwargs: other `TeacherStudent` arguments (`name`, ...).
    """

    def __init__(self, student, teacher, *, mode, stage, feature_weight, kd_label_fraction,
                 temperature, scale_by_temperature_squared, student_parts=None,
                 teacher_parts=None, **kwargs):
        config = {"mode": mode, "stage": stage, "feature_weight": feature_weight,
                  "kd_label_fraction": kd_label_fraction, "temperature": temperature,
                  "scale_by_temperature_squared": scale_by_temperature_squared}
        fw, mix = feature_weight, kd_label_fraction
        terms = {
            "progressive": {"student_loss": 1.0 - fw, "feature_loss": fw},
            "lit": {"student_loss": (1.0 - fw) * mix,
                    "kl_loss": (1.0 - fw) * (1.0 - mix), "feature_loss": fw},
            "kd": {"student_loss": mix, "kl_loss": 1.0 - mix},
        }[check_choice("mode", mode, PHASE_MODES)]
        super().__init__(student, teacher, terms, config=config, **kwargs)
        self._parts = Untracked(
            teacher=model_parts(teacher) if teacher_parts is None else teacher_parts,
            student=model_parts(student) if student_parts is None else student_parts)
        self.mode, self.stage = mode, stage
        self.kd = LogitsDistillation(temperature=temperature,
                                     scale_by_temperature_squared=scale_by_temperature_squared)
        self.num_stages = len([k for k in self._parts.student if k.startswith("stage")])

    def _teacher(self, name, x):
        return self._parts.teacher[name](x, training=False)

    def _student(self, name, x, training):
        return self._parts.student[name](x, training=training)

    def call(self, inputs, training=None):
        """[student stem, stages 1..stage | teacher stages stage+1..S | student head]: the
        hybrid network of methods I and III, the whole student in LIT and KD (stage = S).
        The base's structure, with the float teacher as the one teacher side: its logits
        (every mode; the progressive phases do not use them) and, per compared stage, its
        output (LIT: every stage, each student stage fed the teacher's previous one)."""
        t = [self._teacher("stem", inputs)]
        for s in range(1, self.num_stages + 1):
            t.append(self._teacher(f"stage{s}", t[-1]))
        h = self._student("stem", inputs, training)
        for s in range(1, self.stage + 1):
            h = self._student(f"stage{s}", h, training)
        student_features, teacher_features = [h], [t[self.stage]]
        for s in range(self.stage + 1, self.num_stages + 1):
            h = self._teacher(f"stage{s}", h)
        logits = self._student("head", h, training)
        if self.mode == "lit":  # each student stage fed with the teacher's previous-stage output
            student_features = [self._student(f"stage{s}", t[s - 1], training)
                                for s in range(1, self.num_stages + 1)]
            teacher_features = t[1:]
        return {"logits": logits, "student_features": student_features,
                "teacher_logits": [self._teacher("head", t[-1])],
                "teacher_features": [[f] for f in teacher_features]}

    def loss_terms(self, y, outputs, sample_weight=None):
        """CE of the (hybrid) logits, [T^2] KL to the teacher's logits and L_local = sum_s
        MSE(student stage s, sg teacher stage s) (thesis eqs. 2.14-2.15), as the mode has them."""
        logits = outputs["logits"]
        terms = {"student_loss": cross_entropy(y, logits, sample_weight)}
        if "kl_loss" in self.term_weights:
            terms["kl_loss"] = self.kd.compute_loss(
                outputs["teacher_logits"][0], logits, sample_weight=sample_weight)
        if "feature_loss" in self.term_weights:
            terms["feature_loss"] = sum(ops.mean(ops.square(s - ops.stop_gradient(t))) for s, (t,)
                                        in zip(outputs["student_features"],
                                               outputs["teacher_features"]))
        return terms


@renamed(beta="feature_weight", alpha="kd_label_fraction", ce_weight="kd_label_fraction")
class ProgressiveDistiller:
    r"""Schedules block-wise distillation of a binary student from a float teacher.

    The student must be built by the teacher's builder (same `stem_out`, `stage<i>_out`,
    `logits` layers, e.g. `resnet20(bits=32)` and `resnet20(bits=1, binary="xnorpp",
    block="double_relu")`). By default it starts as a copy of the teacher
    (`copy_matching_weights`); the teacher is frozen and always runs in inference mode.

    `schedule()` lists the phases of the method (module docstring): one KD phase per stage
    (methods I and III; III reports the hybrid logits but trains on the MSE alone) or one
    LIT phase (method II), each of `epochs_per_stage` epochs, then `final_epochs` of
    training the whole student. During the KD phases the student's stem and head are frozen
    (copies of the teacher's). Frozen BatchNormalization layers run in inference mode.
    Each phase prints one line saying which stages are binary, which float (teacher), which
    trainable, and the loss; `fit` returns the same records with each phase's Keras history.

    Logged metrics: `loss` (the phase total), `student_loss` (CE), `kl_loss` (LIT's soft
    term), `feature_loss` (L_local), `distillation_loss` (the weighted non-CE terms),
    `total_loss`, and the compiled metrics of the (hybrid) logits.

    Args:
        teacher: float functional model from a `kerasbnn.models` builder (logits output).
        student: binary model from the same builder.
        method: `"I"`, `"II"` or `"III"`.
        feature_weight: weight of L_local (thesis best for method I: 0.4); method III: 1.
        kd_label_fraction: the labels' share of L_KD, a in
            L_KD = a CE(z_s, y) + (1 - a) [T^2] KL(softmax(z_t / T) || softmax(z_s / T))
            (thesis eq. 2.16; method II and `final_loss="kd"`; LIT's code: 0.95). Not a
            weight of the label term of the whole loss, which every other distiller calls
            `ce_weight`: that old name is refused here, naming this one.
        temperature: T of the soft term (method II; LIT's code: 6).
        scale_by_temperature_squared: multiply the soft term of L_KD by T^2, as LIT's code
            does (`distillation_loss.py`); False (the default) follows the thesis' eq. 2.16,
            which has no T^2. It applies to method II and to `final_loss="kd"`.
        trainable: which stages train in the KD phase of stage s (methods I and III):
            `"cumulative"` (stages 1..s, the default: the thesis' "sub-network s" consists of
            parts 1..s, each trained again at every later stage, section 2.2.1.1-2.2.1.2) or
            `"active"` (stage s alone; not the thesis' reading, and not validated against it).
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
        ValueError: for an unknown method, trainable or final_loss, feature_weight or
            kd_label_fraction outside [0, 1], a non-positive temperature, a student whose parts do
            not match the teacher's (names or shapes), or a teacher without a head.

    Example:
    ```python
    teacher = kerasbnn.models.resnet20((28, 28, 1), 10)
    ...  # train the teacher
    student = kerasbnn.models.resnet20((28, 28, 1), 10, bits=1, binary="xnorpp",
                                       block="double_relu")
    distiller = ProgressiveDistiller(student, teacher, method="I", feature_weight=0.4)
    history = distiller.fit(train_ds, epochs_per_stage=2, final_epochs=6, validation_data=test_ds)
    distiller.student.save("student.keras")
    ```

    In the pipeline: `distill.method: progressive` (`kerasbnn.methods.progressive`).
    """

    def __init__(self, student, teacher, method="I", *, feature_weight=0.4,
                 kd_label_fraction=0.95, temperature=6.0, scale_by_temperature_squared=False,
                 trainable="cumulative",
                 final_loss="ce", copy_teacher=True, optimizer="adam", final_optimizer=None,
                 metrics=("accuracy",), jit_compile="auto", run_eagerly=False, verbose=True):
        method = check_choice("method", str(method).upper(), METHODS)
        for name, value in (("feature_weight", feature_weight),
                            ("kd_label_fraction", kd_label_fraction)):
            if not 0.0 <= check_number(name, value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], received {value!r}.")
        check_number("temperature", temperature, strict=True)
        check_choice("trainable", trainable, TRAINABLE)
        check_choice("final_loss", final_loss, FINAL_LOSSES)
        self.teacher_parts, self.student_parts = model_parts(teacher), model_parts(student)
        if list(self.teacher_parts) != list(self.student_parts) or "head" not in self.student_parts:
            raise ValueError(
                f"Teacher parts {list(self.teacher_parts)} and student parts "
                f"{list(self.student_parts)} must be equal and end with a head: build both with "
                "the same kerasbnn.models builder and include_top=True.")
        for name in (name for name in self.teacher_parts if name != "head"):
            t_shape = tuple(self.teacher_parts[name].outputs[0].shape[1:])
            s_shape = tuple(self.student_parts[name].outputs[0].shape[1:])
            if t_shape != s_shape:
                raise ValueError(
                    f"The {name} outputs differ: teacher {t_shape}, student {s_shape}; block-wise "
                    "distillation feeds one network's features to the other's stages.")
        check_models(student, teacher, "ProgressiveDistiller")
        self.teacher, self.student, self.method = teacher, student, method
        self.feature_weight = 1.0 if method == "III" else float(feature_weight)
        self.kd_label_fraction = float(kd_label_fraction)
        self.temperature = float(temperature)
        self.scale_by_temperature_squared = bool(scale_by_temperature_squared)
        self.trainable, self.final_loss, self.optimizer = trainable, final_loss, optimizer
        self.final_optimizer = optimizer if final_optimizer is None else final_optimizer
        self.metrics, self.jit_compile = list(metrics), jit_compile
        self.run_eagerly, self.verbose = bool(run_eagerly), verbose
        self.teacher.trainable = False
        self._initially_trainable = {layer.name: layer.trainable for layer in student.layers}
        if copy_teacher:
            copy_matching_weights(teacher, student)

    @property
    def stage_names(self):
        return [name for name in self.student_parts if name.startswith("stage")]

    def schedule(self):
        """The phases `fit` will run, as dicts: name, binary/float/trainable stages, loss."""
        stages, fw, cw = self.stage_names, self.feature_weight, self.kd_label_fraction
        kd = f"{cw:g}*CE + {1 - cw:g}*{'T^2*' if self.scale_by_temperature_squared else ''}KL"
        phases = []
        if self.method in ("I", "III"):
            for s, name in enumerate(stages, start=1):
                mse = f"MSE({name})"
                loss = f"{fw:g}*{mse} + {1 - fw:g}*CE" if self.method == "I" else mse
                phases.append(dict(
                    phase=f"stage {s}/{len(stages)}", mode="progressive", stage=s,
                    binary=stages[:s], float=stages[s:], loss=loss,
                    trainable=[name] if self.trainable == "active" else stages[:s]))
        else:
            phases.append(dict(
                phase="LIT", mode="lit", stage=len(stages), binary=stages, float=[],
                trainable=list(stages),
                loss=f"{fw:g}*sum MSE(student stage s <- teacher stage s-1) + {1 - fw:g}*({kd}, "
                     f"T={self.temperature:g})"))
        phases.append(dict(phase="final", mode=self.final_loss, stage=len(stages), binary=stages,
                           float=[], trainable=["stem", *stages, "head"],
                           loss="CE" if self.final_loss == "ce" else kd))
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
        binary, floats = (", ".join(phase[key]) or "-" for key in ("binary", "float"))
        line = (f"[progressive method {self.method}] {phase['phase']}: binary: {binary}"
                f" | float (teacher): {floats} | trainable: {', '.join(phase['trainable'])}"
                f" | loss = {phase['loss']}")
        logger.info(line)
        if self.verbose:
            print(line)

    @contextlib.contextmanager
    def phase(self, phase):
        """One phase of `schedule()`, to train with `fit` (or a runner's own loop): only
        `phase["trainable"]` stages are trainable inside, and the model it yields is the
        student itself (the final phase with CE, compiled with a loss) or the block model of
        the phase (its loss built in, compiled without one). Trainability is restored after.
        """
        self._set_trainable(phase["trainable"])
        try:
            yield self.student if phase["mode"] == "ce" else BlockwiseModel(
                self.student, self.teacher, student_parts=self.student_parts,
                teacher_parts=self.teacher_parts, mode=phase["mode"], stage=phase["stage"],
                feature_weight=self.feature_weight,
                kd_label_fraction=self.kd_label_fraction, temperature=self.temperature,
                scale_by_temperature_squared=self.scale_by_temperature_squared,
                name=f"progressive_{phase['mode']}_stage{phase['stage']}")
        finally:
            self._set_trainable(list(self.student_parts))

    def fit(self, x, epochs_per_stage=1, final_epochs=1, validation_data=None, callbacks=None,
            verbose="auto", **kwargs):
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
        for phase in self.schedule():
            final = phase["phase"] == "final"
            epochs = final_epochs if final else epochs_per_stage
            if epochs == 0:
                continue
            self._log(phase)
            with self.phase(phase) as model:
                optimizer = self._make_optimizer(self.final_optimizer if final else self.optimizer)
                ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
                model.compile(optimizer, ce if model is self.student else None,
                              metrics=list(self.metrics), jit_compile=self.jit_compile,
                              run_eagerly=self.run_eagerly)
                history = model.fit(x, epochs=int(epochs), validation_data=validation_data,
                                    callbacks=callbacks, verbose=verbose, **kwargs)
            records.append({**phase, "history": history.history})
        return records
