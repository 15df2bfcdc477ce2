"""The methods' registry: `@method` registers a plug-in, and the pipeline, the command line,
the config checks and `--resume` read what each method declares from here (`METHODS`)."""

from kerasbnn.registry import Registry
from kerasbnn.resume import TRAINING

__all__ = ["METHODS", "checked_options", "config_keys", "method", "needs_teachers",
           "option_keys", "student_epochs", "student_keys", "student_network"]

METHODS = Registry("distillation method")
"""Every distillation method by its key (`distill.method`, `--method`), registered by `method`."""


def method(key, *, teachers=(), options=None, depends_on=("student.",), zoo=True, check=None,
           builds_student=None, two_step=False, network=None, epochs=None):
    """Registers a method's training function under `key`.

    Args:
        key: the name in `distill.method`, `distill.compare` and `--method`.
        teachers: the bit widths of the pipeline's teachers it distils from: `()` none,
            `(32,)` the float teacher, None every `teachers.bits`, or a function of the
            `RunConfig` returning them.
        options: a function returning the `distill.options` keys it reads, or None when it
            reads none.
        depends_on: config keys (besides seed, data and model) its student depends on, for
            `--resume`, and the only ones it reads: the pipeline rejects, by name, a changed
            key that none of the methods it trains reads. One ending in "." stands for a
            whole section.
        zoo: it builds the run's zoo student (`model.arch` at 1 bit), so `model.arch` must
            take the zoo's precision options.
        check: `check(config)` raises `kerasbnn.config.ConfigError` for values the method
            cannot honour (called before anything is written or trained), or None.
        builds_student: it starts from `StudentJob.student()` (so, with `student.init:
            float`, from the float teacher); None: the same as `zoo`.
        two_step: it trains its student through `StudentJob.train_student`, so it takes
            `student.schedule: two_step`; the pipeline refuses that schedule for the others.
        network: `network(config)` returns what its student is and starts from, as
            `student_network` gives it (compared arms must agree: `kerasbnn.pipeline`), or
            None: the run's binary student from `student.init` (`StudentJob.student()`).
        epochs: `epochs(config)` returns how many epochs of training images pass through
            its student in all (its phases together), or None: `student.epochs`, twice
            that with `student.schedule: two_step`.
    """

    def register(function):
        function.teachers = teachers
        function.option_keys = options
        function.config_keys = (*TRAINING, *depends_on)
        function.zoo = zoo
        function.check = check
        function.builds_student = zoo if builds_student is None else builds_student
        function.two_step = two_step
        function.network = network
        function.epochs = epochs
        return METHODS.register(key)(function)

    return register


def needs_teachers(name, config=None):
    """The teacher bit widths `name` reads from the pipeline (`()` for none, None for all);
    a method whose teachers depend on the config says so for `config` (or its defaults)."""
    teachers = METHODS.get(name).teachers
    if callable(teachers):
        from kerasbnn.config import RunConfig

        return tuple(teachers(config or RunConfig()))
    return teachers


def student_network(name, config):
    """What method `name`'s student is and where it starts, for `config`: `{"arch": zoo
    builder, "bits": ..., "binary": ..., "block": ..., "init": "float" or "random", ...}`
    (the builder's own default where the config leaves a value to it). Arms of one
    comparison must give the same dict: the same network from the same weights."""
    import inspect

    from kerasbnn.binarization.builder import builder as arch_builder

    builder = arch_builder(config.model.arch)
    defaults = {k: p.default for k, p in inspect.signature(builder).parameters.items()}
    network = {"arch": config.model.arch, "bits": 1, "binary": config.student.binary,
               "block": config.model.block or defaults.get("block"),
               "init": config.student.init}
    own = METHODS.get(name).network
    if own is not None:
        fallback = {**defaults, "block": network["block"]}  # null: the run's own block
        network.update({k: fallback.get(k) if v is None else v for k, v in own(config).items()})
    return network


def student_epochs(name, config):
    """How many epochs of training images pass through method `name`'s student in all (every
    phase of its schedule): the images it trains on are these times the epoch's."""
    own = METHODS.get(name).epochs
    if own is not None:
        return own(config)
    twice = config.student.schedule == "two_step" and METHODS.get(name).two_step
    return config.student.epochs * (2 if twice else 1)


def option_keys(name):
    """The `distill.options` keys `name` reads, or None when it reads none."""
    keys = METHODS.get(name).option_keys
    return None if keys is None else set(keys())


def config_keys(name):
    """The config keys `name`'s student depends on (`kerasbnn.resume`)."""
    return METHODS.get(name).config_keys


def student_keys():
    """`{method: the config keys its student depends on}` for every registered method, as
    `kerasbnn.resume.plan` and `orphans` take them."""
    return {name: config_keys(name) for name in METHODS.keys()}


def checked_options(config, defaults, *, choices=None, fractions=(), positive=(), counts=(),
                    flags=()):
    """`defaults` overridden by `distill.options`, each value checked before anything trains.

    Args:
        choices: `{key: valid values}`.
        fractions: keys in [0, 1]; positive: keys > 0; counts: integers >= 0; flags: booleans.

    Raises:
        kerasbnn.config.ConfigError: naming `distill.options.<key>`, the value and the fix.
    """
    from kerasbnn.config import ConfigError

    options = {**defaults, **config.distill.options}

    def fail(key, wanted):
        raise ConfigError(f"distill.options.{key}={options[key]!r} is invalid: set {wanted} "
                          f"(default {defaults[key]!r}).")

    for key, valid in (choices or {}).items():
        if options[key] not in valid:
            fail(key, f"one of {', '.join(map(str, valid))}")
    numbers = [*fractions, *positive]
    for key in numbers:
        if isinstance(options[key], bool) or not isinstance(options[key], (int, float)):
            fail(key, "a number")
    for key in fractions:
        if not 0 <= options[key] <= 1:
            fail(key, "a number in [0, 1]")
    for key in positive:
        if not options[key] > 0:
            fail(key, "a positive number")
    for key in counts:
        if isinstance(options[key], bool) or not isinstance(options[key], int) or options[key] < 0:
            fail(key, "an integer >= 0")
    for key in flags:
        if not isinstance(options[key], bool):
            fail(key, "true or false")
    return options
