"""Checks shared by the configuration dataclasses: each failure is a `ConfigError` naming the class and field.

    check_numbers(self, "steps", "batch_size", low=1)              # numbers >= 1
    check_numbers(self, "dropout", low=0, high=1, below=True)      # in [0, 1)
    check_choice(self, "precision", Precision)                     # one of a Literal's values
    require(self.width % self.heads == 0, "Config.width ...")      # anything else, with its own message

A bool is not a number here, and a string from a hand-edited JSON file fails with the field's name instead of
a `TypeError` from a comparison.
"""

from __future__ import annotations

from typing import Any, get_args

from alignsam.errors import ConfigError


def require(ok: bool, message: str) -> None:
    """`ConfigError(message)` unless `ok`."""
    if not ok:
        raise ConfigError(message)


def check_numbers(
    obj: object,
    *names: str,
    low: float,
    high: float | None = None,
    above: bool = False,
    below: bool = False,
    integer: bool = False,
    optional: bool = False,
) -> None:
    """Fields `names` of `obj` are numbers >= `low` (> with `above`) and <= `high` (< with `below`) where given.

    `integer`: whole numbers only (an int); `optional`: None passes."""
    for name in names:
        value = getattr(obj, name)
        if value is None and optional:
            continue
        kinds = int if integer else (int, float)
        ok = isinstance(value, kinds) and not isinstance(value, bool) and (value > low if above else value >= low)
        if ok and high is not None:
            ok = value < high if below else value <= high
        if not ok:
            what = "an integer" if integer else "a number"
            if high is None:
                bounds = f"> {low}" if above else f">= {low}"
            else:
                bounds = f"in {'(' if above else '['}{low}, {high}{')' if below else ']'}"
            raise ConfigError(f"{type(obj).__name__}.{name} must be {what} {bounds}, got {value!r}.")


def check_choice(obj: object, name: str, kind: Any) -> None:
    """Field `name` of `obj` is one of the values of the `Literal` type `kind`."""
    value, allowed = getattr(obj, name), get_args(kind)
    if value not in allowed:
        raise ConfigError(f"{type(obj).__name__}.{name} must be one of {allowed}, got {value!r}.")
