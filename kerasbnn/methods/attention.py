"""`at`: attention transfer (Zagoruyko & Komodakis, ICLR 2017, arXiv:1612.03928) from the
float teacher at the zoo's stage taps, plus KD on the logits.

The method is written as a plug-in should be: one module, no distiller of its own. It runs
kerasbnn's `TermsDistiller` (the shape of Keras' `keras.distillation.Distiller`: each loss
declares the layers it taps) with `AttentionTransfer` (one term per stage tap, eq. 2 of the
paper: the mean squared difference of normalised attention maps) and `LogitsDistillation`
(the KL at `distill.temperature`): L = CE + kl_weight L_KL + feature_weight sum_i L_AT,i.
Every term is scaled alike across replicas, so it trains under `distribute: mirrored`.

Its options, the section `distill.at` (`ATOptions`), e.g. `distill.at: {feature_weight: 50}`.
"""

import dataclasses

from kerasbnn.methods.registry import method, method_options
from kerasbnn.methods.multi_teacher_student import TEACHER_KEYS


@dataclasses.dataclass
class ATOptions:
    """`distill.at`: `feature_weight`, the attention terms' weight (default 100 as CMT-KD's
    attention transfer, UNCONFIRMED), and `p`, the attention map's exponent (default 2)."""

    feature_weight: float = dataclasses.field(default=100.0, metadata={"min": 0.0})
    p: float = dataclasses.field(default=2.0, metadata={"above": 0.0})


@method("at", teachers=(32,), options=ATOptions, two_step=True,
        depends_on=(*TEACHER_KEYS, "student.", "distill.kl_weight", "distill.temperature"))
def train_at(job):
    """The run's binary student, distilled by attention transfer from the float teacher
    (`student.schedule`: a distiller per step; attention transfer and KD have no weights of
    their own, so step 2 carries only the student from step 1)."""
    from kerasbnn import models
    from kerasbnn.config import ConfigError
    from kerasbnn.distill import AttentionTransfer, LogitsDistillation, TermsDistiller

    options = dataclasses.asdict(method_options(job.config, "at"))
    teacher = job.teachers[32]
    taps = [t for t in models.taps(teacher) if t.startswith("stage")]  # the student's names

    def distiller(student, step):
        try:
            losses = {f"attention_loss_{t}": (AttentionTransfer(
                options["p"], teacher_layer_name=t, student_layer_name=t),
                options["feature_weight"]) for t in taps}
            losses["kl_loss"] = (LogitsDistillation(job.config.distill.temperature),
                                 job.config.distill.kl_weight)
            trainer = TermsDistiller(student, teacher, losses)
        except ValueError as error:
            raise ConfigError(f"distill.at: {error}") from None
        trainer.compile(optimizer=job.optimizer(), metrics=["accuracy"])
        return trainer, ()

    job.print_fn(f"[distill] at: attention transfer at {taps} from the float teacher")
    student, _ = job.train_student("at", distiller)
    return student, {"teachers": [32], "feature_taps": taps, **options}
