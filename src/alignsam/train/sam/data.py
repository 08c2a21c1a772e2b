"""Segmentation data for fine-tuning: images with instance masks, from COCO JSON or folders of PNG masks.

Accepted layouts (`open_dataset(path)`):

- `annotations.json` (COCO instances), or a folder holding one (what `alignsam synth segmentation`
  writes): `images[].file_name` relative to `image_root` (default: the JSON's folder, or its `images/`
  subfolder); `annotations[].segmentation` as compressed RLE (`counts` a string), uncompressed RLE
  (`counts` a list of runs) or polygons (`[[x0, y0, x1, y1, ...], ...]`, rasterised here with PIL).
  `iscrowd` annotations are left out.
- a folder with `images/` and `masks/`: `images/NAME.{jpg,png,...}` with either one binary PNG per object,
  `masks/NAME_*.png` (nonzero = object), or one instance-id PNG, `masks/NAME.png`, where each distinct
  nonzero value (grey level, palette index or colour) is one object.

A sample that cannot be used (missing or corrupt image, undecodable mask, mask of another size, no object)
is skipped and counted by reason, never fatal: `Dataset.load` raises `SampleError`, whose `reason` the
caller counts. Objects with an empty mask are dropped from their sample.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageDraw

from alignsam.errors import AlignSamError, InputError
from alignsam.io.images import load_image_array
from alignsam.io.rle import decode_rle

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class SampleError(InputError):
    """A sample that cannot be used; `reason` is a short key for the skip counts."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass
class Sample:
    """One training image: `image` `H x W x 3` uint8 RGB, `masks` `N x H x W` bool (N >= 1)."""

    image: np.ndarray
    masks: np.ndarray
    name: str = ""


class Dataset(Protocol):
    """A map-style set of samples: `len(data)`, `data.load(i) -> Sample` (or `SampleError`)."""

    def __len__(self) -> int: ...

    def load(self, index: int) -> Sample: ...

    def describe(self) -> str: ...


def _read_image(path: Path) -> np.ndarray:
    if not path.is_file():
        raise SampleError("missing_image", f"Image '{path}' does not exist.")
    try:
        return load_image_array(path)
    except AlignSamError as err:
        raise SampleError("bad_image", str(err)) from err


def _finish(image: np.ndarray, masks: list[np.ndarray], name: str) -> Sample:
    h, w = image.shape[:2]
    for m in masks:
        if m.shape != (h, w):
            raise SampleError("size_mismatch", f"{name}: a mask is {m.shape[1]}x{m.shape[0]}, the image {w}x{h}.")
    kept = [m for m in masks if m.any()]
    if not kept:
        raise SampleError("no_masks", f"{name}: no object with a non-empty mask.")
    return Sample(image, np.stack(kept), name)


# ---------------------------------------------------------------------------------------------------------
# COCO instances


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int, supersample: int = 4) -> np.ndarray:
    """Rasterise COCO polygons (`[[x0, y0, x1, y1, ...], ...]`, pixel coordinates) to an `H x W` bool mask.

    A pixel belongs to the mask when at least half of it lies inside: the polygons are drawn by PIL at
    `supersample` times the size (only over their bounding box) and averaged back. PIL alone would fill
    every pixel the outline touches, growing a 20 px object by about 5%; this way areas agree with the
    polygon's (and pycocotools' masks) to about 1%. Several polygons are unioned, as COCO's parts of one
    object are.
    """
    s = supersample
    parts = []
    for poly in polygons:
        xy = np.asarray(poly, dtype=np.float64).reshape(-1)
        if xy.size < 6 or xy.size % 2 or not np.isfinite(xy).all():
            raise ValueError(f"a polygon needs at least 3 (x, y) points, got {xy.size} numbers")
        parts.append(xy.reshape(-1, 2))
    mask = np.zeros((height, width), bool)
    if not parts:
        return mask
    corners = np.concatenate(parts)
    x0, y0 = (int(max(np.floor(v), 0)) for v in corners.min(0))
    x1, y1 = int(min(np.ceil(corners[:, 0].max()), width)), int(min(np.ceil(corners[:, 1].max()), height))
    if x1 <= x0 or y1 <= y0:
        return mask
    canvas = Image.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
    draw = ImageDraw.Draw(canvas)
    for points in parts:
        # COCO's vertices are on pixel edges; PIL's integer coordinates are (sub-)pixel centres, and PIL
        # truncates coordinates, so shift by half a sub-pixel and round here.
        local = np.rint((points - (x0, y0)) * s - 0.5)
        draw.polygon(local.ravel().tolist(), fill=1)
    coverage = np.asarray(canvas, np.float32).reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))
    mask[y0:y1, x0:x1] = coverage >= 0.5
    return mask


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO `segmentation` (compressed or uncompressed RLE, or polygons) -> `H x W` bool."""
    if isinstance(segmentation, dict):
        if "counts" not in segmentation or "size" not in segmentation:
            raise ValueError("an RLE needs 'size' and 'counts'")
        size = [int(v) for v in segmentation["size"]]
        if size != [height, width]:
            raise ValueError(f"RLE size {size} differs from the image's {[height, width]}")
        return decode_rle(segmentation)
    if isinstance(segmentation, list) and segmentation and all(isinstance(p, list) for p in segmentation):
        return polygons_to_mask(segmentation, height, width)
    raise ValueError(f"unsupported segmentation of type {type(segmentation).__name__}")


class CocoDataset:
    """COCO instances: one sample per image that has at least one (non-crowd) annotation."""

    def __init__(self, path: str | os.PathLike[str], image_root: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path)
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            images = {int(im["id"]): im for im in document["images"]}
            annotations = document["annotations"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(f"'{self.path}' is not a readable COCO instances file: {err}") from err
        self.root = self._image_root(image_root, images)
        by_image: dict[int, list[dict[str, Any]]] = {}
        self.skipped: dict[str, int] = {}
        for ann in annotations:
            if not isinstance(ann, dict) or ann.get("image_id") not in images:
                self._skip("orphan_annotation")
            elif ann.get("iscrowd", 0):
                self._skip("crowd_annotation")
            else:
                by_image.setdefault(int(ann["image_id"]), []).append(ann)
        self.items = [(images[i], by_image[i]) for i in sorted(by_image)]

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def _image_root(self, image_root: str | os.PathLike[str] | None, images: dict[int, Any]) -> Path:
        if image_root is not None:
            return Path(image_root)
        first = next(iter(images.values()), None)
        for candidate in (self.path.parent, self.path.parent / "images"):
            if first is None or (candidate / str(first.get("file_name", ""))).is_file():
                return candidate
        return self.path.parent

    def __len__(self) -> int:
        return len(self.items)

    def describe(self) -> str:
        return f"COCO {self.path} ({len(self)} images)"

    def load(self, index: int) -> Sample:
        info, anns = self.items[index]
        name = str(info.get("file_name", ""))
        image = _read_image(self.root / name)
        h, w = image.shape[:2]
        if (info.get("height"), info.get("width")) not in ((h, w), (None, None)):
            raise SampleError(
                "size_mismatch", f"{name} is {w}x{h}, the annotations say {info.get('width')}x{info.get('height')}."
            )
        masks = []
        for ann in anns:
            try:
                masks.append(segmentation_to_mask(ann.get("segmentation"), h, w))
            except (ValueError, TypeError, KeyError, IndexError) as err:  # damaged RLE strings, bad polygons
                raise SampleError("bad_mask", f"{name}: annotation {ann.get('id')}: {err}") from err
        return _finish(image, masks, name)


# ---------------------------------------------------------------------------------------------------------
# Folders of PNG masks


def instance_masks(label_map: np.ndarray) -> list[np.ndarray]:
    """An instance-id map (`H x W` integers or `H x W x C` colours; 0 / black is background) -> one mask
    per distinct nonzero value, in increasing order of value."""
    if label_map.ndim == 3:  # colours: pack the channels into one integer
        packed = np.zeros(label_map.shape[:2], np.int64)
        for c in range(label_map.shape[2]):
            packed = packed * 256 + label_map[..., c].astype(np.int64)
        label_map = packed
    return [label_map == v for v in np.unique(label_map) if v != 0]


def _read_mask_png(path: Path, name: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA"):  # transparency carries no instance information
                im = im.convert(im.mode[:-1])
            return np.asarray(im)  # a palette image gives its indices: the instance ids
    except (OSError, ValueError, SyntaxError) as err:
        raise SampleError("bad_mask", f"{name}: mask '{path.name}' cannot be read: {err}") from err


class MaskFolderDataset:
    """`root/images/NAME.ext` with `root/masks/NAME_*.png` (one object each) or `root/masks/NAME.png` (ids)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        image_dir, mask_dir = self.root / "images", self.root / "masks"
        if not image_dir.is_dir() or not mask_dir.is_dir():
            raise InputError(
                f"'{self.root}' needs images/ and masks/ subfolders (or an annotations.json); see "
                "alignsam.train.sam.data for the layouts."
            )
        masks_by_stem: dict[str, list[Path]] = {}
        for p in sorted(mask_dir.iterdir()):
            if p.suffix.lower() == ".png":
                masks_by_stem.setdefault(p.stem, []).append(p)
        self.skipped: dict[str, int] = {}
        self.items: list[tuple[Path, tuple[Path, ...], bool]] = []  # image, mask files, is an id map
        for image in sorted(image_dir.iterdir()):
            if image.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if image.stem in masks_by_stem:
                self.items.append((image, tuple(masks_by_stem[image.stem]), True))
                continue
            prefix = image.stem + "_"
            per_object = [p for stem, ps in masks_by_stem.items() if stem.startswith(prefix) for p in ps]
            if per_object:
                self.items.append((image, tuple(sorted(per_object)), False))
            else:
                self.skipped["no_masks"] = self.skipped.get("no_masks", 0) + 1

    def __len__(self) -> int:
        return len(self.items)

    def describe(self) -> str:
        return f"mask folder {self.root} ({len(self)} images)"

    def load(self, index: int) -> Sample:
        image_path, mask_paths, is_id_map = self.items[index]
        name = image_path.name
        image = _read_image(image_path)
        if is_id_map:
            label_map = _read_mask_png(mask_paths[0], name)
            if label_map.shape[:2] != image.shape[:2]:
                raise SampleError("size_mismatch", f"{name}: the id map's size differs from the image's.")
            return _finish(image, instance_masks(label_map), name)
        masks: list[np.ndarray] = []
        for p in mask_paths:
            m = _read_mask_png(p, name)
            masks.append(np.asarray(m.any(axis=-1) if m.ndim == 3 else m != 0))
        return _finish(image, masks, name)


# ---------------------------------------------------------------------------------------------------------
# Synthetic scenes and several sources at once


class SceneDataset:
    """Synthetic scenes `generator[start .. start + num - 1]` as samples (for evaluation and tests)."""

    def __init__(self, generator: Any, start: int, num: int) -> None:
        self.generator, self.start, self.num = generator, start, num

    def __len__(self) -> int:
        return self.num

    def describe(self) -> str:
        return f"synthetic scenes seed {self.generator.seed}, {self.start}..{self.start + self.num - 1}"

    def load(self, index: int) -> Sample:
        scene = self.generator[self.start + index]
        if not scene.objects:
            raise SampleError("no_masks", f"scene {scene.index} has no object.")
        return Sample(scene.image, scene.masks, f"scene-{scene.index}")


class ConcatDataset:
    """Several datasets read as one."""

    def __init__(self, parts: Sequence[Dataset]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def describe(self) -> str:
        return " + ".join(p.describe() for p in self.parts)

    @property
    def skipped(self) -> dict[str, int]:
        """Skips found while indexing (annotations left out, images without masks), by reason."""
        out: dict[str, int] = {}
        for p in self.parts:
            for k, v in getattr(p, "skipped", {}).items():
                out[k] = out.get(k, 0) + v
        return out

    def load(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(index)
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.parts[part].load(index - int(self.offsets[part]))


def open_dataset(paths: str | Sequence[str], image_root: str | None = None) -> ConcatDataset:
    """Open one or more COCO JSON files and/or folders (see the module docstring for the layouts)."""
    parts: list[Dataset] = []
    for p in [paths] if isinstance(paths, str) else paths:
        path = Path(p)
        if path.is_file():
            parts.append(CocoDataset(path, image_root))
        elif (path / "annotations.json").is_file():
            parts.append(CocoDataset(path / "annotations.json", image_root))
        elif path.is_dir():
            parts.append(MaskFolderDataset(path))
        else:
            raise InputError(f"Training data '{p}' does not exist; give a COCO JSON file or a folder.")
    data = ConcatDataset(parts)
    if len(data) == 0:
        raise InputError(f"No usable sample in {list(paths) if not isinstance(paths, str) else paths}.")
    return data
