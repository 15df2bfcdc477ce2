r"""`progressive`: the thesis' block-wise distillation of the run's binary student from its
float twin (methods I, II, III; `kerasbnn.distill.ProgressiveDistiller`).

The teacher is the pipeline's float teacher of `model.arch` (`teachers=(32,)`), the student
the run's binary student (`student.binary`) of the same builder, initialised from the
teacher: with `student.init: float` exactly as every other arm's student
(`StudentJob.student`: the matching weights copied, BatchNorm statistics recomputed), with
`random` as the thesis does whatever the other arms do (the weights copied, the teacher's
BatchNorm statistics kept). Each KD phase lasts `epochs_per_stage` epochs (method II's single
LIT phase S x `epochs_per_stage`), then the whole student trains for `student.epochs` epochs,
so that `S x epochs_per_stage + student.epochs` epochs of images pass through the student
(`student_epochs`; in a comparison the pipeline trains the other arms that many epochs):

- method I (thesis eq. 2.13): at stage s, L_I = feature_weight L_local + (1 - feature_weight)
  CE of [student 1..s | teacher s+1..S], L_local = mean (x^t_s - x^s_s)^2 (eq. 2.14);
- method II, LIT (eq. 2.15): L_II = feature_weight sum_s MSE(Stu_s(T_{s-1}(x)), T_s(x))
  + (1 - feature_weight) (kd_label_fraction CE + (1 - kd_label_fraction) [T^2] KL), with T^2
  when `distill.temperature_squared` is true (LIT's code) and without it when false (the
  default; the thesis' eq. 2.16);
- method III (eq. 2.17): the MSE term alone.

Every phase is a resumable step of its own: logs in `logs/student_progressive/<phase>.csv`,
an `EpochBackup` in `backup/student_progressive/<phase>`, and the student's weights
after each finished phase, so `--resume` continues from the last finished stage.

Its options, the section `distill.progressive` (`_options_class`; the thesis' settings by
default): `variant` (method I, II or III), `epochs_per_stage`, `feature_weight` (beta, 0.4),
`kd_label_fraction` (0.95, the labels' share of L_KD; formerly `ce_weight`, a name now
refused here), `temperature` (6, LIT's code), `trainable` (cumulative: stages 1..s train at
stage s, the thesis' sub-network s; active: stage s alone), `final_loss` (ce, kd) and `block`
(the student's residual block, `double_relu` as the thesis; null: `model.arch`'s default).
"""

import dataclasses
import functools
import inspect
import typing

from kerasbnn.methods.registry import method, method_options, section
from kerasbnn.methods.multi_teacher_student import TEACHER_KEYS

#: The defaults of `distill.progressive`: the thesis' settings.
OPTIONS = {"variant": "I", "epochs_per_stage": 1, "feature_weight": 0.4,
           "kd_label_fraction": 0.95, "temperature": 6.0, "trainable": "cumulative",
           "final_loss": "ce", "block": "double_relu"}


def _options_class():
    """The dataclass of `distill.progressive`: `OPTIONS`, each with its type, bounds and
    choices (those of `kerasbnn.distill.progressive`)."""
    from kerasbnn.distill import progressive

    bounds = {"variant": {"choices": progressive.METHODS}, "epochs_per_stage": {"min": 0},
              "feature_weight": {"min": 0.0, "max": 1.0},
              "kd_label_fraction": {"min": 0.0, "max": 1.0},
              "temperature": {"above": 0.0}, "trainable": {"choices": progressive.TRAINABLE},
              "final_loss": {"choices": progressive.FINAL_LOSSES}}
    types = {"variant": str, "epochs_per_stage": int, "feature_weight": float,
             "kd_label_fraction": float, "temperature": float, "trainable": str, "final_loss": str,
             "block": typing.Optional[str]}
    return dataclasses.make_dataclass("ProgressiveOptions", [
        (key, types[key], dataclasses.field(default=value, metadata=bounds.get(key, {})))
        for key, value in OPTIONS.items()])


def _options(config):
    """`distill.progressive`, every value checked (`ConfigError` naming the key), as a dict."""
    from kerasbnn.binarization.builder import builder

    values, where = section(config, "progressive")
    if "ce_weight" in values:
        from kerasbnn.config import ConfigError

        raise ConfigError(
            f"{where}.ce_weight is now {where}.kd_label_fraction for the progressive method "
            "(the labels' share of L_KD; ce_weight is the weight of the label term everywhere "
            f"else): rename the key, value {values['ce_weight']!r}.")
    options = dataclasses.asdict(method_options(config, "progressive"))
    accepts = "block" in inspect.signature(builder(config.model.arch)).parameters
    if options["block"] is not None and not accepts:
        from kerasbnn.config import ConfigError

        raise ConfigError(f"distill.progressive.block={options['block']!r}: model.arch="
                          f"{config.model.arch} has no block option; set "
                          "distill.progressive.block to null, or model.arch=resnet20.")
    _check_layout(config, options["block"])
    return options


def _check_layout(config, block):
    """The student's `block` must lay its convs out as the float teacher's (`model.block`),
    or the student would not start from the teacher's weights: the thesis' two-conv variants
    share their layer names, Bi-Real's and ReActNet's one-conv blocks theirs."""
    from kerasbnn.models.resnet import BLOCKS

    teacher = config.model.block
    if block is None or teacher is None or (block in BLOCKS) == (teacher in BLOCKS):
        return
    from kerasbnn.config import ConfigError

    raise ConfigError(f"distill.progressive.block={block!r} and model.block={teacher!r} lay "
                      "out their convs differently, so the student could not start from its "
                      "float teacher's weights: set distill.progressive.block: null (the teachers' "
                      "block), or model.block to one of the thesis' blocks "
                      f"({', '.join(BLOCKS)}).")


def _tag(phase):
    """A phase's file name: stage1, stage2, ..., lit, final."""
    return phase["phase"].split("/")[0].replace(" ", "").lower()


def _train_phase(job, distiller, phase, epochs, first_pass):
    """One phase of `distiller.schedule()`: its stages trainable, its model compiled with a
    fresh cosine Adam over `epochs`, trained by `job.fit` as `student_progressive/<tag>` from
    the data's pass `first_pass` (the epochs of the phases before it)."""
    import keras

    job.print_fn(f"[distill] progressive {distiller.method}, {phase['phase']}: binary "
                 f"{', '.join(phase['binary']) or '-'}, trainable {', '.join(phase['trainable'])}"
                 f"; loss = {phase['loss']}")
    with distiller.phase(phase) as model:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=job.optimizer(epochs), metrics=["accuracy"],
                      loss=loss if model is distiller.student else None)
        job.fit(model, "progressive", phase=_tag(phase), epochs=epochs, first_pass=first_pass)


def _network(config):
    """The student's block, started from the float teacher whatever `student.init`."""
    return {"block": _options(config)["block"], "init": "float"}


def _epochs(config):
    """Epochs of images through the student: `epochs_per_stage` for each of `model.arch`'s
    stages (every variant: I and III stage by stage, II all at once), then `student.epochs`."""
    from kerasbnn import data
    from kerasbnn.binarization.builder import builder
    from kerasbnn.models.parts import taps

    info = data.info(config.data.name)
    stages = len(taps(builder(config.model.arch)(info.input_shape, info.num_classes)))
    return stages * _options(config)["epochs_per_stage"] + config.student.epochs


@method("progressive", teachers=(32,), options=_options_class,
        depends_on=(*TEACHER_KEYS, "student.", "distill.temperature_squared"),
        check=_options, network=_network, epochs=_epochs)
def train_progressive(job):
    """The run's binary student distilled block by block from the float teacher."""
    from kerasbnn.distill import ProgressiveDistiller

    o = _options(job.config)
    block = {"block": o["block"]} if o["block"] is not None else {}
    if job.config.student.init == "float":  # the other arms' start
        student, copy = job.student(**block), False
    else:
        student, copy = job.build(1, binary=job.config.student.binary, **block), True
    distiller = ProgressiveDistiller(
        student, job.teachers[32], o["variant"], feature_weight=o["feature_weight"],
        kd_label_fraction=o["kd_label_fraction"], temperature=o["temperature"],
        scale_by_temperature_squared=job.config.distill.temperature_squared,
        trainable=o["trainable"], final_loss=o["final_loss"], copy_teacher=copy, verbose=False)
    stages = len(distiller.stage_names)
    kd_epochs = o["epochs_per_stage"] * (stages if distiller.method == "II" else 1)
    phases, first_pass = [], 0
    for phase in distiller.schedule():
        epochs = job.config.student.epochs if phase["phase"] == "final" else kd_epochs
        if epochs:
            phases.append((_tag(phase), functools.partial(_train_phase, job, distiller, phase,
                                                          epochs, first_pass)))
            first_pass += epochs
    job.run_phases("progressive", student, phases)
    total = kd_epochs * (1 if distiller.method == "II" else stages) + job.config.student.epochs
    return student, {"teachers": [32], **o,
                     "temperature_squared": job.config.distill.temperature_squared,
                     "phases": [tag for tag, _ in phases], "total_epochs": total}
