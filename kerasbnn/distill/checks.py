"""Argument checks the distillers and their losses share: a ValueError that names the
argument as the user wrote it and what it must be."""

import math

__all__ = ["check_choice", "check_number"]


def check_number(name, value, minimum=0.0, strict=False):
    """`float(value)` if it is a finite number >= `minimum` (> with `strict`), else ValueError.

    Args:
        name: the argument's name as the user wrote it (`"kl_weight"`, `"distill.feature_weight"`).
        value: what was received.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, received {value!r}.")
    if value < minimum or (strict and value == minimum):
        relation = "greater than" if strict else "at least"
        raise ValueError(f"{name} must be {relation} {minimum}, received {value!r}.")
    return float(value)


def check_choice(name, value, valid):
    """`value` if it is one of `valid`, else a ValueError listing them."""
    if value not in valid:
        raise ValueError(
            f"Unknown {name} {value!r}; valid values: {', '.join(repr(v) for v in valid)}.")
    return value
