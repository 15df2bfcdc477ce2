"""Everything a run checks before anything is written: `check_config` reads every value of
the config against kerasbnn's registries (dataset and limits, architecture, teachers,
student, methods and their options) and raises a `kerasbnn.config.ConfigError` that names
the key and the fix.

Where a check lives: a value's type, bounds and choices are declared on its config field
(`metadata`) and checked when the config is read (`kerasbnn.config.from_dict`); a value
that must be one of a registry's names that loads TensorFlow (`REGISTRY_CHOICES`) is checked
here by the same function; a method's own options by the dataclass it declares
(`kerasbnn.methods.check_sections`), and what a method alone cannot honour by its `check`.
The pipeline calls `check_config` once, before the run directory is opened."""

import inspect

from kerasbnn import config as run_config
from kerasbnn import data as datasets
from kerasbnn import comparison, methods, models
from kerasbnn import resume as resume_plan
from kerasbnn.binarization.builder import builder as arch_builder
from kerasbnn.binarization.builder import is_model_file
from kerasbnn.config_values import check_bounds
from kerasbnn.methods.multi_teacher_student import why_not_cached
from kerasbnn.models.precision import BINARY_SCHEMES, QUANTIZERS, resolve_precision
from kerasbnn.run.arms import arms

#: Config keys whose values are the names of a registry the config cannot import without
#: TensorFlow: checked here, as a field's `choices` are (`kerasbnn.config_values`).
REGISTRY_CHOICES = {("teachers", "quantizer"): QUANTIZERS, ("student", "binary"): BINARY_SCHEMES}


#: Config keys every run reads (or that are no step's input), whatever its methods.
#: `distill.teacher_logits` changes the speed of kd and mad, not their result; `preset` is
#: read into the other keys when the config is.
ALWAYS_READ = ("preset", "run_dir", "seed", "deterministic", "distribute", "divergence_factor",
               "data.", "model.", "distill.method",
               "distill.compare", "distill.teacher_logits", "convert.", "benchmark.")


def check_value(key, check, *args, **kwargs):
    """Runs `check`; a `ValueError` becomes a `ConfigError` that starts with `key`."""
    try:
        return check(*args, **kwargs)
    except run_config.ConfigError:
        raise
    except ValueError as error:
        message = str(error)
        if not message.startswith(key):
            message = f"{key}: {message}"
        raise run_config.ConfigError(message) from None


def _check_data(config):
    """The dataset exists and holds what `data.*` asks for."""
    d = config.data
    info = check_value("data.name", datasets.info, d.name)
    train, test = list(info.splits)[0], list(info.splits)[-1]
    limits = (("train_limit", d.train_limit, train), ("val_limit", d.val_limit, test))
    for key, limit, split in limits:
        if limit is not None and limit > info.splits[split]:
            raise run_config.ConfigError(
                f"data.{key}={limit} is more than the {info.splits[split]} images of {d.name}'s "
                f"{split} split; set at most {info.splits[split]}, or null for the whole split.")
    images = d.train_limit or info.splits[train]
    if d.val_split is not None:
        images -= int(datasets.validation_mask(images, d.val_split, d.split_seed).sum())
    if images < d.batch_size:
        raise run_config.ConfigError(
            f"data.batch_size={d.batch_size} is more than the {images} training images "
            f"(data.train_limit, less data.val_split): an epoch would have no full batch; "
            "lower data.batch_size.")
    return info


#: What `student.init` may be: the float teacher's weights, or Keras' initialization.
STUDENT_INITS = run_config.choices(run_config.StudentConfig, "init")
#: Where MAD's fusion weights may start (`distill.delta_init`).
DELTA_INITS = run_config.choices(run_config.DistillConfig, "delta_init")


def _check_builder(config, info):
    """`model.arch` takes the options the pipeline builds teachers and students with, and
    builds a network for the dataset (a model file: its input and classes; `model.block`)."""
    needed = ("bits", "quantizer", "binary", "bn_momentum")
    needed += ("width_multiplier",) * (config.model.width_multiplier != 1.0)
    needed += ("block",) * (config.model.block is not None)

    def accepts(name):
        parameters = inspect.signature(arch_builder(name)).parameters
        return all(p in parameters for p in needed)

    if not accepts(config.model.arch):
        able = [name for name in models.names() if accepts(name)]
        raise run_config.ConfigError(
            f"model.arch={config.model.arch!r} has no {'/'.join(needed[1:3] + needed[4:])} "
            f"options, which teachers and students are built with; use one of "
            f"{', '.join(able)} (adder networks train with `kerasbnn distill --method pkkd`).")
    if config.model.block is None and not is_model_file(config.model.arch):
        return
    block = {} if config.model.block is None else {"block": config.model.block}
    try:
        built = arch_builder(config.model.arch)(info.input_shape, info.num_classes, **block)
    except ValueError as error:
        key = "model.arch" if not block else f"model.block={config.model.block!r}"
        raise run_config.ConfigError(f"{key}: {error}" if block else str(error)) from None
    if is_model_file(config.model.arch) and config.distill.feature_weight > 0:
        _check_file_taps(config, built)


def _check_file_taps(config, model):
    """A model file distils features only at layers named `stage<i>_out`."""
    try:
        models.taps(model)
    except ValueError:
        raise run_config.ConfigError(
            f"model.arch={config.model.arch!r} has no layers named stage1_out, stage2_out, ... "
            f"where distill.feature_weight={config.distill.feature_weight} would distil "
            "features: set distill.feature_weight=0 (logits only), or name the ends of its "
            "stages with keras.layers.Identity(name='stage1_out') and save it again.") from None


def _check_names(config):
    """`distill.method` and `distill.compare` name registered methods, each once."""
    d = config.distill
    given = [("distill.method", d.method)]
    given += [(f"distill.compare[{i}]", name) for i, name in enumerate(d.compare)]
    for key, name in given:
        check_bounds(name, {"choices": methods.METHODS.keys()}, key)
    if len(set(d.compare)) != len(d.compare):
        raise run_config.ConfigError(f"distill.compare={d.compare} lists a method twice.")


def _reads(name, key, config):
    """Whether method `name` (with the teachers it trains on or, with `student.init: float`,
    starts from) reads config key `key`."""
    uses_teachers = methods.needs_teachers(name, config) != () or (
        config.student.init == "float" and methods.METHODS.get(name).builds_student)
    keys = methods.config_keys(name) + ("teachers.",) * uses_teachers
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in keys)


def _check_fields(config, names):
    """A key changed from its default that none of the methods `names` reads is refused, by
    name: the run would silently ignore it. Under a preset, its values count as defaults too
    (a preset sets keys for the methods that read them), and so do the library's defaults
    (a config may undo a preset's key, e.g. the demo's `teachers.patience: null`)."""
    library = resume_plan.flatten(run_config.RunConfig())
    defaults = resume_plan.flatten(run_config.from_dict({"preset": config.preset}))
    for key, value in resume_plan.flatten(config).items():
        always = any(key == k or (k.endswith(".") and key.startswith(k)) for k in ALWAYS_READ)
        if always or value in (defaults.get(key), library.get(key)) \
                or any(_reads(n, key, config) for n in names):
            continue
        readers = [n for n in methods.METHODS.keys() if _reads(n, key, config)]
        under = f" under preset {config.preset}" if config.preset else ""
        default = (f"its default{under} is {defaults[key]!r}" if key in defaults else
                   f"or add {readers[0]} to distill.compare" if readers else "it has no default")
        raise run_config.ConfigError(
            f"{key}={value!r} does not apply to {', '.join(names)}: "
            f"{'only ' + ', '.join(readers) if readers else 'no method'} "
            f"read{'s' if len(readers) < 2 else ''} it. "
            f"Remove it from the config ({default}).")


def _check_schedule(config, names):
    """`student.schedule: two_step` only for methods that train `StudentJob.student()` through
    `StudentJob.train_student` (the others build their own student)."""
    if config.student.schedule == "one_step":
        return
    unable = [n for n in names if not methods.METHODS.get(n).two_step]
    if unable:
        able = [n for n in methods.METHODS.keys() if methods.METHODS.get(n).two_step]
        raise run_config.ConfigError(
            f"student.schedule={config.student.schedule} trains the student that "
            f"StudentJob.student() builds, but {unable[0]} builds its own student: set "
            f"student.schedule=one_step, or train only methods that take it "
            f"({', '.join(able)}), e.g. in distill.compare.")


def _check_methods(config, names=None):
    """The methods `names` (default `arms(config)`) are registered, each one's section
    `distill.<method>` holds its own options (`kerasbnn.methods.check_sections`), each can
    honour every config value it is given (its `check`) and `student.schedule`, and every
    changed key is read by one of them."""
    _check_names(config)
    names = arms(config) if names is None else names
    _check_schedule(config, names)
    for name in names:
        if methods.METHODS.get(name).check is not None:
            methods.METHODS.get(name).check(config)
    methods.check_sections(config, names)
    _check_fields(config, names)
    for name in names:
        missing = [b for b in methods.needs_teachers(name, config) or ()
                   if b not in config.teachers.bits]
        if missing:
            raise run_config.ConfigError(
                f"{name} distils from the {missing[0]}-bit teacher"
                f"{' (distill.kd_teacher)' * (name == 'kd')}: add {missing[0]} to "
                "teachers.bits, e.g. --set 'teachers.bits=[32, 8, 4, 2]'.")
    if config.distill.delta_init == "accuracy" and config.data.val_split is None:
        raise run_config.ConfigError(
            "distill.delta_init=accuracy starts delta from the teachers' validation accuracies: "
            "set data.val_split (e.g. 0.1), or distill.delta_init=uniform.")
    comparison.check_comparison(config, names)


def _check_teacher_logits(config, info, names):
    """`distill.teacher_logits: cached` only where the run allows it
    (`kerasbnn.methods.multi_teacher_student.why_not_cached`; `distill.feature_weight` stands
    in the way only when one of the methods `names` reads it: average taps no features)."""
    value = config.distill.teacher_logits
    features = any(_reads(name, "distill.feature_weight", config) for name in names)
    reason = why_not_cached(config, info, features) if value == "cached" else None
    if reason:
        raise run_config.ConfigError(
            f"distill.teacher_logits=cached cannot hold in this run: {reason}; or set "
            "distill.teacher_logits: auto (cached where possible).")


def _check_patience(config):
    """Early stopping reads the validation split, never the test split."""
    for key in ("teachers.patience", "student.patience"):
        section, field = key.split(".")
        if getattr(getattr(config, section), field) is not None and config.data.val_split is None:
            raise run_config.ConfigError(
                f"{key} stops training on validation accuracy, but data.val_split is not set "
                "(the test split would choose the epoch); set data.val_split, e.g. 0.1, or "
                f"{key}=null.")


def check_config(config, *, builds=True, names=None):
    """Checks every value of `config` against kerasbnn's registries, before anything is
    written or trained: dataset and limits, architecture, teachers' quantizer and bit
    widths, the student's binary scheme, the method and its distillation options.

    Args:
        builds: the command builds zoo teachers and students (train, pipeline, distill
            mad/kd), so `model.arch` must take their precision options.
        names: the methods the command trains (default `arms(config)`): every changed key
            must be one of theirs.

    Returns:
        The dataset's `DatasetInfo`.

    Raises:
        kerasbnn.config.ConfigError: naming the key and the fix.
    """
    info = _check_data(config)
    check_value("model.arch", arch_builder, config.model.arch)
    if builds:
        _check_builder(config, info)
    for (section, key), valid in REGISTRY_CHOICES.items():
        check_bounds(getattr(getattr(config, section), key), {"choices": valid},
                      f"{section}.{key}")
    t = config.teachers
    if not t.bits or len(set(t.bits)) != len(t.bits):
        raise run_config.ConfigError(
            f"teachers.bits={t.bits} must list distinct bit widths, e.g. [32, 8, 4, 2].")
    for bits in t.bits:
        check_value("teachers.bits", resolve_precision, bits, t.quantizer)
    _check_patience(config)
    _check_methods(config, names)
    _check_teacher_logits(config, info, arms(config) if names is None else names)
    return info
