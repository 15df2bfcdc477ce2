"""`kd`: classic knowledge distillation (Hinton et al. 2015) from one teacher, the float one by
default (`distill.kd_teacher`), with FitNet-style hints at the zoo's taps."""

from kerasbnn.methods.registry import method
from kerasbnn.methods.multi_teacher_student import (LOSS_KEYS, TEACHER_KEYS, check_loss,
                                                    multi_teacher_student)


def _teacher(config):
    return (config.distill.kd_teacher,)


@method("kd", teachers=_teacher, two_step=True, check=check_loss,
        depends_on=(*TEACHER_KEYS, "student.", *LOSS_KEYS, "distill.kd_teacher"))
def train_kd(job):
    """KL at `distill.temperature` (weight `distill.kl_weight`) plus hints at the zoo's taps
    (weight `distill.feature_weight`): MAD's loss with the `distill.kd_teacher`-bit teacher
    alone."""
    (bits,) = _teacher(job.config)
    job.print_fn(f"[distill] kd: binary student from the {'float' if bits == 32 else f'{bits}-bit'} teacher")
    return multi_teacher_student(job, "kd", (bits,), "average")
