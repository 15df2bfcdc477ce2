"""`cmtkd`: collaborative multi-teacher KD (Zhao et al. 2022), teachers trained with the student.

The models are the run's: the student is `model.arch` at 1 bit with `student.binary` (or at
`distill.cmtkd.student_bits`, e.g. 2 for the paper's W2A2 HWGQ student, where
`student.binary` does not apply), the teachers are `model.arch` at every `teachers.bits` with
`teachers.quantizer` (the paper: [4, 6, 8] with hwgq). Every one of them starts where the
other arms' students start (`student.init`, `StudentJob.started`): with `float` (the default)
from the float teacher's weights, BatchNorm statistics recomputed, so that the binary student
starts from exactly the weights of `none`'s (the paper does not say where its teachers start;
a third-party reimplementation starts every network from one float model); with `random`
from Keras' initialization (the student again from `none`'s weights, on the same seed). They
train together for `student.epochs` epochs at `student.learning_rate`; the teachers' section
is read only for the float teacher they start from. The importance factors pi learn at
`distill.delta_lr_scale.features` times the student's rate, the multiplier of MAD's feature
fusions (default 20; the class' own default, 0.1, left pi within 0.001 of uniform after an
epoch of 6,000 images, 20 moved it by 0.10). Its options, the section `distill.cmtkd`
(`_options_class`), hold `student_bits`, the other arguments of `CollaborativeDistiller`
(checked by it when it builds) and `builder_kwargs` of the zoo builder (shared by every
network); the report shows the plot of pi.
"""

import dataclasses
import inspect
import typing

from kerasbnn.methods.registry import given_options, method, section
from kerasbnn.resume import TEACHERS

#: `from_zoo` arguments that are config fields: their name in the config.
CONFIG_FIELDS = {"teacher_bits": "teachers.bits", "quantizer": "teachers.quantizer",
                 "fusion_lr_scale": "distill.delta_lr_scale.features"}
#: `builder_kwargs` the pipeline sets from the config.
BUILDER_FIELDS = {"binary": "student.binary", "bn_momentum": "model.bn_momentum",
                  "width_multiplier": "model.width_multiplier",
                  "bits": "distill.cmtkd.student_bits", "quantizer": "teachers.quantizer"}


def _options_class():
    """The dataclass of `distill.cmtkd`: `student_bits` (1: the run's binary student) and
    `builder_kwargs`, then `CollaborativeDistiller`'s arguments with their defaults (any
    value: the distiller checks them when it builds)."""
    from kerasbnn.distill import CollaborativeDistiller

    parameters = {**inspect.signature(CollaborativeDistiller.from_zoo).parameters,
                  **inspect.signature(CollaborativeDistiller.__init__).parameters}
    skip = {"self", "cls", "name", "input_shape", "num_classes", "student", "teachers",
            "kwargs", "student_bits", "builder_kwargs", *CONFIG_FIELDS}
    distiller = [(key, typing.Any, dataclasses.field(default=p.default)) for key, p in
                 parameters.items() if key not in skip]
    return dataclasses.make_dataclass("CMTKDOptions", [
        ("student_bits", int, dataclasses.field(default=1, metadata={"min": 1, "max": 32})),
        ("builder_kwargs", dict, dataclasses.field(default_factory=dict)), *distiller])


def _check(config):
    """`distill.cmtkd` sets nothing the config has a field for, and `student.binary` is
    changed only for a binary student."""
    from kerasbnn.config import ConfigError, StudentConfig

    options, where = section(config, "cmtkd")
    given = [(f"{where}.{k}", CONFIG_FIELDS[k]) for k in options if k in CONFIG_FIELDS]
    kwargs = options.get("builder_kwargs") or {}
    given += [(f"{where}.builder_kwargs.{k}", BUILDER_FIELDS[k])
              for k in (kwargs if isinstance(kwargs, dict) else ()) if k in BUILDER_FIELDS]
    for key, field in given:
        raise ConfigError(f"{key} is the config's {field}; set {field} instead.")
    bits = given_options(config, "cmtkd").get("student_bits", 1)
    if bits != 1 and config.student.binary != StudentConfig.binary:
        raise ConfigError(
            f"student.binary={config.student.binary!r} applies to a binary student, but "
            f"{where}.student_bits={bits!r}: remove one of them.")


def _network(config):
    """The student's bits and the builder options cmtkd adds (`student_network`)."""
    options = given_options(config, "cmtkd")
    return {"bits": options.get("student_bits", 1), **options.get("builder_kwargs", {})}


def _report(config, run):
    """What CMT-KD adds to the report: the plot of its importance factors pi."""
    return [], [("pi", "pi")]


def _models(job, bits, builder_kwargs):
    """The student (at `bits`; 1: `job.student()`, the other arms' student) and one teacher per
    `teachers.bits`, all started by `job.started` (`student.init`)."""
    c = job.config
    quantizer = c.teachers.quantizer
    if bits == 1:
        student = job.student(**builder_kwargs)
    else:
        student = job.started(job.build(bits, quantizer=quantizer, **builder_kwargs))
    teachers = [job.started(job.build(b, quantizer=quantizer, **builder_kwargs))
                for b in c.teachers.bits]
    return student, teachers


@method("cmtkd", options=_options_class, check=_check, network=_network, report=_report,
        depends_on=("teachers.bits", *TEACHERS, "student.", "distill.delta_lr_scale.features"))
def train_cmtkd(job):
    """CMT-KD: the run's student and `teachers.bits` teachers (`teachers.quantizer`), started
    from `student.init`, trained together by a `CollaborativeDistiller`."""
    from kerasbnn.config import ConfigError
    from kerasbnn.distill import CollaborativeDistiller, DeltaHistory

    c = job.config
    options = given_options(c, "cmtkd")
    bits = options.pop("student_bits", 1)
    builder_kwargs = options.pop("builder_kwargs", {})
    job.print_fn(f"[distill] cmtkd: {c.model.arch}, student at {bits} bit(s), teachers "
                 f"{c.teachers.bits} ({c.teachers.quantizer}), all from {c.student.init} "
                 f"init, options {options}")
    try:
        student, teachers = _models(job, bits, builder_kwargs)
        distiller = CollaborativeDistiller(
            student, teachers, fusion_lr_scale=c.distill.delta_lr_scale.features, **options)
    except ValueError as error:  # a value of distill.cmtkd, found once the models build
        raise ConfigError(f"{section(c, 'cmtkd')[1]}: {error}") from None
    distiller.compile(optimizer=job.optimizer(), metrics=["accuracy"])
    history = DeltaHistory(job.run.history("pi_history"),
                           plot_path=job.run.plot("pi"), append=job.resumed("cmtkd"),
                           per_epoch=job.delta_rows_per_epoch())
    job.fit(distiller, "cmtkd", [history])
    importances = {k: [float(v) for v in values] for k, values in distiller.importances().items()}
    return distiller.student, {"student_bits": bits, "teachers": list(c.teachers.bits),
                               "quantizer": c.teachers.quantizer, "init": c.student.init,
                               "importances": importances}
