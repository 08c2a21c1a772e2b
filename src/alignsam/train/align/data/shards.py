"""Webdataset shards without the webdataset package: brace-expanded shard lists and tar streaming by key.

A shard is a tar file whose members are grouped into samples by *key*: `dir/abc.jpg`, `dir/abc.txt` and
`dir/abc.json` form the sample `dir/abc` with the fields `jpg`, `txt` and `json` (the key ends at the first
dot of the file name, as in webdataset, so `abc.seg.png` is the field `seg.png`). Members of one sample are
adjacent in the tar, which is how img2dataset and `alignsam synth webdataset` write them, so a shard is read
in one forward pass without an index (`tarfile` streaming mode, `r|*`, also reads .tar.gz).
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from alignsam.errors import InputError

_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(\d+))?$")


def _split_top(text: str, sep: str) -> list[str]:
    """Split at `sep` characters that are not inside braces."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "{"
        depth -= ch == "}" and depth > 0
        if ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def expand_braces(pattern: str) -> list[str]:
    """Bash-style brace expansion, as webdataset's `braceexpand`: the shard list of a pattern.

    `{000..003}` counts with zero padding (`000 001 002 003`), `{0..10..5}` steps, `{a,b}` lists
    alternatives, and braces nest (`{a,b{1..2}}`). A pattern without braces is returned as is.

        >>> expand_braces("data/{00000..00002}.tar")
        ['data/00000.tar', 'data/00001.tar', 'data/00002.tar']
    """
    depth, start = 0, -1
    for i, ch in enumerate(pattern):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                prefix, inner, suffix = pattern[:start], pattern[start + 1 : i], pattern[i + 1 :]
                tails = expand_braces(suffix)
                return [prefix + head + tail for head in _alternatives(inner) for tail in tails]
    return [pattern]


def _alternatives(inner: str) -> list[str]:
    match = _RANGE.match(inner)
    if match:
        first, last, step_text = match.groups()
        a, b = int(first), int(last)
        step = int(step_text or 1)
        if step == 0:
            raise InputError(f"Brace range {{{inner}}} has a zero step.")
        padded = any(len(t.lstrip("-")) > 1 and t.lstrip("-").startswith("0") for t in (first, last))
        width = max(len(first), len(last)) if padded else 0
        values = range(a, b + 1, step) if a <= b else range(a, b - 1, -step)
        return [str(v).zfill(width) for v in values]
    options = _split_top(inner, ",")
    if len(options) == 1:  # "{x}" is not an expansion in bash either: keep the braces
        return ["{" + head + "}" for head in expand_braces(inner)]
    return [item for option in options for item in expand_braces(option)]


def shard_list(spec: str) -> list[str]:
    """Shard paths of a specification: brace patterns, several separated by `::` (open_clip's convention).

    Every shard must exist: a typo in a pattern is a usage error, reported before any training starts.
    """
    paths = [p for part in spec.split("::") if part.strip() for p in expand_braces(part.strip())]
    if not paths:
        raise InputError(f"The shard specification {spec!r} names no shards.")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise InputError(f"{len(missing)} of {len(paths)} shards do not exist: {missing[:3]}{more}.")
    return paths


def split_name(name: str) -> tuple[str, str]:
    """`dir/abc.seg.jpg` -> (`dir/abc`, `seg.jpg`): the sample key and the (lower-case) field."""
    folder, _, base = name.rpartition("/")
    stem, _, field = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, field.lower()


def iter_tar(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {field: bytes}) for each sample of a tar shard, in order.

    Members that are not regular files, have no extension, or are hidden (`.`-prefixed names, such as the
    `._x` files of macOS) are ignored. A damaged tar raises `tarfile.TarError`/`OSError`/`EOFError` after
    the samples read before the damage were yielded; the caller counts it and moves on.
    """
    with tarfile.open(path, mode="r|*") as tar:
        key: str | None = None
        fields: dict[str, bytes] = {}
        for member in tar:
            base = member.name.rpartition("/")[2]
            if not member.isfile() or base.startswith(".") or "." not in base:
                continue
            member_key, field = split_name(member.name)
            handle = tar.extractfile(member)
            data = handle.read() if handle is not None else b""
            if member_key != key:
                if key is not None:
                    yield key, fields
                key, fields = member_key, {}
            fields[field] = data
        if key is not None:
            yield key, fields
