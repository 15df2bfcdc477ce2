"""`cmtkd`: collaborative multi-teacher KD (Zhao et al. 2022), teachers trained with the student."""

import inspect

from kerasbnn.methods import method


def _option_keys():
    from kerasbnn.distill import CollaborativeDistiller

    keys = set(inspect.signature(CollaborativeDistiller.from_zoo).parameters)
    keys |= set(inspect.signature(CollaborativeDistiller.__init__).parameters)
    return keys - {"self", "cls", "name", "input_shape", "num_classes", "student", "teachers",
                   "kwargs"}


@method("cmtkd", options=_option_keys, depends_on=("teachers.", "student.", "distill.options"),
        builds_student=False)
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
