"""The tag vocabulary that ships with alignsam (`tags.txt`), and a reader for your own tag files.

The packaged file is UTF-8 text with one tag per line. A line `# <group>` starts a group (`# animals`,
`# food`, ...) and lines starting with `##` are comments. `load_tags()` gives every tag in file order,
`load_tags(["animals", "food"])` only those of some groups, and `tag_groups()` the whole file by group.

A user's file (`read_tag_file`) has the same shape but needs no groups: every line starting with `#` is a
comment, blank lines are skipped, surrounding whitespace is stripped and repeated tags are kept once.

Importing this module reads nothing; the packaged file is read once, on first use.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from importlib import resources

from alignsam.errors import InputError

__all__ = ["TAG_FILE", "load_tags", "model_tags", "read_tag_file", "tag_groups"]

TAG_FILE = "tags.txt"
"""Name of the packaged vocabulary inside `alignsam.tools.vocabulary`."""


def _clean(line: str) -> str:
    """Strip a line and collapse runs of inner whitespace to one space."""
    return " ".join(line.split())


def _parse_grouped(text: str, source: str) -> dict[str, tuple[str, ...]]:
    """Parse the packaged format: `# group` headers, `##` comments, one tag per line."""
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = _clean(raw)
        if not line or line.startswith("##"):
            continue
        if line.startswith("#"):
            name = line[1:].strip().lower()
            if not name or name in groups:
                raise ValueError(f"{source}:{number}: empty or repeated group header {line!r}")
            current = groups[name] = []
            continue
        if current is None:
            raise ValueError(f"{source}:{number}: tag {line!r} comes before the first '# group' header")
        current.append(line)
    return {name: tuple(tags) for name, tags in groups.items()}


@functools.lru_cache(maxsize=1)
def _packaged_groups() -> dict[str, tuple[str, ...]]:
    text = resources.files("alignsam.tools").joinpath(TAG_FILE).read_text(encoding="utf-8")
    return _parse_grouped(text, f"alignsam/tools/{TAG_FILE}")


def tag_groups() -> dict[str, list[str]]:
    """The packaged vocabulary as {group: tags}, groups and tags in file order (a fresh copy each call)."""
    return {name: list(tags) for name, tags in _packaged_groups().items()}


def load_tags(groups: Sequence[str] | None = None) -> list[str]:
    """Tags of the packaged vocabulary, in file order: all of them, or only those of the named groups.

    Group names are matched case-insensitively; a name given twice counts once, and the result follows the
    file's order of groups whatever order the names come in. An unknown name raises `InputError`, which
    lists the known groups.
    """
    known = _packaged_groups()
    if groups is None:
        wanted = list(known)
    else:
        names = [groups] if isinstance(groups, str) else list(groups)
        if not names:
            raise InputError(f"No tag groups given. Known groups: {', '.join(known)}.")
        asked = {str(name).strip().lower() for name in names}
        unknown = sorted(asked - known.keys())
        if unknown:
            raise InputError(
                f"Unknown tag group{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}. "
                f"Known groups: {', '.join(known)}."
            )
        wanted = [name for name in known if name in asked]
    tags: list[str] = []
    seen: set[str] = set()
    for name in wanted:
        for tag in known[name]:
            if tag not in seen:
                seen.add(tag)
                tags.append(tag)
    return tags


def read_tag_file(path: str | os.PathLike[str]) -> list[str]:
    """Read a user's vocabulary: one tag per line, `#` comments and blank lines ignored.

    Whitespace around a tag is stripped (and inner runs collapse to one space); a repeated tag is kept at
    its first place. A missing or unreadable file, one that is not UTF-8 text, or one without any tag
    raises `InputError` naming the path.
    """
    shown = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise InputError(f"The tag file '{shown}' is not UTF-8 text: {err}") from err
    except OSError as err:
        reason = err.strerror or str(err)
        raise InputError(f"Cannot read the tag file '{shown}': {reason}.") from err
    tags: list[str] = []
    seen: set[str] = set()
    for raw in text.splitlines():
        line = _clean(raw)
        if not line or line.startswith("#") or line in seen:
            continue
        seen.add(line)
        tags.append(line)
    if not tags:
        raise InputError(f"The tag file '{shown}' has no tags: write one tag per line ('#' starts a comment).")
    return tags


def model_tags(
    recommended: Sequence[str] | None, groups: Sequence[str] | None = None, fallback: Sequence[str] | None = None
) -> list[str]:
    """The vocabulary to use when the user gives no words: the built-in `groups` when named, else the
    model's own (`recommended`, from its `vocabulary.json`), else the built-in `fallback` groups (all of
    the built-in vocabulary when None)."""
    if groups:
        return load_tags(groups)
    if recommended:
        return list(recommended)
    return load_tags(fallback)
