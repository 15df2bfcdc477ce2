"""`none`: the binary student alone, the baseline every distillation method is compared with."""

from kerasbnn.methods.registry import method
from kerasbnn.resume import TEACHERS


@method("none", depends_on=("student.", *TEACHERS), two_step=True)  # teacher: student.init
def train_none(job):
    """The binary student alone, cross-entropy with the labels, on the same budget and
    `student.schedule`."""
    import keras

    job.print_fn("[train] the binary student without distillation (the baseline)")

    def compiled(model, step):
        model.compile(optimizer=job.optimizer(), metrics=["accuracy"],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model, ()

    student, _ = job.train_student("none", compiled)
    return student, {}
