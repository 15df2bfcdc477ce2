"""`average`: CMT-KD's "average teacher" baseline (Zhao et al. 2022, §4.2).

"We separately train three teachers with different precisions ... The averaged softmax outputs
of teachers are distilled to the 2-bit student" (the setting of You et al. 2017, the paper's
[33]). Here the teachers are the pipeline's: every `teachers.bits` teacher, trained before and
apart from the student (the float teacher first, each k-bit teacher made from it and
fine-tuned; `teachers.cache_dir` reuses them), frozen while the student learns.
"""

from kerasbnn.methods import method
from kerasbnn.methods.mad import LOSS_KEYS, TEACHER_KEYS, multi_teacher_student

#: The loss keys plain KD reads: MAD's loss without its feature term.
KD_KEYS = tuple(k for k in LOSS_KEYS
                if k not in ("distill.feature_weight", "distill.feature_reduction"))


@method("average", teachers=None, two_step=True,
        depends_on=("teachers.bits", *TEACHER_KEYS, "student.", *KD_KEYS))
def train_average(job):
    """Plain KD (Hinton) from the equal-weight average of every `teachers.bits` teacher's
    softmax (CMT-KD §4.2's "average teacher"):

        L = ce_weight CE(y, y^s) + kl_weight KL(mean_m softmax(y^t_m / T) || softmax(y^s / T))

    at T = `distill.temperature` (times T^2 with `distill.temperature_squared`), through
    `MultiTeacherDistiller(fusion="average", feature_taps=None, fuse_probabilities=True)`:
    the weights stay 1/M, the teachers are frozen (inference mode, no gradient). The paper's
    baseline distils logits only, so `distill.feature_weight` and `distill.feature_reduction`
    do not apply (the pipeline refuses them unless another compared method reads them), nor
    do MAD's delta settings. Every `teachers.bits` teacher is averaged, the float one too when
    listed (the paper averages the 4/6/8-bit ones: `teachers.bits: [4, 6, 8]`). The student
    trains by `student.schedule` (the paper: one step).
    """
    bits = tuple(job.config.teachers.bits)
    job.print_fn(f"[distill] average: binary student from the averaged softmax of {len(bits)} "
                 f"separately trained teachers {list(bits)}")
    return multi_teacher_student(job, "average", bits, "average", features=False,
                                 fuse_probabilities=True)
