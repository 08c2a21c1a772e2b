"""Small file helpers."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from alignsam.errors import AlignSamError, CheckpointError, ConfigError, OutputError

T = TypeVar("T")


def read_json_object(path: str | os.PathLike[str], error: type[AlignSamError] = CheckpointError) -> dict[str, Any]:
    """A JSON file that must hold an object; `error` (a `CheckpointError` unless told) naming the file otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise error(f"'{path}' is not readable JSON: {err}") from err
    except RecursionError:  # nesting deeper than Python's stack (a hostile or broken file)
        raise error(f"'{path}' is not readable JSON: nested too deeply.") from None
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


def check_output_file(path: str | os.PathLike[str]) -> Path:
    """`path` as a Path if a file can be written there, its missing parent folders created; an
    `OutputError` naming it otherwise. For checking an output before long work rather than after."""
    out = Path(path)
    if out.is_dir():
        raise OutputError(f"The output '{out}' is a folder; name a file to write the result into.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"Cannot create the folder for the output '{out}': {err}") from err
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise OutputError(f"The output '{out}' is not writable.")
    return out


def ensure_output_folder(path: str | os.PathLike[str]) -> Path:
    """The folder `path`, created if missing; an `OutputError` naming it if it is a file or cannot be made."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputError(f"The output folder '{out}' exists and is a file; name a folder.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"Cannot create the output folder '{out}': {err}") from err
    return out


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """`write(temporary path)`, then rename the file to `path`: readers, and a run that fails or is killed
    midway, never see half a file, and any earlier file stays whole until the new one is complete. The
    temporary file sits beside `path` under a hidden, unique name (concurrent writers do not collide) and
    is removed on failure. An `OutputError` naming `path` if it cannot be written (OSError, ValueError)."""
    out = check_output_file(path)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    os.close(fd)
    partial = Path(name)
    try:
        write(partial)
        os.replace(partial, out)
    except (OSError, ValueError) as err:
        raise OutputError(f"Cannot write '{out}': {err}") from err
    finally:
        partial.unlink(missing_ok=True)
    return out


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `path` through `write_atomic`."""
    write_atomic(path, lambda partial: partial.write_text(text, encoding="utf-8"))


def write_settings(directory: str | os.PathLike[str], settings: Mapping[str, Mapping[str, Any]]) -> None:
    """Write each recommended-settings file (file name -> JSON object) into `directory`, as a model folder
    holds them beside its weights (`alignsam.io.resolve.ModelSource.recommended` reads them back)."""
    for name, values in settings.items():
        write_text_atomic(Path(directory) / name, json.dumps(dict(values), indent=2) + "\n")


def cache_dir() -> Path | None:
    """Where alignsam keeps what it can compute again (label embeddings, ONNX exports): `$ALIGNSAM_CACHE`,
    default `~/.cache/alignsam`; None when `ALIGNSAM_CACHE` is off, 0, false or none."""
    where = os.environ.get("ALIGNSAM_CACHE", "")
    if where.lower() in ("off", "0", "false", "none"):
        return None
    return Path(where).expanduser() if where else Path.home() / ".cache" / "alignsam"
