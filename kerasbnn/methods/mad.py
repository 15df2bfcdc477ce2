"""`mad`: multi-bit adaptive distillation (Nie et al., BMVC 2021) from every teacher."""

from kerasbnn.methods import method
from kerasbnn.resume import TEACHERS as TEACHER_KEYS

#: The config keys of MAD's loss (`kerasbnn.distill.MultiTeacherDistiller`).
LOSS_KEYS = ("distill.kl_weight", "distill.feature_weight", "distill.temperature")


def multi_teacher_student(job, name, bits, fusion):
    """The run's binary student distilled by `MultiTeacherDistiller` from `bits` teachers,
    with `distill.kl_weight`, `distill.feature_weight`, `distill.temperature` and the zoo's
    feature taps; the fusion weights are logged and plotted when there is more than one."""
    from kerasbnn.distill import DeltaHistory, MultiTeacherDistiller

    d = job.config.distill
    distiller = MultiTeacherDistiller(
        job.student(), [job.teachers[b] for b in bits], feature_taps="auto", fusion=fusion,
        kl_weight=d.kl_weight, feature_weight=d.feature_weight, temperature=d.temperature)
    distiller.compile(optimizer=job.optimizer(), metrics=["accuracy"])
    callbacks = []
    if len(bits) > 1:
        callbacks.append(DeltaHistory(job.run.path("results", f"delta_history_{name}.csv"),
                                      plot_path=job.run.path("plots", f"delta_{name}.png"),
                                      append=job.resumed(name)))
    job.fit(distiller, name, callbacks)
    deltas = {k: [float(v) for v in values] for k, values in distiller.deltas().items()}
    return distiller.student, {"teachers": list(bits), "deltas": deltas}


@method("mad", teachers=None,
        depends_on=("teachers.bits", *TEACHER_KEYS, "student.", *LOSS_KEYS, "distill.fusion"))
def train_mad(job):
    """MAD from every teacher of `teachers.bits`, fusion `distill.fusion`."""
    bits = tuple(job.config.teachers.bits)
    job.print_fn(f"[distill] mad: binary student from {len(bits)} teachers {list(bits)}")
    return multi_teacher_student(job, "mad", bits, job.config.distill.fusion)
