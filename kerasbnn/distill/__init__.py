"""Knowledge distillation for binary and low-bit students.

Every distiller is a `TeacherStudent` (`kerasbnn.distill.base`): the student, its teachers,
one feature extractor per model and the method's named, weighted loss terms, trained by
Keras' own step with one replica-scaling rule. `MultiTeacherDistiller` implements multi-bit
adaptive distillation (MAD, Nie et al., BMVC 2021), `CollaborativeDistiller` CMT-KD,
`PKKDDistiller` PKKD and `ProgressiveDistiller` the thesis' block-wise methods; the loss
terms are `keras.distillation.DistillationLoss` subclasses that also plug into Keras' own
`keras.distillation.Distiller`.
"""

from kerasbnn.distill.base import TeacherStudent, TermsDistiller
from kerasbnn.distill.callbacks import DeltaHistory
from kerasbnn.distill.collaborative import AttentionTransfer, CollaborativeDistiller, min_logit
from kerasbnn.distill.fusion import TeacherFusion, with_delta_optimizer
from kerasbnn.distill.logits_cache import (
    attach_teacher_logits, teacher_logits, with_teacher_logits)
from kerasbnn.distill.losses import (
    FeatureDistillation,
    LogitsDistillation,
    kl_divergence_with_logits,
    smooth_l1,
)
from kerasbnn.distill.multi_teacher import MultiTeacherDistiller
from kerasbnn.distill.pkkd import PKKDDistiller
from kerasbnn.distill.plots import plot_delta_history
from kerasbnn.distill.progressive import ProgressiveDistiller
from kerasbnn.distill.schedules import reactnet_two_step

__all__ = [
    "AttentionTransfer",
    "CollaborativeDistiller",
    "min_logit",
    "DeltaHistory",
    "FeatureDistillation",
    "LogitsDistillation",
    "MultiTeacherDistiller",
    "PKKDDistiller",
    "ProgressiveDistiller",
    "TeacherFusion",
    "TeacherStudent",
    "TermsDistiller",
    "attach_teacher_logits",
    "kl_divergence_with_logits",
    "plot_delta_history",
    "reactnet_two_step",
    "teacher_logits",
    "with_delta_optimizer",
    "with_teacher_logits",
    "smooth_l1",
]
