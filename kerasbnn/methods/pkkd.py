r"""`pkkd`: an adder network distilled from its CNN twin by kernel-based progressive KD
(Xu et al., NeurIPS 2020, arXiv:2009.13044; `kerasbnn.distill.PKKDDistiller`).

The student is the adder twin of `model.arch` in the zoo (`adder_resnet20` for resnet20); the
teacher is the same network with convolutions (`layer="conv"`), trained from scratch together
with the student: the paper's progressive teacher (P), so the pipeline's pre-trained float
teacher is not used (a frozen trained CNN is the paper's "NP" ablation). Per batch
(sg = stop-gradient, eqs. 6-7 for the kernels g, h):

    L_a = CE(y_a, y) + kl_weight tau^2 KL(sg y_c || y_a) + feature_weight sum_m L_m
    L_c = CE(y_c, y) + teacher_kl_weight tau^2 KL(sg y_a || y_c)

trained for `student.epochs` epochs at `student.learning_rate` (the run's cosine Adam, or
`optimizer: sgd`, AdderNet's SGD with momentum 0.9 and cosine decay). The moving BatchNorm
averages lag behind adder outputs (measured, `benchmarks/pkkd_accuracy.py`: PKKD students at
26-57% test accuracy with them, 64-72% after recomputing), so keep the pipeline's
`student.precise_bn` on (the default). Training is one resumable phase
(`backup/student_pkkd/train`).

Its options, the section `distill.pkkd` (`_options_class`), e.g. `distill.pkkd:
{sigma_student: 2.0}`: `pkkd` (false: the adder network alone, the paper's baseline),
`blocks_per_stage`, `width_multiplier`, `optimizer` (adam, sgd), and the arguments of
`PKKDDistiller` (`feature_weight`, `kl_weight`, `temperature`, `sigma_student`,
`sigma_teacher`, `kernel_offset`, `kernel_momentum`, `kernel`, `transform`,
`teacher_kl_weight`, `feature_taps`, `max_exponent`; the distiller checks them when it
builds); `student.binary` and the `teachers` section do not apply.
"""

import dataclasses
import inspect
import typing

from kerasbnn.methods.registry import method, method_options

#: The defaults of `distill.pkkd`'s own keys (the distiller's come from its signature).
OPTIONS = {"pkkd": True, "blocks_per_stage": 3, "width_multiplier": 1.0, "optimizer": "adam"}
#: Their types and bounds.
_FIELDS = {"pkkd": (bool, {}), "blocks_per_stage": (int, {"min": 1}),
           "width_multiplier": (float, {"above": 0.0}),
           "optimizer": (str, {"choices": ("adam", "sgd")})}
#: `PKKDDistiller` arguments the pipeline sets itself.
_OWN = {"self", "student", "teacher", "progressive_teacher", "name", "kwargs"}


def _distiller_defaults():
    from kerasbnn.distill import PKKDDistiller

    parameters = inspect.signature(PKKDDistiller.__init__).parameters
    return {k: p.default for k, p in parameters.items() if k not in _OWN}


def _options_class():
    """The dataclass of `distill.pkkd`: `OPTIONS`, typed, then `PKKDDistiller`'s arguments
    with their defaults (any value: the distiller checks them)."""
    own = [(key, _FIELDS[key][0], dataclasses.field(default=value, metadata=_FIELDS[key][1]))
           for key, value in OPTIONS.items()]
    distiller = [(key, typing.Any, dataclasses.field(default=value))
                 for key, value in _distiller_defaults().items()]
    return dataclasses.make_dataclass("PKKDOptions", own + distiller)


def adder_twin(arch):
    """The zoo name of `arch`'s adder network (`adder_resnet20` for resnet20)."""
    from kerasbnn import models
    from kerasbnn.config import ConfigError

    name = arch if arch.startswith("adder_") else f"adder_{arch}"
    if name not in models.names():
        adders = [n for n in models.names() if n.startswith("adder_")]
        raise ConfigError(
            f"model.arch={arch!r} has no adder twin in the zoo, and pkkd trains adder networks "
            f"({', '.join(adders)}); set model.arch={adders[0].removeprefix('adder_')}.")
    return name


def _options(config):
    """`distill.pkkd` as a dict, checked (ours here; the distiller's values when it builds),
    and `model.arch`'s adder twin."""
    adder_twin(config.model.arch)
    return dataclasses.asdict(method_options(config, "pkkd"))


def _trainer(job, options):
    """`(student, teacher or None, the model fit trains)`, compiled."""
    import keras

    from kerasbnn import models
    from kerasbnn.config import ConfigError
    from kerasbnn.distill import PKKDDistiller

    c, info = job.config, job.info
    build = models.get(adder_twin(c.model.arch))
    shape = dict(blocks_per_stage=options["blocks_per_stage"], bn_momentum=c.model.bn_momentum,
                 width_multiplier=options["width_multiplier"])
    student = build(info.input_shape, info.num_classes, **shape)
    optimizer = job.optimizer()
    if options["optimizer"] == "sgd":  # AdderNet's recipe: SGD, momentum 0.9, cosine decay
        steps = c.student.epochs * int(job.train_ds.cardinality())
        optimizer = keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(
            c.student.learning_rate, max(1, steps)), momentum=0.9)
    if not options["pkkd"]:
        student.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        metrics=["accuracy"])
        return student, None, student
    teacher = build(info.input_shape, info.num_classes, layer="conv", **shape)
    kwargs = {k: options[k] for k in _distiller_defaults() if k in options}
    try:
        trainer = PKKDDistiller(student, teacher, **kwargs)
    except ValueError as error:  # a value of distill.pkkd, found once the models build
        raise ConfigError(f"distill.pkkd: {error}") from None
    trainer.compile(optimizer, metrics=["accuracy"])
    return student, teacher, trainer


@method("pkkd", options=_options_class, depends_on=("student.epochs", "student.learning_rate",
                                                    "student.precise_bn"),
        zoo=False, check=_options,
        network=lambda config: {"arch": adder_twin(config.model.arch), "init": "random"})
def train_pkkd(job):
    """The adder twin of `model.arch`, trained with PKKD from its co-trained CNN."""
    options = _options(job.config)
    job.print_fn(f"[distill] pkkd: {adder_twin(job.config.model.arch)} "
                 f"{'from its CNN twin' if options['pkkd'] else 'alone'}")
    student, teacher, trainer = _trainer(job, options)
    job.run_phases("pkkd", trainer, [("train", lambda: job.fit(trainer, "pkkd", phase="train"))])
    return student, {**options,  # the distiller's settings too: which lambda a result is from
                     "teacher_accuracy": job.evaluate(teacher) if teacher is not None else None}
