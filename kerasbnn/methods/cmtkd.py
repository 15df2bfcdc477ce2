"""`cmtkd`: collaborative multi-teacher KD (Zhao et al. 2022), teachers trained with the student.

The models are the run's: the student is `model.arch` at 1 bit with `student.binary` (or at
`distill.options.student_bits`, e.g. 2 for the paper's W2A2 HWGQ student, where
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
epoch of 6,000 images, 20 moved it by 0.10). `distill.options` holds the other arguments of
`CollaborativeDistiller` and `builder_kwargs` of the zoo builder (shared by every network).
"""

import inspect

from kerasbnn.methods.registry import method
from kerasbnn.resume import TEACHERS

#: `from_zoo` arguments that are config fields: their name in the config.
CONFIG_FIELDS = {"teacher_bits": "teachers.bits", "quantizer": "teachers.quantizer",
                 "fusion_lr_scale": "distill.delta_lr_scale.features"}
#: `builder_kwargs` the pipeline sets from the config.
BUILDER_FIELDS = {"binary": "student.binary", "bn_momentum": "model.bn_momentum",
                  "width_multiplier": "model.width_multiplier",
                  "bits": "distill.options.student_bits", "quantizer": "teachers.quantizer"}


def _option_keys():
    from kerasbnn.distill import CollaborativeDistiller

    keys = set(inspect.signature(CollaborativeDistiller.from_zoo).parameters)
    keys |= set(inspect.signature(CollaborativeDistiller.__init__).parameters)
    return keys - {"self", "cls", "name", "input_shape", "num_classes", "student", "teachers",
                   "kwargs", *CONFIG_FIELDS}


def _check(config):
    """`distill.options` sets nothing the config has a field for, and `student.binary` is
    changed only for a binary student."""
    from kerasbnn.config import ConfigError, StudentConfig

    options = config.distill.options
    given = [(f"distill.options.{k}", CONFIG_FIELDS[k]) for k in options if k in CONFIG_FIELDS]
    given += [(f"distill.options.builder_kwargs.{k}", BUILDER_FIELDS[k])
              for k in options.get("builder_kwargs", {}) if k in BUILDER_FIELDS]
    for key, field in given:
        raise ConfigError(f"{key} is the config's {field}; set {field} instead.")
    bits = options.get("student_bits", 1)
    if bits != 1 and config.student.binary != StudentConfig.binary:
        raise ConfigError(
            f"student.binary={config.student.binary!r} applies to a binary student, but "
            f"distill.options.student_bits={bits!r}: remove one of them.")


def _network(config):
    """The student's bits and the builder options cmtkd adds (`student_network`)."""
    options = config.distill.options
    return {"bits": options.get("student_bits", 1), **options.get("builder_kwargs", {})}


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


@method("cmtkd", options=_option_keys, check=_check, network=_network,
        depends_on=("teachers.bits", *TEACHERS, "student.", "distill.options",
                    "distill.delta_lr_scale.features"))
def train_cmtkd(job):
    """CMT-KD: the run's student and `teachers.bits` teachers (`teachers.quantizer`), started
    from `student.init`, trained together by a `CollaborativeDistiller`."""
    from kerasbnn.config import ConfigError
    from kerasbnn.distill import CollaborativeDistiller, DeltaHistory

    c = job.config
    options = dict(c.distill.options)
    bits = options.pop("student_bits", 1)
    builder_kwargs = options.pop("builder_kwargs", {})
    job.print_fn(f"[distill] cmtkd: {c.model.arch}, student at {bits} bit(s), teachers "
                 f"{c.teachers.bits} ({c.teachers.quantizer}), all from {c.student.init} "
                 f"init, options {options}")
    try:
        student, teachers = _models(job, bits, builder_kwargs)
        distiller = CollaborativeDistiller(
            student, teachers, fusion_lr_scale=c.distill.delta_lr_scale.features, **options)
    except ValueError as error:  # a value of distill.options, found once the models build
        raise ConfigError(f"distill.options: {error}") from None
    distiller.compile(optimizer=job.optimizer(), metrics=["accuracy"])
    history = DeltaHistory(job.run.history("pi_history"),
                           plot_path=job.run.plot("pi"), append=job.resumed("cmtkd"),
                           per_epoch=job.delta_rows_per_epoch())
    job.fit(distiller, "cmtkd", [history])
    importances = {k: [float(v) for v in values] for k, values in distiller.importances().items()}
    return distiller.student, {"student_bits": bits, "teachers": list(c.teachers.bits),
                               "quantizer": c.teachers.quantizer, "init": c.student.init,
                               "importances": importances}
