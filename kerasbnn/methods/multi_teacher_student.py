"""A student distilled from the pipeline's teachers by `MultiTeacherDistiller`: what the
methods that distil with it (kd, mad, average) share. The teachers' logits are cached where
the loss allows (`distill.teacher_logits`), MAD's fusion logits theta may start from the
teachers' validation accuracies (`distill.delta_init`) and train by their own optimizer
(`distill.delta_optimizer`), and the run's `student.schedule` applies."""

import functools

from kerasbnn import config as run_config
from kerasbnn.resume import TEACHERS as TEACHER_KEYS

__all__ = ["LOSS_KEYS", "TEACHER_KEYS", "TEACHER_LOGITS", "accuracy_thetas",
           "cached_training_data", "check_loss", "delta_optimizer", "multi_teacher_student",
           "why_not_cached"]

#: The config keys of MAD's loss (`kerasbnn.distill.MultiTeacherDistiller`).
LOSS_KEYS = ("distill.ce_weight", "distill.kl_weight", "distill.feature_weight",
             "distill.temperature", "distill.temperature_squared", "distill.feature_reduction")
#: `delta_init: accuracy`: each accuracy point below the best teacher divides a weight by e.
ACCURACY_TEMPERATURE = 0.01
#: `distill.teacher_logits`'s values, and the largest table of cached logits.
TEACHER_LOGITS = run_config.choices(run_config.DistillConfig, "teacher_logits")
TABLE_LIMIT = 1 << 30


def check_loss(config):
    """The loss settings of `MultiTeacherDistiller` (`distill.fusion`, `feature_reduction`,
    `delta_objective` and the weights) are values it takes, for `teachers.bits` teachers:
    the check of kd, mad and average (`kerasbnn.distill.multi_teacher.check_hyperparameters`).

    Raises:
        kerasbnn.config.ConfigError: naming the key and the fix.
    """
    from kerasbnn.distill.multi_teacher import check_hyperparameters

    d = config.distill
    try:
        check_hyperparameters(
            len(config.teachers.bits), fusion=d.fusion, ce_weight=d.ce_weight,
            kl_weight=d.kl_weight, feature_weight=d.feature_weight, temperature=d.temperature,
            feature_reduction=d.feature_reduction, delta_objective=d.delta_objective,
            prefix="distill.")
    except ValueError as error:
        message = str(error)
        raise run_config.ConfigError(
            message if message.startswith("distill") else f"distill: {message}") from None


def why_not_cached(config, info, features=True):
    """Why kd, mad and average cannot cache the teachers' logits in this run (a sentence
    ending in the fix), or None when they can (`distill.teacher_logits`); `features=False`:
    a method that taps no features whatever `distill.feature_weight` (average)."""
    d = config.distill
    if config.data.augment:
        return "data.augment is on, so the images change every epoch; set data.augment: false"
    if features and d.feature_weight > 0:
        return (f"distill.feature_weight={d.feature_weight:g} needs the teachers' features at "
                "every step; set distill.feature_weight: 0")
    if config.distribute != "none":
        return (f"distribute={config.distribute!r} is not supported with cached logits; set "
                "distribute: none")
    examples = config.data.train_limit or info.splits[list(info.splits)[0]]
    size = 4 * examples * len(config.teachers.bits) * info.num_classes
    if size > TABLE_LIMIT:
        return (f"the table of {examples:,} images x {len(config.teachers.bits)} teachers x "
                f"{info.num_classes} classes takes {size / 2**30:.1f} GiB (limit 1 GiB); lower "
                "data.train_limit")
    return None


def cached_training_data(job, teachers, features=True):
    """The student's training batches with `teachers`' logits attached
    (`kerasbnn.distill.logits_cache`), or None when they run at every step
    (`distill.teacher_logits: computed`, or `auto` where `why_not_cached` says why)."""
    import time

    from kerasbnn.distill import attach_teacher_logits, teacher_logits

    if job.config.distill.teacher_logits == "computed" or why_not_cached(
            job.config, job.info, features):
        return None
    start = time.perf_counter()
    table = teacher_logits(teachers, job.bn_ds)  # every training image in its stored order
    job.print_fn(f"[distill] the teachers' logits of {len(table):,} training images cached in "
                 f"{time.perf_counter() - start:.0f} s; the teachers do not run while the "
                 "student trains (distill.teacher_logits)")
    return attach_teacher_logits(job.train_indexed(), table)


def accuracy_thetas(accuracies, lr_scale, temperature=ACCURACY_TEMPERATURE):
    """The fusion logits theta that start delta = softmax(lr_scale * theta) at
    softmax((acc_m - max acc) / temperature) (`TeacherFusion` multiplies theta by its
    `lr_scale`)."""
    import numpy as np

    accuracies = np.asarray(accuracies, "float64")
    return ((accuracies - accuracies.max()) / (temperature * lr_scale)).astype("float32")


def _start_from_accuracy(job, distiller, bits):
    """Sets every learned fusion of `distiller` to start from the teachers' validation
    accuracies (`distill.delta_init: accuracy`)."""
    results = [job.run.read_json(job.run.teacher_step(b)) for b in bits]
    if any("val_accuracy" not in r for r in results):
        raise ValueError("distill.delta_init=accuracy starts delta from the teachers' validation "
                         "accuracies: set data.val_split (e.g. 0.1), or delta_init: uniform.")
    accuracies = [r["val_accuracy"] for r in results]
    for fusion in distiller.fusions.values():
        if fusion.learned:
            fusion.theta.assign(accuracy_thetas(accuracies, fusion.lr_scale))
    job.print_fn(f"[distill] delta starts from the validation accuracies {accuracies}")


def delta_optimizer(job, distiller):
    """The optimizer `distiller` compiles with: the student's (`job.optimizer()`), and with
    `distill.delta_optimizer: sgd` SGD at `distill.delta_learning_rate` for the fusion
    logits theta (`kerasbnn.distill.with_delta_optimizer`)."""
    import keras

    from kerasbnn.distill import with_delta_optimizer

    d = job.config.distill
    if d.delta_optimizer == "adam":
        return job.optimizer()
    return with_delta_optimizer(distiller, job.optimizer(),
                                keras.optimizers.SGD(d.delta_learning_rate))


def multi_teacher_student(job, name, bits, fusion, *, features=True, fuse_probabilities=False):
    """The run's binary student distilled by `MultiTeacherDistiller` from `bits` teachers,
    with the loss of `LOSS_KEYS` (`distill.ce_weight`, `kl_weight`, `feature_weight`, ...) and
    the zoo's feature taps (none with `feature_weight` 0 or `features=False`: logits only, and
    the teachers' logits cached where `distill.teacher_logits` allows; with `features=False`
    `feature_weight` and `feature_reduction` are not read), `fuse_probabilities` as in
    `MultiTeacherDistiller`, trained by `student.schedule` (`StudentJob.train_student`: with
    `two_step`, a distiller per step, step 2's starting from the fusion logits theta and the
    adapters step 1 learned; `distill.delta_init` sets theta's start in step 1 only). With
    more than one teacher the fusion weights
    are logged and plotted (`delta_history_<name>.csv`; step 1 of `two_step`:
    `delta_history_<name>_step1.csv`), and the result holds the last distiller's, with the
    `delta_optimizer` that trained them (`delta_optimizer`)."""
    from kerasbnn.distill import DeltaHistory, MultiTeacherDistiller

    d = job.config.distill
    scale = d.delta_lr_scale if d.delta_optimizer == "adam" else None
    teachers = [job.teachers[b] for b in bits]
    features = features and d.feature_weight > 0
    feature_loss = dict(feature_taps="auto", feature_weight=d.feature_weight,
                        feature_reduction=d.feature_reduction) if features else dict(
        feature_taps=None, feature_weight=0.0)

    def distiller(student, step):
        trainer = MultiTeacherDistiller(
            student, teachers, fusion=fusion, **feature_loss,
            ce_weight=d.ce_weight, kl_weight=d.kl_weight, temperature=d.temperature,
            scale_by_temperature_squared=d.temperature_squared, delta_objective=d.delta_objective,
            fuse_probabilities=fuse_probabilities,
            fusion_lr_scale=scale.logits if scale else 1.0,
            feature_fusion_lr_scale=scale.features if scale else 1.0)
        if (d.delta_init == "accuracy" and fusion == "learned" and len(bits) > 1
                and step != "step2"):  # step 2 continues from step 1's theta
            _start_from_accuracy(job, trainer, bits)
        trainer.compile(optimizer=delta_optimizer(job, trainer), metrics=["accuracy"])
        if len(bits) == 1:
            return trainer, []
        tag = f"{name}_{step}" if step == "step1" else name
        return trainer, [DeltaHistory(
            job.run.delta_history(tag), plot_path=job.run.plot(f"delta_{tag}"),
            append=job.resumed(name if step is None else f"{name}/{step}"),
            per_epoch=job.delta_rows_per_epoch())]

    student, trainer = job.train_student(
        name, distiller, data=functools.partial(cached_training_data, job, teachers, features))
    deltas = None if trainer is None else {
        k: [float(v) for v in values] for k, values in trainer.deltas().items()}
    learned = fusion == "learned" and len(bits) > 1
    return student, {"teachers": list(bits), "deltas": deltas,
                     **({"delta_optimizer": d.delta_optimizer} if learned else {})}
