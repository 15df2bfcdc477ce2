"""The methods' registry: `@method` registers a plug-in, and the pipeline, the command line,
the config checks, the report and `--resume` read what each method declares from here
(`METHODS`): its teachers, its own options (the config section `distill.<method>`), its
checks and what it adds to the report."""

import dataclasses
import functools

from kerasbnn import config as run_config
from kerasbnn.registry import Registry
from kerasbnn.resume import TRAINING

__all__ = ["METHODS", "check_sections", "config_keys", "given_options", "method",
           "method_options", "needs_teachers", "option_keys", "options_class", "section",
           "student_epochs",
           "student_keys", "student_network"]

METHODS = Registry("distillation method")
"""Every distillation method by its key (`distill.method`, `--method`), registered by `method`."""


def method(key, *, teachers=(), options=None, depends_on=("student.",), zoo=True, check=None,
           builds_student=None, two_step=False, network=None, epochs=None, report=None):
    """Registers a method's training function under `key`.

    Args:
        key: the name in `distill.method`, `distill.compare` and `--method`.
        teachers: the bit widths of the pipeline's teachers it distils from: `()` none,
            `(32,)` the float teacher, None every `teachers.bits`, or a function of the
            `RunConfig` returning them.
        options: the dataclass of its own options, read from the config section
            `distill.<key>` (`method_options`) and checked as the config is (unknown keys,
            types, and each field's `metadata` bounds and choices: `kerasbnn.config.from_dict`),
            or a function returning that dataclass (built when first needed, e.g. from a
            distiller's signature), or None when it has no options of its own. Its student
            then depends on its section (and on `distill.options`, the older spelling).
        depends_on: config keys (besides seed, data, model and its own section) its student
            depends on, for `--resume`, and the only ones it reads: the pipeline rejects, by
            name, a changed key that none of the methods it trains reads. One ending in "."
            stands for a whole section.
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
        report: `report(config, run)` returns what it adds to the run's report when it is
            one of the run's arms: `(lines, plots)`, markdown lines placed after the
            methods' table and `[(alt text, plot name)]` of its plots (`run.plot(name)`), or
            None: nothing.
    """
    own = (f"distill.{key}", "distill.options") if options is not None else ()

    def register(function):
        function.teachers = teachers
        function.options = options
        function.config_keys = (*TRAINING, *depends_on, *own)
        function.zoo = zoo
        function.check = check
        function.builds_student = zoo if builds_student is None else builds_student
        function.two_step = two_step
        function.network = network
        function.epochs = epochs
        function.report = report
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


def options_class(name):
    """The dataclass of method `name`'s own options (`distill.<name>`), or None."""
    declared = METHODS.get(name).options
    if declared is None or dataclasses.is_dataclass(declared):
        return declared
    return _built(declared)


@functools.cache
def _built(declare):
    """The dataclass a method's `options` function declares, built once."""
    return declare()


def option_keys(name):
    """The keys of method `name`'s section `distill.<name>`, or None when it has none."""
    cls = options_class(name)
    return None if cls is None else {f.name for f in dataclasses.fields(cls)}


def config_keys(name):
    """The config keys `name`'s student depends on (`kerasbnn.resume`)."""
    return METHODS.get(name).config_keys


def student_keys():
    """`{method: the config keys its student depends on}` for every registered method, as
    `kerasbnn.resume.plan` and `orphans` take them."""
    return {name: config_keys(name) for name in METHODS.keys()}


def _legacy_owner(config):
    """The method that reads `distill.options` (the older spelling of a section): the one
    method of `distill.compare` (or `distill.method`) that declares options, or None."""
    d = config.distill
    readers = [n for n in (d.compare or [d.method])
               if n in METHODS and METHODS.get(n).options is not None]
    return readers[0] if len(readers) == 1 else None


def section(config, name):
    """`(values, key)`: the options of method `name` as the config gives them (unchecked),
    and their key: `distill.<name>`, or `distill.options` when the config gives them there."""
    d = config.distill
    if name not in d.sections and d.options and _legacy_owner(config) == name:
        return d.options, "distill.options"
    return d.sections.get(name, {}), f"distill.{name}"


def method_options(config, name):
    """Method `name`'s options: its `options_class` filled from its section `distill.<name>`
    (defaults for the keys it leaves out), checked.

    Raises:
        kerasbnn.config.ConfigError: an unknown key (naming the closest), a wrong type or a
            value out of a field's bounds or choices.
    """
    values, where = section(config, name)
    return run_config.from_dict(values, options_class(name), where)


def given_options(config, name):
    """`{key: value}` of the options the config gives method `name` (checked, converted to
    their fields' types), without the defaults of the keys it leaves out."""
    values, _ = section(config, name)
    typed = method_options(config, name)
    return {key: getattr(typed, key) for key in values}


def check_sections(config, names):
    """Every section `distill.<method>` names a method with options, `distill.options` has
    one method to go to, and the section of each method of `names` holds only its keys,
    of their types and within their bounds (`method_options`).

    Raises:
        kerasbnn.config.ConfigError: naming the key and the fix.
    """
    d = config.distill
    owned = [n for n in METHODS.keys() if METHODS.get(n).options is not None]
    for name in d.sections:
        if name not in owned:
            fields = [f.name for f in dataclasses.fields(d)
                      if not f.metadata.get(run_config.SECTIONS)]
            what = (f"{name} has no options of its own (its settings are distill's keys)"
                    if name in METHODS else "no method has that name")
            raise run_config.ConfigError(
                f"Unknown config key 'distill.{name}': {what}. A method's section is "
                f"distill.<method> for {', '.join(owned)}.{run_config._hint(name, fields + owned)}")
    owner, readers = _legacy_owner(config), [n for n in names if n in owned]
    if d.options and readers and (owner is None or owner in d.sections
                                  or set(readers) - {owner}):
        mine = readers[0]
        raise run_config.ConfigError(
            "distill.options is the older spelling of one method's section: it is read as the "
            "section of the one method of distill.compare (or distill.method) that has "
            f"options, {owner or 'but there is not exactly one'}, and this run trains "
            f"{', '.join(readers)}. Give each method its own section "
            f"instead, e.g. distill.{mine}: {d.options}.")
    for name in names:
        if name in owned:
            method_options(config, name)
