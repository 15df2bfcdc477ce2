"""Run configurations for the command line: typed sections, read from YAML or TOML.

A config file is data only (`kerasbnn.strict_yaml` / `tomllib`; a `!!python/...` tag is
refused, never executed, and so is a key given twice): every key is checked against the dataclasses below before anything trains,
so a typo, a wrong type or an out-of-range value (a field's `metadata` holds its bounds)
fails at once with a message that names the key and the fix (a field with `choices`, such as
`student.schedule`, names them and the closest). Numbers may be written as
YAML 1.1 leaves them, e.g. `learning_rate: 2e-3` (a string for PyYAML), in float fields.
Epochs are at least 1: a run of untrained models is never what a config means.
The checks of one value (type, bounds, choices) and `ConfigError` are in
`kerasbnn.config_values`.
"""

import copy
import dataclasses
import os
import tomllib
import typing

import yaml

from kerasbnn import presets, renames, strict_yaml
from kerasbnn.config_values import ConfigError, check_bounds, _coerce, _hint

#: The values of `distribute` (`kerasbnn.distribution`): kept here, where the command line
#: reads them without loading TensorFlow.
STRATEGIES = ("none", "mirrored", "multiworker")
#: The metadata of a `dict` field that holds the sections of a dataclass no field names:
#: `distill.<method>`, each method's own options (`kerasbnn.methods.method_options`).
SECTIONS = "sections"


@dataclasses.dataclass
class DataConfig:
    """Which dataset and how much of it.

    `train_limit` / `val_limit`: the first N images of the train / test split (None: all); the
    pipeline rejects a limit above the split's size before anything trains.
    `val_split`: a fraction in (0, 0.5] of the (limited) training images held out as a
    validation split, on which the pipeline chooses (e.g. the best single teacher) and
    reports; the test split then only gives the final accuracies. None: no validation split,
    training uses every training image and the test split is also the validation data.
    `split_seed`: the seed of that choice alone, not `seed`, so that runs with other seeds
    share the split (and the teachers trained on the rest).
    """

    name: str = "fashion_mnist"
    batch_size: int = dataclasses.field(default=128, metadata={"min": 1})
    train_limit: typing.Optional[int] = dataclasses.field(default=None, metadata={"min": 1})
    val_limit: typing.Optional[int] = dataclasses.field(default=None, metadata={"min": 1})
    augment: bool = True
    val_split: typing.Optional[float] = dataclasses.field(
        default=None, metadata={"above": 0.0, "max": 0.5})
    split_seed: int = dataclasses.field(default=0, metadata={"min": 0})


@dataclasses.dataclass
class ModelConfig:
    """The architecture shared by the teachers and the student; `width_multiplier` scales
    every channel count (> 0; 1 is the paper's width; builders that have no such option take
    only 1).

    `block`: the residual block of builders that have a `block` option (resnet20: `basic`,
    the thesis' variants, `bireal`, `reactnet`; see `kerasbnn.models.resnet20`), for the
    teachers and the student alike, so that the student starts from its float teacher's
    weights; null is the builder's default."""

    arch: str = "resnet20"
    bn_momentum: float = dataclasses.field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    width_multiplier: float = dataclasses.field(default=1.0, metadata={"above": 0.0})
    block: typing.Optional[str] = None


@dataclasses.dataclass
class TeachersConfig:
    """Teachers: one per bit width (32 is float), made by the papers' recipe (MAD section 3).

    The float teacher trains first, from random init, for `float_epochs` (None: `epochs`).
    Every k-bit teacher starts from it: the matching weights are copied, the BatchNorm
    statistics recomputed exactly over `bn_batches` training batches
    (`kerasbnn.transfer.from_float`), then it is fine-tuned for `epochs`. All train with
    cosine-decayed Adam from `learning_rate`.

    `quantizer`: a family of `kerasbnn.models.precision.QUANTIZERS`; every bit width is checked
    against it before anything trains. The default, `lsq`, is a measured deviation from MAD's
    DoReFa: an LSQ copy of the float network keeps its function (8-bit 86.4% against float's
    86.7% before any fine-tuning) where a DoReFa copy does not (42.4%; issue #17).
    `init`: where the k-bit teachers start. `float` (the default, MAD's recipe above): from
    the float teacher. `random`: every teacher is trained apart from its own random start,
    for `float_epochs` (None: `epochs`) like the float teacher, with the seed `seed` plus its
    bit width, so that no two teachers share a start: the separately trained teachers of
    CMT-KD's "average teacher" (§4.2, You et al. 2017) and the paper's version of `average`.
    Every method that reads the teachers gets them; the report says which ran.
    `seed`: the teachers' own seed (None: the run's `seed`); fix it to share teachers between
    runs of other seeds.
    `cache_dir`: a directory shared by runs: each teacher is stored there under a key made of
    everything that changes it (architecture, bits, quantizer, budget, data settings, seed,
    and for a k-bit teacher the float teacher's key); a run whose teacher has the same key
    loads it instead of training. None: only the run directory keeps the teachers.
    `patience`: stop a teacher's training once its validation accuracy has not improved for
    this many epochs, keeping its best epoch (`kerasbnn.plateau.StopOnPlateau`; needs
    `data.val_split`): train the float teacher to its plateau with a long `float_epochs`.
    None (the default): every epoch, the last one kept.
    """

    bits: typing.List[int] = dataclasses.field(default_factory=lambda: [32, 8, 4, 2])
    quantizer: str = "lsq"
    epochs: int = dataclasses.field(default=2, metadata={"min": 1})
    learning_rate: float = dataclasses.field(default=2e-3, metadata={"above": 0.0})
    float_epochs: typing.Optional[int] = dataclasses.field(default=None, metadata={"min": 1})
    bn_batches: int = dataclasses.field(default=20, metadata={"min": 1})
    init: str = dataclasses.field(default="float", metadata={"choices": ("float", "random")})
    seed: typing.Optional[int] = dataclasses.field(default=None, metadata={"min": 0})
    patience: typing.Optional[int] = dataclasses.field(default=None, metadata={"min": 1})
    cache_dir: typing.Optional[str] = None


@dataclasses.dataclass
class StudentConfig:
    """The binary student: `binary` is one of `kerasbnn.models.precision.BINARY_SCHEMES`;
    `epochs` >= 1, `learning_rate` > 0.

    `init`: what every arm's student (`none` included) starts from: `float` copies the float
    teacher's matching weights and recomputes the BatchNorm statistics (Bi-Real Net, ReActNet
    and the thesis start from the real-valued network; the float teacher is then trained
    even for `none`), `random` is Keras' initialization.

    `schedule`: how every arm that builds its student through `StudentJob.student()` (none,
    kd, at, mad, average) trains it. `one_step` trains the binary student for `epochs`; `two_step` is
    ReActNet's two-step training (Liu et al., ECCV 2020, arXiv:2003.03488, §4): step 1 trains
    a copy with binary activations and real-valued weights (the weight quantizers removed,
    `kerasbnn.distill.schedules.float_weight_copy`), started from `init`; step 2 copies its
    weights into the binary student and trains that. Each step trains `epochs` epochs
    (ReActNet trains each step fully, so an arm trains 2 x `epochs`) with a fresh optimizer
    and, when it distils, a fresh distiller. The methods that build their own student (cmtkd,
    progressive, pkkd) refuse `two_step`.

    `precise_bn`: after training, every arm's student (whatever method trained it) has its
    BatchNorm statistics recomputed over this many training images, without augmentation, in
    batches of 1,000 (`kerasbnn.utils.recalibrate_batch_norm`, "precise BN"), before it is
    evaluated and saved; 0 keeps the moving averages. Its results JSON gives both accuracies
    (`accuracy`, `accuracy_moving_stats`). Large batches matter: a binary student is sensitive
    to the statistics, and moments gathered in batches of 128 carry the upstream layers'
    batch noise (issue #17: one CMT-KD student scored 48.4% with its moving averages, 50.9%
    recomputed in batches of 128, 67.4% in batches of 1,000, and 66-67% in training mode).

    `patience`: stop every arm's student once its validation accuracy has not improved for
    this many epochs, keeping its best epoch (`kerasbnn.plateau.StopOnPlateau`; each step of
    `two_step` counts apart; needs `data.val_split`). The cosine schedule still spans
    `epochs`: set a long `epochs` and let `patience` end it. None (the default): every
    epoch, the last one kept.
    """

    binary: str = "bireal"
    init: str = dataclasses.field(default="float", metadata={"choices": ("float", "random")})
    schedule: str = dataclasses.field(default="one_step",
                                      metadata={"choices": ("one_step", "two_step")})
    epochs: int = dataclasses.field(default=2, metadata={"min": 1})
    learning_rate: float = dataclasses.field(default=2e-3, metadata={"above": 0.0})
    precise_bn: int = dataclasses.field(default=10000, metadata={"min": 0})
    patience: typing.Optional[int] = dataclasses.field(default=None, metadata={"min": 1})


@dataclasses.dataclass
class DeltaLRConfig:
    """How fast MAD's fusion weights delta learn under `distill.delta_optimizer: adam`:
    learning-rate multipliers (> 0) of their logits theta relative to the student's rate, for
    the fusion of the teachers' logits (`logits`, eq. 7) and of their features at the taps
    (`features`, eq. 8).

    MAD trains theta at the student's rate (1); under Adam theta then moves at most about
    rate x steps, and at a demo budget delta stays within a few hundredths of uniform
    (issue #17: 0.22-0.28 for 4 teachers), so "mad" is in effect "average". 20 lets delta
    move (issue #17's probe: delta_logits 0.05-0.38 after 4 epochs). CMT-KD's importance
    factors pi, which fuse features, learn at `features` too (whatever `delta_optimizer`).
    """

    logits: float = dataclasses.field(default=20.0, metadata={"above": 0.0})
    features: float = dataclasses.field(default=20.0, metadata={"above": 0.0})


@dataclasses.dataclass
class DistillConfig:
    """Distillation method and its loss weights (MAD defaults from the paper's CIFAR-10 setting).

    `method`: a key of `kerasbnn.methods.METHODS` (none, kd, at, mad, average, cmtkd, progressive,
    pkkd).
    `compare`: methods the pipeline trains side by side on the same teachers, data and seed
    and puts in one report; empty means `[none, method]`. Compared arms train the same student
    network from the same weights on as many images (`kerasbnn.comparison`): a comparison
    that cannot is refused, and an arm with fewer images trains more epochs.
    `distill.<method>`: a section of the method's own options, for each method that declares
    some (at, cmtkd, pkkd, progressive; each module of `kerasbnn.methods` lists its keys),
    e.g. `distill.pkkd: {sigma_student: 2.0}`. Each compared method reads its own section, so
    any set of methods can be compared in one run. A section is checked against what its
    method declares before anything is written (an unknown key is refused, with the closest
    valid one); a section of a method the run does not train is refused. In Python the
    sections are `sections` (`{method: {key: value}}`, as written).
    `options`: the older spelling of one method's section, kept for config files written
    before the sections: it is read as the section of the one method of the run that
    declares options (`distill.compare`, or `distill.method`), and refused, naming the
    sections to write instead, when the run trains several such methods or that method has
    a section too.
    `kd_teacher`: the bit width of the teacher `kd` distils from (32: the float teacher); it
    must be in `teachers.bits`.
    `delta_lr_scale`: how fast MAD's fusion weights learn under `delta_optimizer: adam`
    (`DeltaLRConfig`).
    `delta_optimizer`: what trains MAD's fusion logits theta: `sgd` (the default), plain SGD
    at `delta_learning_rate` (`kerasbnn.distill.with_delta_optimizer`), whose step is the
    rate times theta's gradient; or `adam`, the student's optimizer (MAD: one optimizer for
    everything), at `delta_lr_scale` times its rate, whose step is about that rate whatever
    the gradient (measured: at 20x, delta moved to 0.49/0.07/0.07/0.37 within one epoch).
    With `sgd`, `delta_lr_scale` does not apply to mad.
    `delta_learning_rate`: SGD's constant rate for theta (`delta_optimizer: sgd`). 0.01 was
    chosen on validation at a SHORT budget (one seed; ResNet-20 width 0.5, 5,000 Fashion-MNIST
    training images, 10% of them the validation split, teachers 1 epoch, MAD 2 epochs):
    validation accuracy SGD 1: 44.8%, 0.1: 52.8%, 0.01: 57.4%, 0.001: 51.2%, Adam at 20x:
    46.6%. At 0.01 delta stayed within 0.01 of uniform over those 70 steps, and the spread
    between 0.01 and 0.001 (deltas within 0.01 of each other) shows that one seed's ranking
    is mostly noise: re-choose it on your own validation split.
    `ce_weight`, `kl_weight`, `feature_weight`: the weights of the student's cross-entropy, of
    the KL to the (fused) teacher logits and of the feature (hint) loss, in kd and mad (MAD
    eq. 12: L = ce_weight L_CE + kl_weight L_KL + feature_weight L_Dis; ce_weight 0 is
    ReActNet's distributional loss alone); average reads all but feature_weight and
    feature_reduction (CMT-KD's baseline distils logits only).
    `temperature_squared`: multiply L_KL by T^2 (Hinton et al. 2015), so that its gradient
    keeps its size when `temperature` changes; MAD's eq. 6 has no T^2 (false). It governs the
    soft term of kd, mad, average and progressive's method II (and its `final_loss: kd`):
    false follows MAD's eq. 6 and the thesis' eq. 2.16, true Hinton et al. and LIT's code.
    `feature_reduction`: how L_Dis reduces one feature map (MAD eq. 9): `mean` over its
    elements (the default; feature_weight 0.2 was calibrated to it) or `sum`, the literal
    eq. 9, whose value is the mean times the elements of the map (1,568-6,272 for a ResNet-20
    at width 0.5 on 28x28 images): scale feature_weight down by that much.
    `delta_objective`: what trains MAD's learned fusion weights: `kl`, the paper's (eqs. 13-14:
    the gradient of the distillation terms, which moves delta towards the teachers closest to
    the student), or `teacher_ce`, the fused teacher's own cross-entropy with the labels (ours;
    every tap then uses the logits' delta; `MultiTeacherDistiller`).
    `teacher_logits`: how kd, mad and average get their teachers' logits: `computed` by the
    frozen teachers at every step, `cached` (computed once over the training images before the
    student trains, then read: `kerasbnn.distill.logits_cache`; it needs `data.augment: false`,
    `feature_weight: 0` (average: any), no `distribute`, and a table under 1 GiB), or `auto`
    (the default): cached when the run allows it, else computed. The cached logits are the
    computed ones (same teachers, inference mode), so the choice changes the speed, not the
    result.
    `delta_init`: where MAD's fusion weights start: `uniform` (the paper), or `accuracy`, the
    teachers' validation accuracies (delta_m proportional to exp((acc_m - best acc) / 0.01):
    each point below the best teacher divides a teacher's weight by e); it needs
    `data.val_split`.
    """

    method: str = "mad"
    compare: typing.List[str] = dataclasses.field(default_factory=list)
    ce_weight: float = dataclasses.field(default=1.0, metadata={"min": 0.0})
    kl_weight: float = dataclasses.field(default=1.0, metadata={"min": 0.0})
    feature_weight: float = dataclasses.field(default=0.2, metadata={"min": 0.0})
    temperature: float = dataclasses.field(default=1.0, metadata={"above": 0.0})
    temperature_squared: bool = False
    feature_reduction: str = "mean"
    fusion: str = "learned"
    options: dict = dataclasses.field(default_factory=dict)
    sections: dict = dataclasses.field(default_factory=dict, metadata={SECTIONS: True})
    kd_teacher: int = dataclasses.field(default=32, metadata={"min": 1, "max": 32})
    delta_lr_scale: DeltaLRConfig = dataclasses.field(default_factory=DeltaLRConfig)
    delta_optimizer: str = dataclasses.field(default="sgd",
                                             metadata={"choices": ("sgd", "adam")})
    delta_learning_rate: float = dataclasses.field(default=0.01, metadata={"above": 0.0})
    delta_init: str = dataclasses.field(default="uniform",
                                        metadata={"choices": ("uniform", "accuracy")})
    delta_objective: str = "kl"
    teacher_logits: str = dataclasses.field(
        default="auto", metadata={"choices": ("auto", "cached", "computed")})


@dataclasses.dataclass
class ConvertConfig:
    """LCE conversion."""

    verify: bool = True
    int8: bool = False


@dataclasses.dataclass
class BenchmarkConfig:
    """Local TFLite latency measurement."""

    runs: int = dataclasses.field(default=20, metadata={"min": 1})
    threads: int = dataclasses.field(default=1, metadata={"min": 1})


@dataclasses.dataclass
class RunConfig:
    """A whole run: `kerasbnn pipeline --config run.yaml`.

    `distribute`: "none"; "mirrored" to train under `tf.distribute.MirroredStrategy` on
    every device of this host; "multiworker" to train across the hosts in `TF_CONFIG`
    (see `kerasbnn.distribution`). data.batch_size is the global batch.
    `deterministic`: seeds Python, numpy and TensorFlow with `seed` and turns on TensorFlow's
    op determinism (`tf.config.experimental.enable_op_determinism`), so that a run repeats
    bit for bit on the same machine and software; measured: the plain arms repeat, the
    progressive method's arms only with `TF_NUM_INTEROP_THREADS=1` as well (docs:
    guide/pipeline.md, "Paired seeds and determinism"). Whether or not it is set, every arm of a comparison starts from the same
    seed and sees the same batches.
    `divergence_factor`: a training step (teacher or student) stops, like on a NaN, when its
    loss grows to more than this many times its first value (at least 1) for 10 consecutive
    batches or at an epoch's end (`kerasbnn.training.StopOnDivergence`); null turns the
    check off.
    `preset`: the name of a preset of `kerasbnn.presets` (e.g. `binary_recipe`, the measured
    binary-student recipe) whose values sit under this config's: the defaults < the preset <
    the file < `--set`. A saved config records the resolved values and the name.
    """

    preset: typing.Optional[str] = None
    run_dir: str = "runs/default"
    seed: int = dataclasses.field(default=0, metadata={"min": 0})
    deterministic: bool = False
    distribute: str = dataclasses.field(default="none", metadata={"choices": STRATEGIES})
    divergence_factor: typing.Optional[float] = dataclasses.field(
        default=1000.0, metadata={"above": 1.0})
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    teachers: TeachersConfig = dataclasses.field(default_factory=TeachersConfig)
    student: StudentConfig = dataclasses.field(default_factory=StudentConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    convert: ConvertConfig = dataclasses.field(default_factory=ConvertConfig)
    benchmark: BenchmarkConfig = dataclasses.field(default_factory=BenchmarkConfig)


def from_dict(values, cls=RunConfig, where=""):
    """Builds `cls` from a nested dict, rejecting unknown keys, wrong types and values out of
    the bounds in each field's `metadata`. A class with a `SECTIONS` field (`DistillConfig`)
    keeps there the mappings under keys it has no field for (its methods' sections, checked
    against the methods' registry by `kerasbnn.methods.check_sections`). A `RunConfig`'s
    `preset` puts its values under `values` (`kerasbnn.presets.resolve`)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'the config'} must be a mapping of keys to values, got {values!r}.")
    if cls is RunConfig:
        values = presets.resolve(values)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    sections = next((f.name for f in fields.values() if f.metadata.get(SECTIONS)), None)
    hints = typing.get_type_hints(cls)
    kwargs = {sections: {}} if sections else {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        if path in renames.CONFIG_KEYS:
            raise ConfigError(f"Config key {path!r} is now {renames.CONFIG_KEYS[path]!r}: "
                              "rename it (same meaning).")
        if sections and key not in fields and isinstance(value, dict):
            kwargs[sections][key] = dict(value)
            continue
        if key not in fields or key == sections:
            raise ConfigError(f"Unknown config key {path!r}."
                              f"{_hint(key, [k for k in fields if k != sections])}")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            kwargs[key] = from_dict(value, annotation, path)
        else:
            kwargs[key] = _coerce(value, annotation, path)
            check_bounds(kwargs[key], fields[key].metadata, path)
    return cls(**kwargs)


def choices(cls, name):
    """The values field `name` of config class `cls` takes (its `metadata`'s `choices`)."""
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata["choices"]


def to_dict(config):
    """The nested dict of `config`, as a file writes it (each `SECTIONS` field's sections
    under their own keys)."""
    values = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.metadata.get(SECTIONS):
            values.update({k: dict(v) for k, v in value.items()})
        elif dataclasses.is_dataclass(value):
            values[field.name] = to_dict(value)
        else:
            values[field.name] = copy.deepcopy(value)
    return values


def _parse_scalar(text, item):
    try:
        return strict_yaml.load(text)
    except yaml.YAMLError as error:
        raise ConfigError(
            f"Override {item!r}: the value is not valid YAML ({_yaml_problem(error)}); "
            "quote it, e.g. --set 'distill.at={p: 3}'."
        ) from None


def apply_overrides(values, overrides):
    """Applies `section.key=value` strings (values parsed as YAML scalars) to a nested dict."""
    values = dict(values)
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"Override {item!r} must look like section.key=value.")
        dotted, raw = item.split("=", 1)
        *parents, leaf = dotted.split(".")
        if not all([*parents, leaf]):
            raise ConfigError(f"Override {item!r} must look like section.key=value.")
        node = values
        for depth, parent in enumerate(parents):
            child = node.get(parent)
            if child is not None and not isinstance(child, dict):
                where = ".".join(parents[: depth + 1])
                raise ConfigError(
                    f"Override {item!r}: {where} is a value ({child!r}), not a section; "
                    f"write {where}=VALUE."
                )
            node[parent] = dict(child or {})
            node = node[parent]
        node[leaf] = _parse_scalar(raw, item)
    return values


def _yaml_problem(error):
    """One line from a PyYAML error: what and where (line/column are 1-based)."""
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(error, 'problem', None) or error}{where}"


def _read_file(path):
    """The nested dict in a YAML or TOML file; raises `ConfigError` for anything else."""
    if not os.path.exists(path):
        raise ConfigError(f"Config file {path!r} does not exist.")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".yaml", ".yml", ".toml"):
        raise ConfigError(f"Config file {path!r} must end in .yaml, .yml or .toml.")
    try:
        if ext == ".toml":
            with open(path, "rb") as f:
                values = tomllib.load(f)
        else:
            with open(path, encoding="utf-8") as f:
                values = strict_yaml.load(f)
    except strict_yaml.DuplicateKeyError as error:
        raise ConfigError(f"Config file {path!r}: {error.problem} (line "
                          f"{error.problem_mark.line + 1}).") from None
    except yaml.constructor.ConstructorError as error:
        raise ConfigError(
            f"Config file {path!r} uses a YAML tag that a config may not use "
            f"({_yaml_problem(error)}): a config holds plain data only; remove the tag."
        ) from None
    except yaml.YAMLError as error:
        problem = _yaml_problem(error)
        raise ConfigError(f"Config file {path!r} is not valid YAML: {problem}.") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"Config file {path!r} is not valid TOML: {error}.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"Config file {path!r} is not UTF-8 text.") from None
    except OSError as error:
        why = error.strerror or error
        raise ConfigError(f"Config file {path!r} cannot be read: {why}.") from None
    if values is None or values == {}:  # empty, or comments only: a mistake, not a wish
        raise ConfigError(
            f"Config file {path!r} is empty: it would start a full run with every default "
            "value. Write the settings in it (see examples/configs/), or pass --defaults "
            "instead of --config to run with every default on purpose.")
    if not isinstance(values, dict):
        raise ConfigError(
            f"Config file {path!r} must hold a mapping of sections (run_dir: ..., data: {{...}}, "
            f"...), but it holds {values!r:.80} (a {type(values).__name__})."
        )
    return values


def load(path=None, overrides=()):
    """Reads a YAML (.yaml/.yml) or TOML (.toml) file, applies overrides, validates.

    `path=None` is the all-default config (the command line's `--defaults`); a file that
    sets nothing is refused, as is a YAML mapping that names a key twice.

    Raises:
        ConfigError: missing, unreadable, empty or malformed file, a YAML tag, a repeated
            key, a file that is not a mapping, unknown extension, unknown key or preset, wrong type,
            empty string or value out of bounds.
    """
    values = {} if path is None else _read_file(path)
    return from_dict(apply_overrides(values, overrides))


def dump(config, path):
    """Writes the config as YAML (atomically)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(to_dict(config), f, sort_keys=False)
    os.replace(tmp, path)
