"""`at`: attention transfer (Zagoruyko & Komodakis, ICLR 2017, arXiv:1612.03928) from the
float teacher at the zoo's stage taps, plus KD on the logits.

The method is written as a plug-in should be: one module, no distiller of its own. It runs
Keras' `keras.distillation.Distiller` with kerasbnn's `AttentionTransfer` (one per stage tap,
eq. 2 of the paper: the mean squared difference of normalised attention maps) and
`LogitsDistillation` (the KL at `distill.temperature`). Keras' Distiller combines them as
w_s CE + (1 - w_s) sum_i w_i L_i; with w_s = 1/2 the loss is half of
CE + sum_i w_i L_i, the same direction of descent (Adam is invariant to the factor).

`distill.options`: `feature_weight` (the attention terms' weight, default 100 as CMT-KD's
attention transfer, UNCONFIRMED) and `p` (the attention map's exponent, default 2).
"""

from kerasbnn.methods import method
from kerasbnn.methods.mad import TEACHER_KEYS

OPTIONS = {"feature_weight": 100.0, "p": 2}


@method("at", teachers=(32,), options=lambda: OPTIONS,
        depends_on=(*TEACHER_KEYS, "student.", "distill.kl_weight", "distill.temperature",
                    "distill.options"),
        distributes=False)  # Keras' Distiller scales its student loss per replica, not the rest
def train_at(job):
    """The run's binary student, distilled by attention transfer from the float teacher."""
    import keras

    from kerasbnn import models
    from kerasbnn.config import ConfigError
    from kerasbnn.distill import AttentionTransfer, LogitsDistillation

    options = {**OPTIONS, **job.config.distill.options}
    student, teacher = job.student(), job.teachers[32]
    taps = [t for t in models.taps(student) if t.startswith("stage")]
    try:
        losses = [AttentionTransfer(options["p"], teacher_layer_name=t, student_layer_name=t)
                  for t in taps]
    except ValueError as error:
        raise ConfigError(f"distill.options: {error}") from None
    losses.append(LogitsDistillation(job.config.distill.temperature))
    weights = [float(options["feature_weight"])] * len(taps) + [job.config.distill.kl_weight]
    job.print_fn(f"[distill] at: attention transfer at {taps} from the float teacher")
    distiller = keras.distillation.Distiller(
        teacher=teacher, student=student, distillation_losses=losses,
        distillation_loss_weights=weights, student_loss_weight=0.5)
    distiller.compile(optimizer=job.optimizer(), metrics=["accuracy"],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    job.fit(distiller, "at")
    return student, {"teachers": [32], "feature_taps": taps, **options}
