"""Running one job over many images: read each, skip and report the unreadable, write overlays."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alignsam.errors import AlignSamError, OutputError
from alignsam.io.files import clean_partials, ensure_output_folder
from alignsam.io.images import load_image_array, save_image
from alignsam.tools.masks import Mask, overlay, sa1b

Work = Callable[[Path, np.ndarray], tuple[list[dict[str, Any]], Sequence[Mask | np.ndarray], Sequence[str] | None]]
"""`work(path, H x W x 3 image)` -> (its annotations, the masks to draw on its overlay, their labels or None)."""


@dataclasses.dataclass
class ImageRun:
    """What `for_each_image` did: the SA-1B records of the images done, `{"image", "error"}` for those
    skipped, `{"image", "file", "error"}` for the overlays that could not be written (a full disk: their
    images' records are kept, without `"overlay"`), and whether Ctrl-C (or SIGTERM) ended the run early
    (the records then hold the images done before it)."""

    records: list[dict[str, Any]]
    errors: list[dict[str, str]]
    interrupted: bool = False
    failed_writes: list[dict[str, str]] = dataclasses.field(default_factory=list)


def for_each_image(
    paths: Sequence[str | os.PathLike[str]],
    work: Work,
    *,
    overlay_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> ImageRun:
    """Call `work` for each image, and draw the masks it returns on the image into `overlay_dir`.

    The records of the images done carry `"overlay"`, the file written, where there is one. An image that
    cannot be read, or whose work fails (an error of ours, a PyTorch error such as running out of memory on
    a huge image, a library's ValueError on an odd shape), is reported and skipped, never stopping the run.
    An overlay that cannot be written (a full disk) loses nothing: the image's record is kept without it and
    the failure is listed in `failed_writes`, which the commands turn into a non-zero exit. Ctrl-C stops the
    run and keeps what was done (`interrupted`). Overlays are named after the image (`x.jpg` -> `x.png`),
    made unique within the run (`a/x.jpg` and `b/x.png` give `x.png` and `x-2.png`). The temporary files a
    killed run left in `overlay_dir` are removed first.
    """
    from tqdm.auto import tqdm

    folder = None if overlay_dir is None else ensure_output_folder(overlay_dir)
    if folder is not None:
        clean_partials(folder)  # what a killed run was writing
    taken: set[str] = set()
    run = ImageRun([], [])
    try:
        for raw in tqdm(paths, unit=" images", disable=not progress, leave=False):
            path = Path(raw)
            try:
                image = load_image_array(path)
                annotations, masks, labels = work(path, image)
                record = sa1b(str(path), image.shape[:2], annotations)
                if folder is not None:
                    name = _unique(path.stem, taken)
                    drawn = overlay(image, masks, labels)
                    try:
                        save_image(drawn, folder / name)
                        record["overlay"] = str(folder / name)
                    except OutputError as err:  # the masks are done: keep them, report the file
                        run.failed_writes.append({"image": str(path), "file": str(folder / name), "error": str(err)})
            except (AlignSamError, OSError, RuntimeError, MemoryError, ValueError) as err:
                # ValueError: a library refusing this image's shape or content (PIL, NumPy); the others go on
                message = str(err) if isinstance(err, AlignSamError) else f"{type(err).__name__}: {err}"
                run.errors.append({"image": str(path), "error": message})
                continue
            run.records.append(record)
    except KeyboardInterrupt:
        run.interrupted = True
    return run


def _unique(stem: str, taken: set[str]) -> str:
    """`stem.png`, or `stem-2.png`, `stem-3.png`... if taken in this run (compared case-insensitively)."""
    name, n = f"{stem}.png", 1
    while name.lower() in taken:
        n += 1
        name = f"{stem}-{n}.png"
    taken.add(name.lower())
    return name
