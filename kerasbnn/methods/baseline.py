"""`none`: the binary student alone, the baseline every distillation method is compared with."""

from kerasbnn.methods import method
from kerasbnn.resume import TEACHERS


@method("none", depends_on=("student.", *TEACHERS))  # the float teacher: student.init
def train_none(job):
    """The binary student alone, cross-entropy with the labels, on the same budget."""
    import keras

    job.print_fn("[train] the binary student without distillation (the baseline)")
    student = job.student()
    student.compile(optimizer=job.optimizer(), metrics=["accuracy"],
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    job.fit(student, "none")
    return student, {}
