"""`mad`: multi-bit adaptive distillation (Nie et al., BMVC 2021) from every teacher.

The fusion logits theta (delta = softmax(theta), eqs. 7-8) train by `distill.delta_optimizer`:
SGD at `distill.delta_learning_rate` (the default; `delta_optimizer`), or the student's Adam
at `distill.delta_lr_scale` times its rate (MAD's one optimizer when the scale is 1).
"""

from kerasbnn.methods.multi_teacher_student import LOSS_KEYS, TEACHER_KEYS, multi_teacher_student
from kerasbnn.methods.registry import method

#: The config keys of how MAD's fusion weights learn.
DELTA_KEYS = ("distill.fusion", "distill.delta_lr_scale.", "distill.delta_init",
              "distill.delta_objective", "distill.delta_optimizer", "distill.delta_learning_rate")


def _check_delta_optimizer(config):
    """`distill.delta_lr_scale` is MAD's only under `delta_optimizer: adam` (CMT-KD reads
    `features` whatever it is): a changed one with `sgd` is refused, naming the fix."""
    from kerasbnn.config import ConfigError, DeltaLRConfig

    d, default = config.distill, DeltaLRConfig()
    keys = ("logits",) if "cmtkd" in (d.method, *d.compare) else ("logits", "features")
    changed = [k for k in keys if getattr(d.delta_lr_scale, k) != getattr(default, k)]
    if d.delta_optimizer == "sgd" and changed:
        raise ConfigError(
            f"distill.delta_lr_scale.{changed[0]} scales delta's rate under "
            "distill.delta_optimizer=adam; with sgd, set its rate with "
            "distill.delta_learning_rate, or set distill.delta_optimizer=adam.")


@method("mad", teachers=None, two_step=True, check=_check_delta_optimizer,
        depends_on=("teachers.bits", *TEACHER_KEYS, "student.", *LOSS_KEYS, *DELTA_KEYS))
def train_mad(job):
    """MAD from every teacher of `teachers.bits`, fusion `distill.fusion`."""
    bits = tuple(job.config.teachers.bits)
    job.print_fn(f"[distill] mad: binary student from {len(bits)} teachers {list(bits)}")
    return multi_teacher_student(job, "mad", bits, job.config.distill.fusion)
