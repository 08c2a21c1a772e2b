"""Checks shared by the configuration dataclasses (each failure a `ConfigError` naming the class and field),
and by functions taking counts.

    check_numbers(self, "steps", "batch_size", low=1)              # numbers >= 1
    check_numbers(self, "dropout", low=0, high=1, below=True)      # in [0, 1)
    check_choice(self, "precision", Precision)                     # one of a Literal's values
    require(self.width % self.heads == 0, "Config.width ...")      # anything else, with its own message
    check_count(top_k, "top_k")                                    # a function's count argument (InputError)

A bool is not a number here, and a string from a hand-edited JSON file fails with the field's name instead of
a `TypeError` from a comparison.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, get_args

from alignsam.errors import ConfigError, InputError


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


def int_tuple(obj: object, name: str, value: object) -> tuple[int, ...]:
    """`value` (a list from JSON) as a tuple of ints; a `ConfigError` naming `obj`'s field otherwise."""
    if isinstance(value, list | tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(int(v) for v in value)
    raise ConfigError(f"{type(obj).__name__}.{name} must be a list of integers, got {value!r:.100}.")


def float_tuple(obj: object, name: str, value: object) -> tuple[float, ...]:
    """`value` as a tuple of finite floats; a `ConfigError` naming `obj`'s field otherwise."""
    ok = isinstance(value, list | tuple) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value
    )
    if not ok:
        raise ConfigError(f"{type(obj).__name__}.{name} must be a list of finite numbers, got {value!r:.100}.")
    return tuple(float(v) for v in value)  # type: ignore[attr-defined]


MAX_PARAMETERS = 4_000_000_000
"""The largest model a configuration may describe (16 GB in float32): over 4x the largest published preset of
each family (SAM vit_h 0.64 B, align-base 0.17 B, InternImage-XL 0.34 B; InternImage-G has 3 B)."""


def check_parameters(obj: object, count: int, limit: int = MAX_PARAMETERS) -> None:
    """Refuse a configuration by the memory it implies, before anything is built.

    Why: a `config.json` declaring 10^7 layers grew past 5.8 GB while its modules were being made."""
    if count > limit:
        raise ConfigError(
            f"{type(obj).__name__} describes {count / 1e9:.1f} B parameters, over the limit of {limit / 1e9:.0f} B; "
            "is it the intended configuration?"
        )


def check_choice(obj: object, name: str, kind: Any) -> None:
    """Field `name` of `obj` is one of the values of the `Literal` type `kind`."""
    value, allowed = getattr(obj, name), get_args(kind)
    if value not in allowed:
        raise ConfigError(f"{type(obj).__name__}.{name} must be one of {allowed}, got {value!r}.")


def check_count(value: object, name: str, low: int = 1, high: int | None = None) -> int:
    """`value` as an int if it is a whole number in [`low`, `high`] (a function argument such as `top_k`;
    numpy integers count); an `InputError` naming `name` otherwise."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
        raise InputError(f"{name} must be a whole number of at least {low}, got {value!r}.")
    if high is not None and int(value) > high:
        raise InputError(f"{name} must be a whole number of at most {high}, got {value!r}.")
    return int(value)


def check_number(value: object, name: str, low: float | None = None, high: float | None = None) -> float:
    """`value` as a float if it is a finite real number in [`low`, `high`] (either bound optional); an
    `InputError` naming `name` otherwise."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number) and (low is None or number >= low) and (high is None or number <= high):
            return number
    if low is not None and high is not None:
        bounds = f" in [{low}, {high}]"
    else:
        bounds = f" >= {low}" if low is not None else f" <= {high}" if high is not None else ""
    raise InputError(f"{name} must be a finite number{bounds}, got {value!r}.")
