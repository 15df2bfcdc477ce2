"""Run configurations for the command line: typed sections, read from YAML or TOML.

A config file is data only (`yaml.safe_load` / `tomllib`): every key is checked against the
dataclasses below before anything trains, so a typo or a wrong type fails at once with a
message that names the key and the fix.
"""

import dataclasses
import difflib
import os
import tomllib
import typing

import yaml


@dataclasses.dataclass
class DataConfig:
    """Which dataset and how much of it."""

    name: str = "fashion_mnist"
    batch_size: int = 128
    train_limit: typing.Optional[int] = None
    val_limit: typing.Optional[int] = None
    augment: bool = True


@dataclasses.dataclass
class ModelConfig:
    """The architecture shared by the teachers and the student."""

    arch: str = "resnet20"
    bn_momentum: float = 0.9


@dataclasses.dataclass
class TeachersConfig:
    """Teachers: one per bit width (32 is float), trained first and cached in the run directory."""

    bits: typing.List[int] = dataclasses.field(default_factory=lambda: [32, 8, 4, 2])
    quantizer: str = "dorefa"
    epochs: int = 2
    learning_rate: float = 2e-3


@dataclasses.dataclass
class StudentConfig:
    """The binary student."""

    binary: str = "bireal"
    epochs: int = 2
    learning_rate: float = 2e-3


@dataclasses.dataclass
class DistillConfig:
    """Distillation method and its loss weights (MAD defaults from the paper's CIFAR-10 setting).

    `method`: mad | kd (the pipeline's), cmtkd, progressive or pkkd (`kerasbnn distill`).
    `options`: settings of cmtkd (`CollaborativeDistiller.from_zoo` arguments), progressive
    (`kerasbnn.distill.run_progressive` keys) or pkkd (`kerasbnn.distill.run_pkkd` keys);
    those functions reject unknown keys before training.
    """

    method: str = "mad"
    alpha: float = 1.0
    beta: float = 0.2
    temperature: float = 1.0
    fusion: str = "learned"
    options: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ConvertConfig:
    """LCE conversion."""

    verify: bool = True
    int8: bool = False


@dataclasses.dataclass
class BenchmarkConfig:
    """Local TFLite latency measurement."""

    runs: int = 20
    threads: int = 1


@dataclasses.dataclass
class RunConfig:
    """A whole run: `kerasbnn pipeline --config run.yaml`.

    `distribute`: "none"; "mirrored" to train under `tf.distribute.MirroredStrategy` on
    every device of this host; "multiworker" to train across the hosts in `TF_CONFIG`
    (see `kerasbnn.distribution`). data.batch_size is the global batch.
    """

    run_dir: str = "runs/default"
    seed: int = 0
    distribute: str = "none"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    teachers: TeachersConfig = dataclasses.field(default_factory=TeachersConfig)
    student: StudentConfig = dataclasses.field(default_factory=StudentConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    convert: ConvertConfig = dataclasses.field(default_factory=ConvertConfig)
    benchmark: BenchmarkConfig = dataclasses.field(default_factory=BenchmarkConfig)


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type, or the file cannot be read."""


def _hint(key, valid):
    close = difflib.get_close_matches(key, valid, n=1)
    did_you_mean = f" Did you mean {close[0]!r}?" if close else ""
    return f"{did_you_mean} Valid keys: {', '.join(sorted(valid))}."


def _coerce(value, annotation, where):
    origin = typing.get_origin(annotation)
    if origin is typing.Union:  # Optional[X]
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return None if value is None else _coerce(value, inner, where)
    if origin in (list, typing.List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}: write it as [a, b, ...].")
        (inner,) = typing.get_args(annotation)
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if annotation is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{where} must be a mapping {{key: value}}, got {value!r}.")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}.")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, got {value!r}.")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}.")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}.")
    raise ConfigError(f"{where}: unsupported type {annotation!r}.")


def from_dict(values, cls=RunConfig, where=""):
    """Builds `cls` from a nested dict, rejecting unknown keys and wrong types."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'the config'} must be a mapping of keys to values, got {values!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            raise ConfigError(f"Unknown config key {path!r}.{_hint(key, fields)}")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            kwargs[key] = from_dict(value, annotation, path)
        else:
            kwargs[key] = _coerce(value, annotation, path)
    return cls(**kwargs)


def to_dict(config):
    return dataclasses.asdict(config)


def _parse_scalar(text):
    return yaml.safe_load(text)


def apply_overrides(values, overrides):
    """Applies `section.key=value` strings (values parsed as YAML scalars) to a nested dict."""
    values = dict(values)
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"Override {item!r} must look like section.key=value.")
        dotted, raw = item.split("=", 1)
        node = values
        *parents, leaf = dotted.split(".")
        for parent in parents:
            node[parent] = dict(node.get(parent) or {})
            node = node[parent]
        node[leaf] = _parse_scalar(raw)
    return values


def load(path=None, overrides=()):
    """Reads a YAML (.yaml/.yml) or TOML (.toml) file, applies overrides, validates.

    Raises:
        ConfigError: missing file, unknown extension, unknown key or wrong type.
    """
    values = {}
    if path is not None:
        if not os.path.exists(path):
            raise ConfigError(f"Config file {path!r} does not exist.")
        ext = os.path.splitext(path)[1].lower()
        if ext in (".yaml", ".yml"):
            with open(path) as f:
                values = yaml.safe_load(f) or {}
        elif ext == ".toml":
            with open(path, "rb") as f:
                values = tomllib.load(f)
        else:
            raise ConfigError(f"Config file {path!r} must end in .yaml, .yml or .toml.")
    return from_dict(apply_overrides(values, overrides))


def dump(config, path):
    """Writes the config as YAML (atomically)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(to_dict(config), f, sort_keys=False)
    os.replace(tmp, path)
