"""Distillation methods as plug-ins of the pipeline: one registry, one job, one result format.

Every method trains one binary student of the run and leaves the same things behind:
`students/<method>.keras` (written atomically), `results/student_<method>.json` with at least
`accuracy` (top-1 on the evaluation split), and, for methods trained by `fit`, CSV logs and a
`BackupAndRestore` backup named `student_<method>`, so `--resume` continues them. The
pipeline (`kerasbnn.pipeline`) owns the data, the seeds, the teachers, the evaluation and the
report; a method only says how its student learns.

| key | student | teachers |
|---|---|---|
| `none` | the binary student, cross-entropy only (the baseline) | none |
| `kd` | classic KD (Hinton) plus FitNet-style hints at the zoo's taps | the float teacher |
| `at` | attention transfer (Zagoruyko & Komodakis) plus KD, by `keras.distillation.Distiller` | the float teacher |
| `mad` | multi-bit adaptive distillation (Nie et al. 2021) | every `teachers.bits` |
| `cmtkd` | collaborative multi-teacher KD (Zhao et al. 2022), `distill.options` | its own, trained with it |
| `progressive` | the thesis' block-wise methods I/II/III, `distill.options` | its own float teacher |
| `pkkd` | an adder network with kernel-based progressive KD, `distill.options` | its own CNN |

This module imports Keras only when a method runs, so the command line lists the methods
without loading TensorFlow. A new method is one module of this package plus one test: a function decorated with
`@method("name", teachers=..., options=..., depends_on=...)` that takes a `StudentJob` and returns
the trained student and extra result fields (`attention.py` is an example: attention transfer
through Keras' own `keras.distillation.Distiller`). The pipeline, the command line's choices,
the config checks and `--resume` read everything else from the registry.
"""

import dataclasses
import os
import time

from kerasbnn.registry import Registry
from kerasbnn.resume import TRAINING

__all__ = ["METHODS", "StudentJob", "config_keys", "method", "needs_teachers", "option_keys",
           "run_method"]

METHODS = Registry("distillation method")



def method(key, *, teachers=(), options=None, depends_on=("student.",), zoo=True,
           distributes=True, builds_student=None):
    """Registers a method's training function under `key`.

    Args:
        key: the name in `distill.method`, `distill.compare` and `--method`.
        teachers: the bit widths of the pipeline's teachers it distils from: `()` none,
            `(32,)` the float teacher, None every `teachers.bits`, or a function of the
            `RunConfig` returning them.
        options: a function returning the `distill.options` keys it reads, or None when it
            reads none.
        depends_on: config keys (besides seed, data and model) its student depends on, for
            `--resume`; one ending in "." stands for a whole section.
        zoo: it builds the run's zoo student (`model.arch` at 1 bit), so `model.arch` must
            take the zoo's precision options.
        distributes: it trains under `tf.distribute` strategies (`distribute: mirrored`)
            with every loss term scaled alike across replicas.
        builds_student: it starts from `StudentJob.student()` (so, with `student.init:
            float`, from the float teacher); None: the same as `zoo`.
    """

    def register(function):
        function.teachers = teachers
        function.option_keys = options
        function.config_keys = (*TRAINING, *depends_on)
        function.zoo = zoo
        function.distributes = distributes
        function.builds_student = zoo if builds_student is None else builds_student
        return METHODS.register(key)(function)

    return register


def needs_teachers(name, config=None):
    """The teacher bit widths `name` reads from the pipeline (`()` for none, None for all);
    a method whose teachers depend on the config says so for `config` (or its defaults)."""
    teachers = METHODS.get(name).teachers
    if callable(teachers):
        from kerasbnn.config import RunConfig

        return tuple(teachers(config or RunConfig()))
    return teachers


def option_keys(name):
    """The `distill.options` keys `name` reads, or None when it reads none."""
    keys = METHODS.get(name).option_keys
    return None if keys is None else set(keys())


def config_keys(name):
    """The config keys `name`'s student depends on (`kerasbnn.resume`)."""
    return METHODS.get(name).config_keys


@dataclasses.dataclass
class StudentJob:
    """What a method gets from the pipeline.

    Attributes:
        config: the `RunConfig`.
        run: the `RunDir`.
        info: the dataset's `DatasetInfo`.
        train_ds, val_ds: the training and evaluation datasets.
        teachers: `{bits: model}` of the trained teachers (those `needs_teachers` asked for).
        build: `build(bits, **options)` builds `model.arch` for this dataset.
        evaluate: `evaluate(model)` is the top-1 accuracy on the test split (the result).
        advice: what a non-finite loss message advises.
        print_fn: where progress lines go.
        validate: `validate(model)` is `{"val_accuracy": ...}` on the validation split, or
            `{}` when the run has none.
        bn_ds: training batches without augmentation, to recompute BatchNorm statistics.
    """

    config: object
    run: object
    info: object
    train_ds: object
    val_ds: object
    teachers: dict
    build: object
    evaluate: object
    advice: str = None
    print_fn: object = print
    validate: object = None
    bn_ds: object = None

    def student(self):
        """The binary student every arm starts from: `model.arch` at 1 bit, `student.binary`;
        with `student.init: float`, the float teacher's matching weights copied in and the
        BatchNorm statistics recomputed over `teachers.bn_batches` batches
        (`kerasbnn.transfer.from_float`)."""
        model = self.build(1, binary=self.config.student.binary)
        if self.config.student.init == "float":
            from kerasbnn.transfer import from_float

            from_float(self.teachers[32], model, self.bn_ds, self.config.teachers.bn_batches)
        return model

    def optimizer(self):
        """Adam with cosine decay over the student's budget (`student.learning_rate`, epochs)."""
        from kerasbnn.training import cosine_adam

        student = self.config.student
        return cosine_adam(student.learning_rate, student.epochs, int(self.train_ds.cardinality()))

    def fit(self, model, method, callbacks=()):
        """`fit_resumable` over the student's epochs, logged and backed up as `student_<method>`."""
        import keras

        from kerasbnn.training import fit_resumable

        if not model.built:  # BackupAndRestore needs built models (keras.distillation.Distiller)
            model(keras.ops.zeros((1, *self.info.input_shape)), training=False)
        return fit_resumable(
            model, self.train_ds, run_dir=self.run.root, name=f"student_{method}",
            epochs=self.config.student.epochs, validation_data=self.val_ds,
            callbacks=list(callbacks), advice=self.advice,
        )

    def resumed(self, method):
        """True if a backup of `method`'s training exists (its logs are then appended to)."""
        return os.path.isdir(os.path.join(self.run.root, "backup", f"student_{method}"))


def run_method(method, job):
    """Trains `method`'s student unless `students/<method>.keras` exists; returns its path.

    Writes `results/student_<method>.json` (accuracy, train seconds, the student's budget,
    and what the method adds) and discards an older conversion of that student.
    """
    from kerasbnn.training import save_atomically

    path = job.run.path("students", f"{method}.keras")
    if os.path.exists(path):
        return path
    train = METHODS.get(method)
    start = time.perf_counter()
    student, extra = train(job)
    seconds = time.perf_counter() - start
    result = {"method": method, "accuracy": job.evaluate(student), "train_seconds": seconds}
    if job.validate is not None:
        result.update(job.validate(student))
    if train.zoo:  # the student's budget; progressive and pkkd report their own in `extra`
        result.update(epochs=job.config.student.epochs,
                      learning_rate=job.config.student.learning_rate)
    result.update(extra)
    job.run.write_json(f"student_{method}", result)
    save_atomically(student, path)
    job.run.discard(f"convert_{method}")
    return path




from kerasbnn.methods import (  # noqa: E402,F401  (each module registers its method)
    attention,
    baseline,
    cmtkd,
    kd,
    mad,
    pkkd,
    progressive,
)
