"""Small file helpers."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from alignsam.errors import AlignSamError, CheckpointError, ConfigError

T = TypeVar("T")


def read_json_object(path: str | os.PathLike[str], error: type[AlignSamError] = CheckpointError) -> dict[str, Any]:
    """A JSON file that must hold an object; `error` (a `CheckpointError` unless told) naming the file otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise error(f"'{path}' is not readable JSON: {err}") from err
    if not isinstance(data, dict):
        raise error(f"'{path}' does not hold a JSON object.")
    return data


def named_or_json(name: str, named: Mapping[str, Callable[[], T]], parse: Callable[[dict[str, Any]], T]) -> T:
    """An architecture by name (`named[name]()`) or `parse` of a `config.json` (the file, or in the folder).

    Every failure is a `ConfigError` naming the file: not a known name nor a file, unreadable JSON, or a
    mapping `parse` rejects."""
    if name in named:
        return named[name]()
    path = Path(name)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ConfigError(f"Unknown architecture {name!r}: use one of {sorted(named)} or a config.json.")
    data = read_json_object(path, ConfigError)
    try:
        return parse(data)
    except (ValueError, TypeError, KeyError) as err:  # ConfigError is a ValueError
        raise ConfigError(f"'{path}' is not a usable configuration: {err}") from err
