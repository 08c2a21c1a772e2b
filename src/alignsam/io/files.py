"""Small file helpers."""

from __future__ import annotations

import errno
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


def check_output_file(path: str | os.PathLike[str], *, create_parents: bool = True) -> Path:
    """`path` as a Path if a file can be written there; an `OutputError` naming it otherwise. For checking an
    output before long work rather than after. The library creates missing parent folders; the command line
    passes `create_parents=False`, so that a mistyped `-o` names the missing folder instead of creating a tree."""
    out = Path(path)
    if out.is_dir():
        raise OutputError(f"The output '{out}' is a folder; name a file to write the result into.")
    if not create_parents and not out.parent.is_dir():
        raise OutputError(f"The folder '{out.parent}' for the output '{out}' does not exist; create it first.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if disk_full(out, err):
            raise OutputError(write_failure(out, err)) from err
        raise OutputError(f"Cannot create the folder for the output '{out}': {err}") from err
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise OutputError(f"The output '{out}' is not writable.")
    return out


def ensure_output_folder(path: str | os.PathLike[str], *, create_parents: bool = True) -> Path:
    """The folder `path`, created if missing; an `OutputError` naming it if it is a file or cannot be made.
    With `create_parents=False` (the command line) only the folder itself is created: its parent must exist."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputError(f"The output folder '{out}' exists and is a file; name a folder.")
    if not create_parents and not out.parent.is_dir():
        raise OutputError(f"The folder '{out.parent}' for the output folder '{out}' does not exist; create it first.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if disk_full(out, err):
            raise OutputError(write_failure(out, err)) from err
        raise OutputError(f"Cannot create the output folder '{out}': {err}") from err
    return out


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file's or a folder's contents to the disk (a folder: the names renamed into it), so that what
    was written survives a power loss, not only a killed process."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def umask() -> int:
    """The process's file-mode creation mask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, hence the /proc route first)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """`write(temporary path)`, then rename the file to `path`: readers, and a run that fails or is killed
    midway, never see half a file, and any earlier file stays whole until the new one is complete. The
    temporary file sits beside `path` under a hidden, unique name (concurrent writers do not collide) and
    is removed on failure. The file ends with the mode a plain `open` would give it: an existing file's
    mode, else 0666 less the umask (the temporary file is created 0600). An `OutputError` naming `path` if
    it cannot be written (OSError, ValueError, and the RuntimeError torch.save raises when its writer fails),
    one line: a full disk reads "No space left on device writing 'PATH'." (`write_failure`)."""
    out = check_output_file(path)
    partial: Path | None = None
    try:
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=PARTIAL_SUFFIX)
        os.close(fd)
        partial = Path(name)
        write(partial)
        try:
            mode = out.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~umask()
        os.chmod(partial, mode)
        os.replace(partial, out)
    except (OSError, ValueError, RuntimeError) as err:
        raise OutputError(write_failure(out, err)) from err
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)
    return out


PARTIAL_SUFFIX = ".partial"
"""The suffix of `write_atomic`'s temporary files (`.NAME.XXXX.partial`): what a kill -9 can leave behind."""

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_LOW_SPACE = 1 << 20  # bytes: a writer that failed with less than this free on its disk ran out of space


def write_failure(path: str | os.PathLike[str], err: BaseException) -> str:
    """One line naming why `path` could not be written. A full disk (ENOSPC, a quota, or a writer such as
    torch.save that reports only "write failed" while its disk has under 1 MiB left) is said the same way
    everywhere: "No space left on device writing 'PATH'."."""
    if disk_full(path, err):
        return f"No space left on device writing '{path}'."
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return f"Cannot write '{path}': {reason}"


def disk_full(path: str | os.PathLike[str], err: BaseException) -> bool:
    """Whether `err`, raised writing `path`, means its disk is full (see `write_failure`)."""
    return (isinstance(err, OSError) and err.errno in _FULL) or _low_space(Path(path).parent)


def _low_space(folder: Path) -> bool:
    while not folder.exists() and folder != folder.parent:  # a folder the failed write did not get to make
        folder = folder.parent
    try:
        stat = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return False
    return stat.f_bavail * stat.f_frsize < _LOW_SPACE


def clean_partials(folder: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Remove the temporary files `write_atomic` left in `folder` (not below it) when a run was killed
    before it could rename or remove them, only those of the file `name` if given; returns those removed.
    Only files named as it names them (`.NAME.XXXX.partial`) are touched."""
    removed: list[Path] = []
    where = Path(folder)
    if not where.is_dir():
        return removed
    for leftover in where.glob(f".{name or ''}*{PARTIAL_SUFFIX}"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


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
