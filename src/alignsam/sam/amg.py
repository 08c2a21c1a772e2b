"""Helpers of the automatic mask generator: RLE, stability score, point grids, crops, NMS, small regions.

Semantics follow the official `segment_anything/utils/amg.py`, without its optional dependencies:
- NMS is exact greedy NMS (boxes sorted by score with a stable sort, IoU compared in float64 like the
  torchvision kernel), so no torchvision is needed.
- COCO RLE, compressed and uncompressed, comes from `alignsam.io.rle` (numpy), byte for byte what
  pycocotools' `frPyObjects` produces, so no pycocotools is needed. The official names are kept here.
- Small regions are found with an 8-connected component labelling written in numpy
  (`alignsam.sam.small_regions`), so no OpenCV is needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import product
from typing import Any, TypeVar

import numpy as np
import torch

from alignsam.io.rle import Rle as Rle
from alignsam.io.rle import compress_rle, decode_rle, decompress_rle, encode_uncompressed_rle, rle_area

# Re-exported: the official amg module holds these too.
from alignsam.sam.small_regions import connected_components as connected_components
from alignsam.sam.small_regions import remove_small_regions as remove_small_regions

BoxT = TypeVar("BoxT", np.ndarray, torch.Tensor)


class MaskData:
    """Per-mask columns (tensors, arrays or lists of equal length) that are filtered and concatenated together."""

    def __init__(self, **kwargs: Any) -> None:
        for value in kwargs.values():
            _check_column(value)
        self._stats: dict[str, Any] = dict(kwargs)

    def __setitem__(self, key: str, item: Any) -> None:
        _check_column(item)
        self._stats[key] = item

    def __delitem__(self, key: str) -> None:
        del self._stats[key]

    def __getitem__(self, key: str) -> Any:
        return self._stats[key]

    def __contains__(self, key: str) -> bool:
        return key in self._stats

    def items(self) -> Any:
        return self._stats.items()

    def filter(self, keep: torch.Tensor) -> None:
        """Keep the rows selected by a boolean mask or an index tensor (in that order)."""
        keep = torch.as_tensor(keep)
        index = keep.nonzero().flatten() if keep.dtype == torch.bool else keep.long()
        for k, v in self._stats.items():
            if v is None:
                continue
            if isinstance(v, torch.Tensor):
                self._stats[k] = v[index.to(v.device)]
            elif isinstance(v, np.ndarray):
                self._stats[k] = v[index.cpu().numpy()]
            else:
                self._stats[k] = [v[i] for i in index.tolist()]

    def cat(self, new_stats: MaskData) -> None:
        """Append the rows of `new_stats`. Tensors and arrays are copied; list columns are copied as lists,
        their items shared (the official class deep-copies them: seconds for the RLEs of a 32 x 32 grid)."""
        for k, v in new_stats.items():
            if k not in self._stats or self._stats[k] is None:
                self._stats[k] = _copy_column(v)
            elif isinstance(v, torch.Tensor):
                self._stats[k] = torch.cat([self._stats[k], v], dim=0)
            elif isinstance(v, np.ndarray):
                self._stats[k] = np.concatenate([self._stats[k], v], axis=0)
            else:
                self._stats[k] = self._stats[k] + list(v)

    def to_numpy(self) -> None:
        for k, v in self._stats.items():
            if isinstance(v, torch.Tensor):
                self._stats[k] = v.detach().cpu().numpy()


def _copy_column(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    return None if value is None else list(value)


def _check_column(value: Any) -> None:
    if not isinstance(value, list | np.ndarray | torch.Tensor):
        raise TypeError(f"MaskData holds lists, numpy arrays and tensors, not {type(value).__name__}.")


def batch_iterator(batch_size: int, *args: Sequence[Any]) -> Iterator[list[Any]]:
    """Slices of `batch_size` rows of each argument (all of the same length)."""
    if not args or any(len(a) != len(args[0]) for a in args):
        raise ValueError("batch_iterator needs arguments of one common length.")
    for start in range(0, len(args[0]), batch_size):
        yield [a[start : start + batch_size] for a in args]


# ---------------------------------------------------------------------------------------------------------
# Run-length encoding.


def mask_to_rle_pytorch(tensor: torch.Tensor) -> list[Rle]:
    """`B x H x W` boolean masks -> uncompressed RLEs (column-major runs, starting with a run of zeros)."""
    return [encode_uncompressed_rle(mask) for mask in tensor.cpu().numpy()]


def rle_to_mask(rle: Rle) -> np.ndarray:
    """Uncompressed RLE -> `H x W` boolean mask."""
    return decode_rle(rle)


def area_from_rle(rle: Rle) -> int:
    return rle_area(rle)


def coco_encode_rle(uncompressed_rle: Rle) -> dict[str, Any]:
    """Uncompressed RLE -> COCO's compressed RLE `{"size": [h, w], "counts": str}` (pycocotools' format)."""
    return compress_rle(uncompressed_rle)


def coco_decode_rle(rle: dict[str, Any]) -> Rle:
    """Inverse of `coco_encode_rle`: compressed counts (str or bytes) -> uncompressed RLE."""
    return decompress_rle(rle)


# ---------------------------------------------------------------------------------------------------------
# Scores, grids, crops and boxes.


def calculate_stability_score(masks: torch.Tensor, mask_threshold: float, threshold_offset: float) -> torch.Tensor:
    """IoU of the masks thresholded at `threshold +- offset` (one always contains the other): `... x H x W` -> `...`."""
    intersections = (masks > (mask_threshold + threshold_offset)).sum((-1, -2), dtype=torch.int32)
    unions = (masks > (mask_threshold - threshold_offset)).sum((-1, -2), dtype=torch.int32)
    return intersections / unions


def build_point_grid(n_per_side: int) -> np.ndarray:
    """`n^2 x 2` points evenly spaced in [0, 1]^2 (cell centres), x varying fastest."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer; layer i has `n_per_side / scale_per_layer**i` points per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """XYXY crop boxes and their layer: the whole image, then `(2^(i+1))^2` overlapping crops in layer i+1."""
    crop_boxes, layer_idxs = [], []
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    crop_boxes.append([0, 0, im_w, im_h])
    layer_idxs.append(0)

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops)

    for i_layer in range(n_layers):
        n_crops_per_side = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_crops_per_side))
        crop_w = crop_len(im_w, n_crops_per_side, overlap)
        crop_h = crop_len(im_h, n_crops_per_side, overlap)
        crop_box_x0 = [int((crop_w - overlap) * i) for i in range(n_crops_per_side)]
        crop_box_y0 = [int((crop_h - overlap) * i) for i in range(n_crops_per_side)]
        for x0, y0 in product(crop_box_x0, crop_box_y0):
            crop_boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layer_idxs.append(i_layer + 1)
    return crop_boxes, layer_idxs


def uncrop_boxes_xyxy(boxes: torch.Tensor, crop_box: list[int]) -> torch.Tensor:
    x0, y0, _, _ = crop_box
    return boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)


def uncrop_points(points: torch.Tensor, crop_box: list[int]) -> torch.Tensor:
    x0, y0, _, _ = crop_box
    return points + torch.tensor([x0, y0], device=points.device)


def uncrop_masks(masks: torch.Tensor, crop_box: list[int], orig_h: int, orig_w: int) -> torch.Tensor:
    x0, y0, x1, y1 = crop_box
    if x0 == 0 and y0 == 0 and x1 == orig_w and y1 == orig_h:
        return masks
    pad_x, pad_y = orig_w - (x1 - x0), orig_h - (y1 - y0)
    return torch.nn.functional.pad(masks, (x0, pad_x - x0, y0, pad_y - y0), value=0)


def is_box_near_crop_edge(
    boxes: torch.Tensor, crop_box: list[int], orig_box: list[int], atol: float = 20.0
) -> torch.Tensor:
    """True for boxes within `atol` px of a crop edge that is not also an edge of the image."""
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float, device=boxes.device)
    boxes = uncrop_boxes_xyxy(boxes, crop_box).float()
    near_crop_edge = torch.isclose(boxes, crop[None, :], atol=atol, rtol=0)
    near_image_edge = torch.isclose(boxes, orig[None, :], atol=atol, rtol=0)
    return torch.any(near_crop_edge & ~near_image_edge, dim=1)


def box_xyxy_to_xywh(box_xyxy: BoxT) -> BoxT:
    """One XYXY box -> XYWH, as a new array or tensor of the same kind."""
    box = box_xyxy.clone() if isinstance(box_xyxy, torch.Tensor) else np.array(box_xyxy, copy=True)
    box[2] = box[2] - box[0]
    box[3] = box[3] - box[1]
    return box


def batched_mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """XYXY boxes (inclusive pixel indices) around `... x H x W` masks; `[0, 0, 0, 0]` for an empty mask."""
    if masks.numel() == 0:  # float zeros, as the official code returns
        return torch.zeros(*masks.shape[:-2], 4, device=masks.device)
    shape = masks.shape
    h, w = shape[-2:]
    masks = masks.flatten(0, -3) if masks.ndim > 2 else masks.unsqueeze(0)

    in_height = masks.amax(dim=-1)  # rows that hold a pixel
    in_height_coords = in_height * torch.arange(h, device=masks.device)[None, :]
    bottom_edges = in_height_coords.amax(dim=-1)
    top_edges = (in_height_coords + h * (~in_height)).amin(dim=-1)

    in_width = masks.amax(dim=-2)
    in_width_coords = in_width * torch.arange(w, device=masks.device)[None, :]
    right_edges = in_width_coords.amax(dim=-1)
    left_edges = (in_width_coords + w * (~in_width)).amin(dim=-1)

    empty = (right_edges < left_edges) | (bottom_edges < top_edges)
    out = torch.stack([left_edges, top_edges, right_edges, bottom_edges], dim=-1) * (~empty).unsqueeze(-1)
    return out.reshape(*shape[:-2], 4) if len(shape) > 2 else out[0]


# ---------------------------------------------------------------------------------------------------------
# Non-maximum suppression.


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """`N x 4` XYXY -> `N` areas."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: indices of the kept boxes, by decreasing score (ties keep their input order).

    A box is dropped when its IoU with a kept, higher-scoring box is greater than `iou_threshold`.
    """
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order]
    area = box_area(b)
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    iou = inter / (area[:, None] + area[None, :] - inter)
    # The reference kernel compares the float IoU with the threshold as a double.
    suppresses = (iou.double() > iou_threshold).cpu().numpy()
    removed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if removed[i]:
            continue
        keep.append(i)
        removed |= suppresses[i]
    return order[torch.as_tensor(keep, device=order.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS within each category of `idxs`; kept indices sorted by decreasing score."""
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    kept = []
    for category in torch.unique(idxs):
        members = torch.nonzero(idxs == category).flatten()
        kept.append(members[nms(boxes[members], scores[members], iou_threshold)])
    keep = torch.cat(kept)
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]
