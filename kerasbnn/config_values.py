"""How one value of a run config is checked: `ConfigError`, which every check of a config
raises (`kerasbnn.config` exports it), the conversion of a value to its field's type, and the
bounds and choices in a field's `metadata`.

Numbers may be written as YAML 1.1 leaves them, e.g. `learning_rate: 2e-3` (a string for
PyYAML), in float fields; an integer field refuses `2.0` and says to write `2`.
"""

import difflib
import math
import re
import typing


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type or a value out of bounds, or the file cannot
    be read; the message names the key (or the file) and the fix."""


def _hint(key, valid):
    close = difflib.get_close_matches(key, valid, n=1)
    did_you_mean = f" Did you mean {close[0]!r}?" if close else ""
    return f"{did_you_mean} Valid keys: {', '.join(sorted(valid))}."


# A decimal number as YAML 1.2 reads it: PyYAML (YAML 1.1) leaves `2e-3` or `1e8` a string.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _number(value, where):
    """`value` as a finite float: a number, or a string that is exactly a decimal number."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number, got {value!r}.")
    if not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}.")
    return float(value)


def _integer(value, where):
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    hint = ""
    if isinstance(value, (str, float)) and not isinstance(value, bool):
        try:
            number = _number(value, where)
        except ConfigError:
            number = None
        if number is not None and number.is_integer():
            hint = f" Write it as {int(number)}."
    raise ConfigError(f"{where} must be an integer, got {value!r}.{hint}")


def _coerce(value, annotation, where):
    """`value` checked (and where unambiguous converted) to the field type `annotation`
    (`typing.Any`: any value, for an option a method's own code checks)."""
    if annotation is typing.Any:
        return value
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
        return _integer(value, where)
    if annotation is float:
        return _number(value, where)
    if annotation is str:
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, str):  # e.g. `run_dir: ''`: no field of a config means nothing
            raise ConfigError(f"{where} is an empty string: give a value, or leave the key out "
                              "for its default.")
        raise ConfigError(f"{where} must be a string, got {value!r}.")
    raise ConfigError(f"{where}: unsupported type {annotation!r}.")


def check_bounds(value, bounds, where):
    """Raises `ConfigError` if `value` (not None) is outside a field's `metadata` bounds, or
    not one of its `choices` (naming them and the closest)."""
    if value is None:
        return
    if "choices" in bounds and value not in bounds["choices"]:
        close = difflib.get_close_matches(str(value), bounds["choices"], n=1)
        raise ConfigError(f"{where}={value!r} is unknown; valid: {', '.join(bounds['choices'])}."
                          + (f" Did you mean {close[0]!r}?" if close else ""))
    if "min" in bounds and value < bounds["min"]:
        raise ConfigError(f"{where} must be at least {bounds['min']}, got {value!r}.")
    if "max" in bounds and value > bounds["max"]:
        raise ConfigError(f"{where} must be at most {bounds['max']}, got {value!r}.")
    if "above" in bounds and value <= bounds["above"]:
        raise ConfigError(f"{where} must be greater than {bounds['above']}, got {value!r}.")
