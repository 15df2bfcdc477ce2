"""`cmtkd`: collaborative multi-teacher KD (Zhao et al. 2022), teachers trained with the student.

The models are the run's: the student is `model.arch` at 1 bit with `student.binary` (or at
`distill.options.student_bits`, e.g. 2 for the paper's W2A2 HWGQ student, where
`student.binary` does not apply), the teachers are `model.arch` at every `teachers.bits` with
`teachers.quantizer` (the paper: [4, 6, 8] with hwgq). They train together for
`student.epochs` epochs at `student.learning_rate`, so `teachers.epochs` and
`teachers.learning_rate` do not apply. The importance factors pi learn at
`distill.delta_lr_scale.features` times the student's rate, the multiplier of MAD's feature
fusions (default 20; the class' own default, 0.1, left pi within 0.001 of uniform after an
epoch of 6,000 images, 20 moved it by 0.10). `distill.options` holds the other arguments of
`CollaborativeDistiller` and `builder_kwargs` of the zoo builder.
"""

import inspect

from kerasbnn.methods import method

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


@method("cmtkd", options=_option_keys, check=_check, builds_student=False,
        depends_on=("teachers.bits", "teachers.quantizer", "student.", "distill.options",
                    "distill.delta_lr_scale.features"))
def train_cmtkd(job):
    """CMT-KD: the run's student and `teachers.bits` teachers (`teachers.quantizer`) of
    `CollaborativeDistiller.from_zoo`, trained together."""
    from kerasbnn.config import ConfigError
    from kerasbnn.distill import CollaborativeDistiller, DeltaHistory

    c = job.config
    options = dict(c.distill.options)
    bits = options.pop("student_bits", 1)
    builder_kwargs = {"bn_momentum": c.model.bn_momentum, **options.pop("builder_kwargs", {})}
    if c.model.width_multiplier != 1.0:  # as the pipeline's other models (`pipeline._build`)
        builder_kwargs["width_multiplier"] = c.model.width_multiplier
    if bits == 1:
        builder_kwargs["binary"] = c.student.binary
    job.print_fn(f"[distill] cmtkd: {c.model.arch}, student at {bits} bit(s), teachers "
                 f"{c.teachers.bits} ({c.teachers.quantizer}), options {options}")
    try:
        distiller = CollaborativeDistiller.from_zoo(
            c.model.arch, job.info.input_shape, job.info.num_classes, student_bits=bits,
            teacher_bits=tuple(c.teachers.bits), quantizer=c.teachers.quantizer,
            fusion_lr_scale=c.distill.delta_lr_scale.features, builder_kwargs=builder_kwargs,
            **options)
    except ValueError as error:  # a value of distill.options, found once the models build
        raise ConfigError(f"distill.options: {error}") from None
    distiller.compile(optimizer=job.optimizer(), metrics=["accuracy"])
    history = DeltaHistory(job.run.path("results", "pi_history.csv"),
                           plot_path=job.run.path("plots", "pi.png"), append=job.resumed("cmtkd"),
                           per_epoch=job.delta_rows_per_epoch())
    job.fit(distiller, "cmtkd", [history])
    importances = {k: [float(v) for v in values] for k, values in distiller.importances().items()}
    return distiller.student, {"student_bits": bits, "teachers": list(c.teachers.bits),
                               "quantizer": c.teachers.quantizer, "importances": importances}
