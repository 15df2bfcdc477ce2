"""`kd`: classic knowledge distillation (Hinton et al. 2015) from the float teacher, with
FitNet-style hints at the zoo's taps."""

from kerasbnn.methods import method
from kerasbnn.methods.mad import LOSS_KEYS, TEACHER_KEYS, multi_teacher_student


@method("kd", teachers=(32,), depends_on=(*TEACHER_KEYS, "student.", *LOSS_KEYS))
def train_kd(job):
    """KL at `distill.temperature` (weight `distill.kl_weight`) plus hints at the zoo's taps
    (weight `distill.feature_weight`): MAD's loss with the float teacher alone."""
    job.print_fn("[distill] kd: binary student from the float teacher")
    return multi_teacher_student(job, "kd", (32,), "average")
