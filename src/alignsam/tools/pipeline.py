"""Running one job over many images: read each, skip and report the unreadable, write overlays."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alignsam.errors import ImageError
from alignsam.io.images import load_image_array
from alignsam.tools.masks import overlay, sa1b


def for_each_image(
    paths: Sequence[str | os.PathLike[str]],
    work: Callable[[Path, np.ndarray], list[dict[str, Any]]],
    *,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Call `work(path, H x W x 3 array)` for each image, which returns its annotations.

    Returns the SA-1B records of the images that could be read, and `{"image", "error"}` for the others:
    an unreadable image never stops the run.
    """
    from tqdm.auto import tqdm

    records, errors = [], []
    for raw in tqdm(paths, unit=" images", disable=not progress, leave=False):
        path = Path(raw)
        try:
            image = load_image_array(path)
        except ImageError as err:
            errors.append({"image": str(path), "error": str(err)})
            continue
        records.append(sa1b(str(path), image.shape[:2], work(path, image)))
    return records, errors


def write_overlay(
    folder: str | None, path: Path, image: np.ndarray, masks: Sequence[np.ndarray], labels: Sequence[str] | None = None
) -> None:
    """Save `<folder>/<image name>.png` with the masks drawn (nothing when `folder` is None)."""
    if folder is None:
        return
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    overlay(image, masks, labels).save(out / f"{path.stem}.png")
