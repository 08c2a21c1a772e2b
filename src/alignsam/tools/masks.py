"""SAM masks as people use them: automatic masks and masks from prompts, written in SA-1B's annotation
layout (COCO RLE), and drawn as an overlay a person can look at."""

from __future__ import annotations

import colorsys
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from alignsam.io.rle import Rle, compress_rle, decode_rle, encode_uncompressed_rle, rle_area, rle_bbox
from alignsam.sam.automatic import SamAutomaticMaskGenerator
from alignsam.sam.predictor import SamPredictor


class Mask:
    """One mask with what SAM said about it.

    The mask is kept as an uncompressed RLE (`rle`), so that the many masks of a large image take memory in
    proportion to their outlines, not to the image; `mask` decodes it (`H x W` bool) when a tool needs the
    pixels, one mask at a time. `Mask(array, ...)` takes a boolean `H x W` array, `Mask.from_rle` an RLE.
    """

    def __init__(
        self,
        mask: np.ndarray,
        predicted_iou: float,
        stability_score: float | None = None,
        point_coords: list[list[float]] | None = None,
        crop_box: list[int] | None = None,
    ) -> None:
        mask = np.asarray(mask, dtype=bool)
        self.rle: Rle = encode_uncompressed_rle(mask)
        self.bbox = _bbox(mask)
        self.area = int(mask.sum())
        self.predicted_iou, self.stability_score = predicted_iou, stability_score
        self.point_coords, self.crop_box = point_coords, crop_box

    @classmethod
    def from_rle(
        cls,
        rle: Rle,
        predicted_iou: float,
        stability_score: float | None = None,
        point_coords: list[list[float]] | None = None,
        crop_box: list[int] | None = None,
    ) -> Mask:
        """A mask from an uncompressed RLE (the automatic generator's records)."""
        out = cls.__new__(cls)
        out.rle, out.bbox, out.area = rle, rle_bbox(rle), rle_area(rle)
        out.predicted_iou, out.stability_score = predicted_iou, stability_score
        out.point_coords, out.crop_box = point_coords, crop_box
        return out

    @property
    def mask(self) -> np.ndarray:
        """The mask's pixels, `H x W` bool (decoded on each access)."""
        return decode_rle(self.rle)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the image the mask belongs to."""
        h, w = self.rle["size"]
        return int(h), int(w)

    def annotation(self, index: int) -> dict[str, Any]:
        """The SA-1B annotation record: segmentation as COCO RLE, bbox XYWH, area, scores."""
        out: dict[str, Any] = {
            "id": index,
            "segmentation": compress_rle(self.rle),
            "bbox": self.bbox,
            "area": self.area,
            "predicted_iou": round(float(self.predicted_iou), 6),
        }
        if self.stability_score is not None:
            out["stability_score"] = round(float(self.stability_score), 6)
        if self.point_coords is not None:
            out["point_coords"] = self.point_coords
        if self.crop_box is not None:
            out["crop_box"] = self.crop_box
        return out


def _bbox(mask: np.ndarray) -> list[int]:
    """XYWH of a mask's extent (all zeros for an empty mask)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if cols.size == 0:
        return [0, 0, 0, 0]
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def automatic_masks(generator: SamAutomaticMaskGenerator, image: np.ndarray) -> list[Mask]:
    """Every mask the automatic generator finds in an `H x W x 3` image, largest first (kept as RLEs)."""
    generator.output_mode = "uncompressed_rle"
    records = generator.generate(image)
    masks = [
        Mask.from_rle(r["segmentation"], r["predicted_iou"], r["stability_score"], r["point_coords"], r["crop_box"])
        for r in records
    ]
    return sorted(masks, key=lambda m: -m.area)


def _numbers(items: Sequence[Sequence[float]], size: int, what: str, form: str) -> np.ndarray:
    """`items` as a `K x size` float array of finite numbers; a `PromptError` naming the bad one otherwise."""
    from alignsam.errors import PromptError

    for item in items:
        ok = isinstance(item, (Sequence, np.ndarray)) and not isinstance(item, str) and len(item) == size
        if not ok or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in item):
            raise PromptError(f"{what} must be {size} numbers {form}, got {item!r}.")
    array = np.array(items, dtype=float).reshape(len(items), size)
    if not np.isfinite(array).all():
        raise PromptError(f"{what} must be finite numbers, got {array.tolist()}.")
    return array


def prompted_masks(
    predictor: SamPredictor,
    points: Sequence[Sequence[float]] = (),
    boxes: Sequence[Sequence[float]] = (),
    mask_input: np.ndarray | None = None,
    multimask: bool | None = None,
) -> list[list[Mask]]:
    """Masks for prompts on the image set in `predictor`: one list per prompt, best mask first.

    points: `(x, y, label)` with label 1 (on the object) or 0 (not on it); boxes: `(x0, y0, x1, y1)`.
    One box (with or without points) or points alone make one prompt; several boxes make one prompt each
    (and cannot be combined with points). `multimask` defaults to SAM's advice: three candidate masks
    for a single point, one mask otherwise.
    """
    from alignsam.errors import PromptError

    if len(boxes) > 1 and points:
        raise PromptError("Several boxes cannot be combined with points; give one box, or boxes alone.")
    if not points and not boxes and mask_input is None:
        raise PromptError("Give at least one point, box or mask.")
    if multimask is None:
        multimask = len(points) == 1 and not boxes
    point_array = _numbers(points, 3, "A point", "(x, y, label)") if points else None
    box_array = _numbers(boxes, 4, "A box", "(x0, y0, x1, y1)") if boxes else None
    coords = None if point_array is None else point_array[:, :2]
    labels = None
    if point_array is not None:
        if not np.isin(point_array[:, 2], (0, 1)).all():
            raise PromptError(
                f"A point's label must be 1 (object) or 0 (background), got {point_array[:, 2].tolist()}."
            )
        labels = point_array[:, 2].astype(int)
    if box_array is not None and len(boxes) == 1:
        box_array = box_array[0]
    prediction = predictor.predict(coords, labels, box_array, mask_input, multimask_output=multimask)
    masks, scores = prediction.masks, prediction.iou_predictions
    if masks.ndim == 3:  # one prompt set: C x H x W
        masks, scores = masks[None], scores[None]
    point_list = coords.tolist() if coords is not None else None
    return [
        [Mask(set_masks[i], float(set_scores[i]), point_coords=point_list) for i in np.argsort(-set_scores)]
        for set_masks, set_scores in zip(masks, scores, strict=True)
    ]


def sa1b(image_name: str, size: tuple[int, int], annotations: list[dict[str, Any]]) -> dict[str, Any]:
    """SA-1B's per-image layout: `{"image": {...}, "annotations": [...]}`."""
    h, w = size
    return {"image": {"file_name": image_name, "height": h, "width": w}, "annotations": annotations}


def colour(index: int) -> tuple[int, int, int]:
    """Distinct, reproducible colours (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.75, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def overlay(
    image: np.ndarray, masks: Sequence[Mask | np.ndarray], labels: Sequence[str] | None = None, alpha: float = 0.45
) -> Image.Image:
    """The image with each mask tinted in its own colour and outlined, and optional labels on top.

    Masks are drawn one at a time within their boxes, so memory holds the image and one mask."""
    canvas = np.ascontiguousarray(image, dtype=np.uint8).copy()
    centres: list[tuple[int, int] | None] = []
    for i, item in enumerate(masks):
        mask = item.mask if isinstance(item, Mask) else np.asarray(item, dtype=bool)
        x, y, w, h = item.bbox if isinstance(item, Mask) else _bbox(mask)
        if w == 0 or h == 0:
            centres.append(None)
            continue
        # the box grown by one pixel, so that the outline test sees the pixels around the mask
        y0, x0, y1, x1 = max(y - 1, 0), max(x - 1, 0), min(y + h + 1, mask.shape[0]), min(x + w + 1, mask.shape[1])
        part, region = mask[y0:y1, x0:x1], canvas[y0:y1, x0:x1]
        c = np.array(colour(i), np.float32)
        region[part] = ((1 - alpha) * region[part] + alpha * c).clip(0, 255).astype(np.uint8)
        inner = part.copy()
        inner[1:, :] &= part[:-1, :]
        inner[:-1, :] &= part[1:, :]
        inner[:, 1:] &= part[:, :-1]
        inner[:, :-1] &= part[:, 1:]
        region[part & ~inner] = c.astype(np.uint8)  # outline
        ys, xs = np.nonzero(part)
        centres.append((int(xs.mean()) + x0, int(ys.mean()) + y0))
    out = Image.fromarray(canvas)
    if labels:
        draw = ImageDraw.Draw(out)
        font = ImageFont.load_default()
        for i, (centre, text) in enumerate(zip(centres, labels, strict=True)):
            if centre is None or not text:
                continue
            left, top, right, bottom = draw.textbbox(centre, text, font=font, anchor="mm")
            draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=(0, 0, 0))
            draw.text(centre, text, fill=colour(i), font=font, anchor="mm")
    return out
