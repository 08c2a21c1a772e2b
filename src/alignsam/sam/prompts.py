"""Prompts given in the original image's pixels: validation, and binary masks turned into mask logits.

The predictor checks every prompt here before the model sees it, so a bad prompt is a `PromptError` that
says what is wrong, never a shape error deep inside the model. Documented rules:

- Points are finite `(x, y)` pixels; labels are 1 (foreground), 0 (background), -1 (SAM's "not a point"
  padding), 2 / 3 (box corners as points) or -10 (ignored padding, as in transformers). A real point
  outside the image (`x < 0`, `x > W`, `y < 0` or `y > H`) is used as given, as the official predictor
  does (it is just a coordinate), with a `UserWarning` that names it; padding points may lie anywhere.
- A box is `(x0, y0, x1, y1)` inside the image with `x0 <= x1` and `y0 <= y1`. A `1 x 4` box is one box,
  as the official predictor reads it; K boxes (`K x 4`, K > 1) are K prompt sets.
- A mask input holds low-resolution logits, `1 x L x L` (L = 256 for the published models); boolean masks
  are refused with a pointer to `mask_to_logits`.
- At least one of points, box and mask input is needed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from alignsam.errors import InputError, PromptError
from alignsam.sam.transforms import ResizeLongestSide

VALID_LABELS = (-10, -1, 0, 1, 2, 3)
_PADDING_LABELS = (-10, -1)


@dataclass
class PromptArrays:
    """Validated prompts with a leading prompt-set axis K (K = 1 for a single prompt set).

    `point_coords` is `K x N x 2` (float64), `point_labels` `K x N` (int64), `boxes` `K x 4` (float64),
    `mask_input` `K x 1 x L x L` (float32); `batched` tells whether the caller gave the K axis.
    """

    point_coords: np.ndarray | None
    point_labels: np.ndarray | None
    boxes: np.ndarray | None
    mask_input: np.ndarray | None
    batched: bool

    @property
    def num_sets(self) -> int:
        for part in (self.point_coords, self.boxes, self.mask_input):
            if part is not None:
                return part.shape[0]
        return 0

    def signature(self) -> tuple[int | None, bool, bool]:
        """Prompt sets with equal signatures can share one decoder batch."""
        n = None if self.point_coords is None else self.point_coords.shape[1]
        return n, self.boxes is not None, self.mask_input is not None


def check_prompts(
    point_coords: np.ndarray | None,
    point_labels: np.ndarray | None,
    box: np.ndarray | None,
    mask_input: np.ndarray | None,
    *,
    image_size: tuple[int, int],
    mask_size: int,
) -> PromptArrays:
    """Validate prompts for an image of `image_size` (H, W); see the module docstring for the rules.

    Each part is either one prompt set (points `N x 2`, labels `N`, box `4`, mask `1 x L x L`) or K of them
    (`K x N x 2`, `K x N`, `K x 4`, `K x 1 x L x L`); all parts given must agree on K.
    """
    if point_coords is None and point_labels is None and box is None and mask_input is None:
        raise PromptError("The prompt is empty: give points (with labels), a box, or a mask input.")
    if (point_coords is None) != (point_labels is None):
        raise PromptError("point_coords and point_labels go together: pass both, one label per point.")
    h, w = image_size
    sets: dict[str, tuple[int, bool]] = {}
    coords = labels = boxes = masks = None

    if point_coords is not None and point_labels is not None:
        coords = _finite(point_coords, "point_coords")
        if coords.ndim not in (2, 3) or coords.shape[-1] != 2 or coords.shape[-2] == 0 or coords.size == 0:
            raise PromptError(
                f"point_coords must be N x 2 (x, y) pixels with N >= 1 (or K x N x 2), got shape {coords.shape}."
            )
        sets["point_coords"] = (coords.shape[0], True) if coords.ndim == 3 else (1, False)
        coords = coords if coords.ndim == 3 else coords[None]
        labels = np.asarray(point_labels)
        if labels.shape != coords.shape[:-1] and labels.shape != coords.shape[1:-1]:
            raise PromptError(
                f"point_labels must have one label per point, shape {coords.shape[:-1]}; got {labels.shape}."
            )
        labels = labels.reshape(coords.shape[:-1])
        if labels.dtype == bool or not np.all(np.isin(labels, VALID_LABELS)):
            bad = sorted({str(v) for v in np.unique(labels) if v not in VALID_LABELS})
            raise PromptError(f"point_labels must be 1 (foreground) or 0 (background) (or {VALID_LABELS}); got {bad}.")
        labels = labels.astype(np.int64)
        real = ~np.isin(labels, _PADDING_LABELS)
        outside = real & ((coords[..., 0] < 0) | (coords[..., 0] > w) | (coords[..., 1] < 0) | (coords[..., 1] > h))
        if outside.any():
            x, y = coords[outside][0]
            more = f" (and {int(outside.sum()) - 1} more)" if outside.sum() > 1 else ""
            warnings.warn(
                f"Point ({x:g}, {y:g}){more} lies outside the {w} x {h} image; it is used as given. Points are "
                f"(x, y) pixels, inside for 0 <= x <= {w} and 0 <= y <= {h}.",
                UserWarning,
                stacklevel=3,
            )

    if box is not None:
        boxes = _finite(box, "box")
        if boxes.shape != (4,) and (boxes.ndim != 2 or boxes.shape[-1] != 4 or boxes.shape[0] == 0):
            raise PromptError(f"box must be 4 numbers (x0, y0, x1, y1) or K x 4, got shape {boxes.shape}.")
        # A 1 x 4 box is one box, as the official predictor reads `box=input_box[None, :]`.
        sets["box"] = (boxes.shape[0], boxes.shape[0] > 1) if boxes.ndim == 2 else (1, False)
        boxes = boxes.reshape(-1, 4)
        flipped = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if flipped.any():
            raise PromptError(f"Box {boxes[flipped][0].tolist()} has x1 < x0 or y1 < y0; boxes are (x0, y0, x1, y1).")
        xs, ys = boxes[:, [0, 2]], boxes[:, [1, 3]]
        if (xs < 0).any() or (xs > w).any() or (ys < 0).any() or (ys > h).any():
            bad_box = np.any((xs < 0) | (xs > w) | (ys < 0) | (ys > h), axis=1)
            raise PromptError(
                f"Box {boxes[bad_box][0].tolist()} reaches outside the {w} x {h} image; clip it first "
                f"(np.clip(box, 0, [{w}, {h}, {w}, {h}]))."
            )

    if mask_input is not None:
        raw = np.asarray(mask_input)
        if raw.dtype == bool:
            raise PromptError(
                "mask_input holds low-resolution logits, not a boolean mask; convert a mask with "
                "alignsam.mask_to_logits(mask) (or predictor.mask_to_logits(mask))."
            )
        masks = _finite(raw, "mask_input").astype(np.float32)
        shape = masks.shape
        if shape == (mask_size, mask_size):
            masks = masks[None]
        if masks.shape[-2:] != (mask_size, mask_size) or masks.ndim not in (3, 4) or masks.shape[-3] != 1:
            raise PromptError(
                f"mask_input must be 1 x {mask_size} x {mask_size} low-resolution logits (or K x 1 x {mask_size} x "
                f"{mask_size}), got shape {shape}; alignsam.mask_to_logits turns a full-size mask into them."
            )
        sets["mask_input"] = (masks.shape[0], True) if masks.ndim == 4 else (1, False)
        masks = masks.reshape(-1, 1, mask_size, mask_size)

    ks = {k for k, _ in sets.values()}
    if len(ks) > 1:
        counts = {name: k for name, (k, _) in sets.items()}
        raise PromptError(f"The prompt parts disagree on the number of prompt sets: {counts}.")
    return PromptArrays(coords, labels, boxes, masks, batched=any(b for _, b in sets.values()))


def _finite(value: np.ndarray, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise PromptError(f"{name} must be numbers: {err}") from err
    if not np.isfinite(arr).all():
        raise PromptError(f"{name} holds NaN or infinite values.")
    return arr


def mask_to_logits(
    mask: np.ndarray | torch.Tensor,
    *,
    image_size: int = 1024,
    mask_size: int | None = None,
    logit_scale: float = 10.0,
) -> np.ndarray:
    """A mask at the original image size -> the `1 x L x L` low-resolution logits SAM takes as `mask_input`.

    The mask is resized the way the image is (longest side `image_size`), padded bottom/right like the model
    input, and averaged down to L x L (L = `mask_size`, default `image_size // 4`, i.e. 256). Each cell's
    coverage p in [0, 1] becomes the logit `logit_scale * (2p - 1)`: +10 inside, -10 outside and in the
    padding, 0 on the boundary, which is the range of SAM's own low-resolution logits.

    Args:
        mask: `H x W` (or `1 x H x W`) boolean mask, or soft mask with values in [0, 1].
    """
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2 or m.size == 0:
        raise InputError(f"mask_to_logits expects an H x W mask, got shape {m.shape}.")
    m = m.astype(np.float32)
    if not np.isfinite(m).all() or m.min() < 0 or m.max() > 1:
        raise InputError("mask_to_logits expects a boolean mask or values in [0, 1].")
    size = mask_size or image_size // 4
    if image_size % size:
        raise InputError(f"mask_size {size} must divide image_size {image_size}.")
    h, w = ResizeLongestSide.get_preprocess_shape(m.shape[0], m.shape[1], image_size)
    t = torch.from_numpy(m)[None, None]
    t = F.interpolate(t, (h, w), mode="bilinear", align_corners=False, antialias=True)
    t = F.pad(t, (0, image_size - w, 0, image_size - h))
    coverage = F.avg_pool2d(t, image_size // size).clamp(0, 1)
    return (logit_scale * (2 * coverage - 1))[0].numpy()
