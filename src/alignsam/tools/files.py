"""Finding the images a command should process in the files and folders it was given."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from alignsam.errors import InputError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif"}
)


@dataclasses.dataclass
class ImageList:
    """`files`: images to process, in a stable order; `ignored`: files in the folders that are not images
    by their suffix (not attempted, only counted)."""

    files: list[Path]
    ignored: int = 0


def list_images(paths: Sequence[str | os.PathLike[str]], recursive: bool = True) -> ImageList:
    """Expand files and folders into image files.

    A file named explicitly is always included (and reported later if it cannot be read); in a folder,
    files with an image suffix are included, sorted, and others only counted. Hidden files are skipped.
    A path that does not exist raises `InputError`.
    """
    out = ImageList([])
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_file():
            candidates = [path]
        elif path.is_dir():
            walk = path.rglob("*") if recursive else path.glob("*")
            candidates = []
            for p in sorted(walk):
                if not p.is_file() or any(part.startswith(".") for part in p.relative_to(path).parts):
                    continue
                if p.suffix.lower() in IMAGE_SUFFIXES:
                    candidates.append(p)
                else:
                    out.ignored += 1
        else:
            raise InputError(f"No such file or folder: '{raw}'.")
        for p in candidates:
            if p not in seen:
                seen.add(p)
                out.files.append(p)
    return out
