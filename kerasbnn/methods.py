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
| `mad` | multi-bit adaptive distillation (Nie et al. 2021) | every `teachers.bits` |
| `cmtkd` | collaborative multi-teacher KD (Zhao et al. 2022), `distill.options` | its own, trained with it |
| `progressive` | the thesis' block-wise methods I/II/III, `distill.options` | its own float teacher |
| `pkkd` | an adder network with kernel-based progressive KD, `distill.options` | its own CNN |

This module imports Keras only when a method runs, so the command line lists the methods
without loading TensorFlow. A new method is one function registered here: `@METHODS.register("name")`, taking a
`StudentJob` and returning the trained student and extra result fields.
"""

import dataclasses
import os
import time

from kerasbnn.registry import Registry

__all__ = ["METHODS", "StudentJob", "needs_teachers", "run_method"]

METHODS = Registry("distillation method")

#: Methods that read the pipeline's teachers, and which of them (None: every `teachers.bits`).
TEACHERS_OF = {"kd": (32,), "mad": None}


def needs_teachers(method):
    """The teacher bit widths `method` reads from the pipeline (`()` for none, None for all)."""
    return TEACHERS_OF.get(method, ())


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
        evaluate: `evaluate(model)` is the top-1 accuracy on `val_ds`.
        advice: what a non-finite loss message advises.
        print_fn: where progress lines go.
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

    def student(self):
        """The binary student every arm starts from: `model.arch` at 1 bit, `student.binary`."""
        return self.build(1, binary=self.config.student.binary)

    def optimizer(self):
        """Adam with cosine decay over the student's budget (`student.learning_rate`, epochs)."""
        import keras

        steps = max(1, self.config.student.epochs * int(self.train_ds.cardinality()))
        return keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(self.config.student.learning_rate, steps)
        )

    def fit(self, model, method, callbacks=()):
        """`fit_resumable` over the student's epochs, logged and backed up as `student_<method>`."""
        from kerasbnn.training import fit_resumable

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
    result = {"method": method, "accuracy": job.evaluate(student), "train_seconds": seconds,
              "epochs": job.config.student.epochs,
              "learning_rate": job.config.student.learning_rate, **extra}
    job.run.write_json(f"student_{method}", result)
    save_atomically(student, path)
    job.run.discard(f"convert_{method}")
    return path


@METHODS.register("none")
def train_none(job):
    """The binary student alone, cross-entropy with the labels, on the same budget."""
    import keras

    job.print_fn("[train] the binary student without distillation (the baseline)")
    student = job.student()
    student.compile(optimizer=job.optimizer(), metrics=["accuracy"],
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    job.fit(student, "none")
    return student, {}


def _multi_teacher(job, method, bits, fusion):
    from kerasbnn.distill import DeltaHistory, MultiTeacherDistiller

    d = job.config.distill
    distiller = MultiTeacherDistiller(
        job.student(), [job.teachers[b] for b in bits], feature_taps="auto", fusion=fusion,
        kl_weight=d.kl_weight, feature_weight=d.feature_weight,
        temperature=d.temperature)
    distiller.compile(optimizer=job.optimizer(), metrics=["accuracy"])
    callbacks = []
    if len(bits) > 1:
        callbacks.append(DeltaHistory(job.run.path("results", f"delta_history_{method}.csv"),
                                      plot_path=job.run.path("plots", f"delta_{method}.png"),
                                      append=job.resumed(method)))
    job.fit(distiller, method, callbacks)
    deltas = {k: [float(v) for v in values] for k, values in distiller.deltas().items()}
    return distiller.student, {"teachers": list(bits), "deltas": deltas}


@METHODS.register("kd")
def train_kd(job):
    """Classic KD from the float teacher: KL at `distill.temperature` (weight `distill.kl_weight`)
    plus hints at the zoo's taps (weight `distill.feature_weight`), MAD's loss with one teacher."""
    job.print_fn("[distill] kd: binary student from the float teacher")
    return _multi_teacher(job, "kd", (32,), "average")


@METHODS.register("mad")
def train_mad(job):
    """MAD from every teacher of `teachers.bits`, fusion `distill.fusion`."""
    bits = tuple(job.config.teachers.bits)
    job.print_fn(f"[distill] mad: binary student from {len(bits)} teachers {list(bits)}")
    return _multi_teacher(job, "mad", bits, job.config.distill.fusion)


@METHODS.register("cmtkd")
def train_cmtkd(job):
    """CMT-KD: the student and teachers of `CollaborativeDistiller.from_zoo(**distill.options)`
    trained together. Unless the options say otherwise, the student is the run's binary
    student (`student.binary`) and the teachers are `teachers.bits` with `teachers.quantizer`."""
    from kerasbnn.distill import CollaborativeDistiller, DeltaHistory

    c = job.config
    options = dict(c.distill.options)
    job.print_fn(f"[distill] cmtkd: {c.model.arch} with options {options}")
    options.setdefault("student_bits", 1)
    options.setdefault("teacher_bits", tuple(c.teachers.bits))
    options.setdefault("quantizer", c.teachers.quantizer)
    builder_kwargs = {"bn_momentum": c.model.bn_momentum, **options.pop("builder_kwargs", {})}
    if options["student_bits"] == 1:
        builder_kwargs.setdefault("binary", c.student.binary)
    try:
        distiller = CollaborativeDistiller.from_zoo(
            c.model.arch, job.info.input_shape, job.info.num_classes,
            builder_kwargs=builder_kwargs, **options)
    except ValueError as error:  # a value of distill.options, found once the models build
        from kerasbnn.config import ConfigError

        raise ConfigError(f"distill.options: {error}") from None
    distiller.compile(optimizer=job.optimizer(), metrics=["accuracy"])
    history = DeltaHistory(job.run.path("results", "pi_history.csv"),
                           plot_path=job.run.path("plots", "pi.png"), append=job.resumed("cmtkd"))
    job.fit(distiller, "cmtkd", [history])
    importances = {k: [float(v) for v in values] for k, values in distiller.importances().items()}
    return distiller.student, {"importances": importances}


def _own_runner(job, method, function, options):
    """progressive and pkkd: their runners train their own teacher and student on the run's
    data settings; the student comes back from `students/<method>.keras`."""
    c = job.config
    d = c.data
    output = job.run.path("students", f".{method}_runner.keras")
    options = {"dataset": d.name, "batch_size": d.batch_size, "train_limit": d.train_limit,
               "test_limit": d.val_limit, "seed": c.seed, "output": output, **options}
    import keras

    job.print_fn(f"[distill] {method} with {options}")
    result = function(options)
    student = keras.models.load_model(output)
    os.remove(output)
    return student, {k: v for k, v in result.items() if k not in ("test_accuracy", "seed")}


@METHODS.register("progressive")
def train_progressive(job):
    """The thesis' block-wise methods (`kerasbnn.distill.run_progressive`, `distill.options`)."""
    from kerasbnn.distill import run_progressive

    options = {"model": job.config.model.arch, **job.config.distill.options}
    return _own_runner(job, "progressive", run_progressive, options)


@METHODS.register("pkkd")
def train_pkkd(job):
    """PKKD's adder student (`kerasbnn.distill.run_pkkd`, `distill.options`)."""
    from kerasbnn.distill import run_pkkd

    return _own_runner(job, "pkkd", run_pkkd, dict(job.config.distill.options))
