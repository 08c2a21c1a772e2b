"""SAM masks as people use them: automatic masks and masks from prompts, written in SA-1B's annotation
layout (COCO RLE), and drawn as an overlay a person can look at."""

from __future__ import annotations

import colorsys
import dataclasses
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from alignsam.io.rle import encode_rle
from alignsam.sam.automatic import SamAutomaticMaskGenerator
from alignsam.sam.predictor import SamPredictor


@dataclasses.dataclass
class Mask:
    """One mask with what SAM said about it. `mask`: `H x W` bool."""

    mask: np.ndarray
    predicted_iou: float
    stability_score: float | None = None
    point_coords: list[list[float]] | None = None
    crop_box: list[int] | None = None

    @property
    def bbox(self) -> list[int]:
        """XYWH of the mask's extent (all zeros for an empty mask)."""
        ys, xs = np.nonzero(self.mask)
        if xs.size == 0:
            return [0, 0, 0, 0]
        return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def annotation(self, index: int) -> dict[str, Any]:
        """The SA-1B annotation record: segmentation as COCO RLE, bbox XYWH, area, scores."""
        out: dict[str, Any] = {
            "id": index,
            "segmentation": encode_rle(self.mask),
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


def automatic_masks(generator: SamAutomaticMaskGenerator, image: np.ndarray) -> list[Mask]:
    """Every mask the automatic generator finds in an `H x W x 3` image, largest first."""
    generator.output_mode = "binary_mask"
    records = generator.generate(image)
    masks = [
        Mask(r["segmentation"], r["predicted_iou"], r["stability_score"], r["point_coords"], r["crop_box"])
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
    image: np.ndarray, masks: Sequence[np.ndarray], labels: Sequence[str] | None = None, alpha: float = 0.45
) -> Image.Image:
    """The image with each mask tinted in its own colour and outlined, and optional labels on top."""
    canvas = image.astype(np.float32).copy()
    for i, mask in enumerate(masks):
        c = np.array(colour(i), np.float32)
        canvas[mask] = (1 - alpha) * canvas[mask] + alpha * c
        inner = mask.copy()
        inner[1:, :] &= mask[:-1, :]
        inner[:-1, :] &= mask[1:, :]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        canvas[mask & ~inner] = c  # outline
    out = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    if labels:
        draw = ImageDraw.Draw(out)
        font = ImageFont.load_default()
        for i, (mask, text) in enumerate(zip(masks, labels, strict=True)):
            ys, xs = np.nonzero(mask)
            if xs.size == 0 or not text:
                continue
            x, y = int(xs.mean()), int(ys.mean())
            left, top, right, bottom = draw.textbbox((x, y), text, font=font, anchor="mm")
            draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=(0, 0, 0))
            draw.text((x, y), text, fill=colour(i), font=font, anchor="mm")
    return out
