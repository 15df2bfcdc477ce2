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

`distill.options`: `pkkd` (false: the adder network alone, the paper's baseline),
`blocks_per_stage`, `width_multiplier`, `optimizer` (adam, sgd), and the arguments of
`PKKDDistiller` (`feature_weight`, `kl_weight`, `temperature`, `sigma_student`,
`sigma_teacher`, `kernel_offset`, `kernel_momentum`, `kernel`, `transform`,
`teacher_kl_weight`, `feature_taps`, `max_exponent`); `student.binary` and the `teachers` section do not apply.
"""

import inspect

from kerasbnn.methods.registry import checked_options, method

OPTIONS = {"pkkd": True, "blocks_per_stage": 3, "width_multiplier": 1.0, "optimizer": "adam"}
#: `PKKDDistiller` arguments the pipeline sets itself.
_OWN = {"self", "student", "teacher", "progressive_teacher", "name", "kwargs"}


def _distiller_defaults():
    from kerasbnn.distill import PKKDDistiller

    parameters = inspect.signature(PKKDDistiller.__init__).parameters
    return {k: p.default for k, p in parameters.items() if k not in _OWN}


def _option_keys():
    return {**OPTIONS, **_distiller_defaults()}


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
    """`distill.options` over `OPTIONS` (ours checked here; the distiller's when it builds)."""
    adder_twin(config.model.arch)
    options = checked_options(config, OPTIONS, choices={"optimizer": ("adam", "sgd")},
                              positive=("width_multiplier",), flags=("pkkd",))
    if isinstance(options["blocks_per_stage"], bool) or not (
            isinstance(options["blocks_per_stage"], int) and options["blocks_per_stage"] >= 1):
        from kerasbnn.config import ConfigError

        raise ConfigError(f"distill.options.blocks_per_stage={options['blocks_per_stage']!r} "
                          "is invalid: set an integer >= 1 (3 gives ResNet-20).")
    return options


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
    except ValueError as error:  # a value of distill.options, found once the models build
        raise ConfigError(f"distill.options: {error}") from None
    trainer.compile(optimizer, metrics=["accuracy"])
    return student, teacher, trainer


@method("pkkd", options=_option_keys, depends_on=("student.epochs", "student.learning_rate",
                                                  "student.precise_bn", "distill.options"),
        zoo=False, check=_options,
        network=lambda config: {"arch": adder_twin(config.model.arch), "init": "random"})
def train_pkkd(job):
    """The adder twin of `model.arch`, trained with PKKD from its co-trained CNN."""
    options = {**_distiller_defaults(), **_options(job.config)}
    job.print_fn(f"[distill] pkkd: {adder_twin(job.config.model.arch)} "
                 f"{'from its CNN twin' if options['pkkd'] else 'alone'}")
    student, teacher, trainer = _trainer(job, options)
    job.run_phases("pkkd", trainer, [("train", lambda: job.fit(trainer, "pkkd", phase="train"))])
    return student, {**options,  # the distiller's settings too: which lambda a result is from
                     "teacher_accuracy": job.evaluate(teacher) if teacher is not None else None}
