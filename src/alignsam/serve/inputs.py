"""What requests send, made safe to use: images as base64, data URLs or (when allowed) paths under root
folders, and the items of `/similarity` (texts, images and their weighted compositions).

An image string is read as:
- `data:image/...;base64,...`: a data URL;
- `path:/some/file.jpg`: a path on the server, only under the `--allow-paths` roots;
- anything else: base64; when it is not valid base64 and paths are allowed, a path (so that plain paths,
  which are never valid base64 because of their dots, work as before).

A path is refused when it has a `..` part, or when it resolves (symbolic links followed) outside every
root: the check is made on the real path, so a link inside a root that points elsewhere is refused too.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from alignsam.errors import InputError

_WEBP = (b"RIFF", b"WEBP")
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
_SPLIT = re.compile(r"\s([+-])\s")  # the composition grammar of `alignsam similarity`
_WEIGHT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*\*\s*(.+)$", re.S)
_SPACE = re.compile(r"\s+")


@dataclasses.dataclass(frozen=True)
class Upload:
    """The bytes of an encoded image as they arrived, with a name for reports."""

    data: bytes
    name: str = "upload"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


ImageSource = Upload | Path


class PathGuard:
    """Reads of server paths, allowed only under `roots` (resolved folders); no roots: no paths at all."""

    def __init__(self, roots: Sequence[Path] = ()) -> None:
        self.roots = tuple(Path(os.path.realpath(r)) for r in roots)

    @property
    def enabled(self) -> bool:
        return bool(self.roots)

    def resolve(self, text: str) -> Path:
        """The real path of the file `text` names, if it lies under a root; an `InputError` otherwise."""
        if not self.roots:
            raise InputError(
                "Server paths are not allowed here: send the image as base64, or start the server with "
                "--allow-paths ROOT to read images under ROOT."
            )
        if not text or "\x00" in text:
            raise InputError("An image path is empty or holds a NUL character.")
        given = Path(text)
        if ".." in given.parts:
            raise InputError(f"The path '{text}' has a '..' part; name the file under an allowed folder directly.")
        candidate = given if given.is_absolute() else self.roots[0] / given
        real = Path(os.path.realpath(candidate))
        if not any(real == root or real.is_relative_to(root) for root in self.roots):
            raise InputError(f"The path '{text}' is outside the folders this server may read (--allow-paths).")
        if not real.is_file():
            raise InputError(f"The path '{text}' is not a file under the allowed folders.")
        return real

    def try_resolve(self, text: str) -> Path | None:
        """`resolve` for a string that may name a file or be meant otherwise: None instead of an error."""
        try:
            return self.resolve(text) if self.roots else None
        except InputError:
            return None


def looks_like_image(data: bytes) -> bool:
    """Whether `data` starts like an encoded image (PNG, JPEG, GIF, BMP, TIFF, WebP)."""
    return data.startswith(_MAGIC) or (data[:4] == _WEBP[0] and data[8:12] == _WEBP[1])


def _b64(text: str, what: str) -> bytes:
    compact = _SPACE.sub("", text)  # base64 wrapped in lines (as `base64` writes it) is still base64
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InputError(f"{what} is not valid base64 ({err}).") from err


def image_source(item: str, guard: PathGuard, what: str = "An image") -> ImageSource:
    """The bytes or the allowed path an image string stands for (see the module docstring)."""
    if not isinstance(item, str) or not item:
        raise InputError(f"{what} must be a non-empty string: base64, a data URL, or a server path when allowed.")
    if item.startswith("data:"):
        head, sep, payload = item.partition(",")
        if not sep or not head.endswith(";base64"):
            raise InputError(f"{what} is a data URL without ';base64,' data.")
        return Upload(_b64(payload, what))
    if item.startswith("path:"):
        return guard.resolve(item[5:])
    try:
        return Upload(_b64(item, what))
    except InputError:
        if guard.enabled:
            return guard.resolve(item)
        if len(item) < 4096 and ("/" in item or "\\" in item):
            raise InputError(
                f"{what} is not base64, and server paths such as '{item[:80]}' are not allowed here (start the "
                "server with --allow-paths ROOT to read images under ROOT)."
            ) from None
        raise


def image_string(text: str) -> bool:
    """Whether a bare string of `/similarity` or `/search` is an image rather than a text: a data URL, or
    long base64 (texts have spaces) whose bytes start like an image."""
    if text.startswith("data:image/"):
        return True
    if len(text) < 32 or any(c.isspace() for c in text[:200]):
        return False
    try:
        head = base64.b64decode(text[:64], validate=True)
    except (binascii.Error, ValueError):
        return False
    return looks_like_image(head)


Kind = Literal["text", "image"]


@dataclasses.dataclass(frozen=True)
class Term:
    """One term of a query: a weight and a text or an image."""

    weight: float
    kind: Kind
    value: str | ImageSource


def parse_string_item(spec: str, guard: PathGuard) -> list[Term]:
    """The terms of a `/similarity` string item: `a red car`, `image:<base64>`, `text:...`, a data URL,
    and compositions such as `image:<base64> + 0.5*text:in snow` (operators with spaces around them)."""
    if not spec.strip():
        raise InputError("An item is empty; give a text, an image, or a composition.")
    parts = _SPLIT.split(spec)
    terms, sign = [], 1.0
    for i, part in enumerate(parts):
        if i % 2:
            sign = 1.0 if part == "+" else -1.0
            continue
        weight, body = 1.0, part.strip()
        m = _WEIGHT.match(part) if len(parts) > 1 else None
        if m:
            weight, body = float(m[1]), m[2].strip()
        terms.append(Term(sign * weight, *_term(body, guard)))
    return terms


def _term(body: str, guard: PathGuard) -> tuple[Kind, str | ImageSource]:
    if body.startswith("text:"):
        return "text", body[5:]
    if body.startswith("image:"):
        return "image", image_source(body[6:], guard, "An 'image:' term")
    if image_string(body):
        return "image", image_source(body, guard)
    found = guard.try_resolve(body) if os.sep in body or "." in body else None
    return ("image", found) if found is not None else ("text", body)


def short_name(value: str | ImageSource, position: int) -> str:
    """How a term is named in results: the text, the file name, or `image#<position>` for uploads."""
    if isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    return f"image#{position}"
