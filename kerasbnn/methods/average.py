"""`average`: CMT-KD's "average teacher" baseline (Zhao et al. 2022, §4.2).

"We separately train three teachers with different precisions ... The averaged softmax outputs
of teachers are distilled to the 2-bit student" (the setting of You et al. 2017, the paper's
[33]). Here the teachers are the pipeline's: every `teachers.bits` teacher, trained before and
apart from the student, frozen while it learns (`teachers.cache_dir` reuses them), in one of
two versions (`teachers.init`; the results' `teachers_init` and the report say which ran):

- `float` (the default): the float teacher first, each k-bit teacher made from it (weights
  copied, BatchNorm recomputed) and fine-tuned: copies of one float network;
- `random`: the paper's, every teacher trained apart from its own random start (its own seed,
  `teachers.seed` plus its bit width) for the float teacher's epochs.
"""

from kerasbnn.methods.registry import method
from kerasbnn.methods.multi_teacher_student import (LOSS_KEYS, TEACHER_KEYS, check_loss,
                                                    multi_teacher_student)

#: The loss keys plain KD reads: MAD's loss without its feature term.
KD_KEYS = tuple(k for k in LOSS_KEYS
                if k not in ("distill.feature_weight", "distill.feature_reduction"))


@method("average", teachers=None, two_step=True, check=check_loss,
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
    listed (the paper averages the 4/6/8-bit ones: `teachers.bits: [4, 6, 8]`, trained
    apart: `teachers.init: random`). The student trains by `student.schedule` (the paper:
    one step).
    """
    bits, init = tuple(job.config.teachers.bits), job.config.teachers.init
    start = "each from its own random start" if init == "random" else "made from the float one"
    job.print_fn(f"[distill] average: binary student from the averaged softmax of {len(bits)} "
                 f"teachers {list(bits)}, {start} (teachers.init: {init})")
    student, extra = multi_teacher_student(job, "average", bits, "average", features=False,
                                           fuse_probabilities=True)
    return student, {**extra, "teachers_init": init}
