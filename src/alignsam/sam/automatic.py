"""`SamAutomaticMaskGenerator`: masks for everything in an image, from a grid of single-point prompts.

The official algorithm and parameters, with the same defaults: for the whole image (and, with
`crop_n_layers > 0`, for overlapping crops) a grid of points is prompted in batches, each point giving three
masks; masks are kept when their predicted IoU and stability score pass the thresholds, deduplicated by box
NMS within each crop and then across crops (smaller crops win), optionally cleaned of small holes and
islands, and returned as records like SA-1B's annotations.

Nothing beyond torch and numpy is needed: NMS, COCO RLE strings and the small-region clean-up
(`min_mask_region_area`) are implemented in `alignsam.sam.amg`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_args

import numpy as np
import torch

from alignsam.errors import InputError
from alignsam.fast import FastPath
from alignsam.io.images import DEFAULT_MAX_PIXELS, ImageInput, load_image_array
from alignsam.sam.amg import (
    MaskData,
    area_from_rle,
    batch_iterator,
    batched_mask_to_box,
    batched_nms,
    box_area,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    calculate_stability_score,
    coco_encode_rle,
    generate_crop_boxes,
    is_box_near_crop_edge,
    mask_to_rle_pytorch,
    remove_small_regions,
    rle_to_mask,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)
from alignsam.sam.modeling.sam import SamModel
from alignsam.sam.predictor import SamPredictor
from alignsam.validation import check_count, check_number

POSTPROCESS_CHUNK = 16
"""Masks resized to full size together, at most (each takes 4 MB at the 1024 px input size on the way)."""

FULL_SIZE_BYTES = 64 << 20
"""Full-size float32 logits made at once: on a large image fewer than `POSTPROCESS_CHUNK` masks (one for an image
of 16 Mpx and more), so that memory does not grow with the number of masks (docs/tools.md, "Memory")."""

OutputMode = Literal["binary_mask", "uncompressed_rle", "coco_rle"]

AMG_FILE = "amg.json"
"""The file beside a model's weights that recommends automatic-mask settings (the demo SAM has one)."""


_COUNT_BOUNDS: dict[str, tuple[int, int | None]] = {
    "points_per_side": (1, 512),  # 262,144 prompts per crop; the official presets use 32 to 64
    "points_per_batch": (1, 1024),  # each point's 3 masks are held at the crop's size while filtered
    "crop_n_layers": (0, 4),  # 341 crops in all
    "crop_n_points_downscale_factor": (1, 64),
    "min_mask_region_area": (0, None),
}
"""Whole-number settings of `AmgConfig` and their bounds: the upper ones keep a typo (`--points-per-batch
100000`) from asking for more memory than any machine has, far above any published setting."""


@dataclasses.dataclass(frozen=True)
class AmgConfig:
    """The automatic mask generator's parameters, with the official defaults (tuned for vit_h).

    The one place they are written: the generator, the command line, the service and a model folder's
    `amg.json` all read this class. `AmgConfig.for_model(model)` is the defaults with the model's own
    recommendation applied.

    Attributes:
        points_per_side: the grid has `points_per_side**2` points; None when explicit point grids are given.
        points_per_batch: points prompted together (memory grows with it).
        pred_iou_thresh: keep masks whose predicted IoU is above this (0 disables the filter).
        stability_score_thresh: keep masks whose stability score is at least this (0 disables it).
        stability_score_offset: the logit offset of the stability score (IoU of masks at +-offset).
        box_nms_thresh: box IoU above which a lower-scoring mask of the same crop is dropped.
        crop_n_layers: layers of crops; layer i has `(2**i)**2` crops.
        crop_nms_thresh: box IoU for NMS between crops.
        crop_overlap_ratio: overlap of neighbouring crops in the first layer, as a fraction of the short side.
        crop_n_points_downscale_factor: points per side shrink by this factor per layer.
        min_mask_region_area: fill holes and drop islands below this area (px), then NMS again.
        output_mode: "binary_mask" (`H x W` bool arrays), "uncompressed_rle" or "coco_rle".
    """

    points_per_side: int | None = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    output_mode: OutputMode = "binary_mask"

    def __post_init__(self) -> None:
        for name, (low, high) in _COUNT_BOUNDS.items():
            if name != "points_per_side":
                object.__setattr__(self, name, check_count(getattr(self, name), name, low, high))
        for name in ("pred_iou_thresh", "stability_score_thresh", "stability_score_offset"):
            object.__setattr__(self, name, check_number(getattr(self, name), name))
        for name in ("box_nms_thresh", "crop_nms_thresh", "crop_overlap_ratio"):
            object.__setattr__(self, name, check_number(getattr(self, name), name, 0, 1))
        if self.points_per_side is not None:
            low, high = _COUNT_BOUNDS["points_per_side"]
            object.__setattr__(self, "points_per_side", check_count(self.points_per_side, "points_per_side", low, high))
            if int(self.points_per_side / self.crop_n_points_downscale_factor**self.crop_n_layers) < 1:
                raise InputError(
                    f"points_per_side {self.points_per_side} leaves no points in crop layer {self.crop_n_layers} "
                    f"(downscale factor {self.crop_n_points_downscale_factor})."
                )
        if self.output_mode not in get_args(OutputMode):
            raise InputError(f"output_mode must be one of {get_args(OutputMode)}, got {self.output_mode!r}.")

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def for_model(cls, model: SamModel) -> AmgConfig:
        """The defaults, with what `model` recommends (its folder's `amg.json`, read by `from_pretrained`)."""
        return cls().replace(**model.recommended.get(AMG_FILE, {}))

    def replace(self, **changes: Any) -> AmgConfig:
        """A copy with `changes` (None values are ignored); unknown names are an `InputError`."""
        unknown = sorted(set(changes) - set(self.fields()))
        if unknown:
            raise InputError(f"Unknown automatic-mask settings {unknown}; known: {list(self.fields())}.")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


class SamAutomaticMaskGenerator:
    """Generates masks for a whole image. Unset parameters take the model's recommendation (an `amg.json`
    beside its weights, as the demo SAM has), else the official defaults (tuned for vit_h); see `AmgConfig`."""

    def __init__(
        self,
        model: SamModel,
        points_per_side: int | None = None,
        points_per_batch: int | None = None,
        pred_iou_thresh: float | None = None,
        stability_score_thresh: float | None = None,
        stability_score_offset: float | None = None,
        box_nms_thresh: float | None = None,
        crop_n_layers: int | None = None,
        crop_nms_thresh: float | None = None,
        crop_overlap_ratio: float | None = None,
        crop_n_points_downscale_factor: int | None = None,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int | None = None,
        output_mode: OutputMode | None = None,
        *,
        config: AmgConfig | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        fast: FastPath | None = None,
    ) -> None:
        """
        Args:
            model: the SAM.
            points_per_side ... output_mode: as the official generator (see `AmgConfig`); None takes the
                setting of `config`, else the model's recommendation, else the official default.
            point_grids: explicit `N x 2` grids in [0, 1], one per layer (then points_per_side stays None).
            config: all settings at once, instead of the model's recommendation.
            max_pixels: larger images are refused (None: no limit).
            fast: speed options for the image encoder (see `SamPredictor`).
        """
        base = config if config is not None else AmgConfig.for_model(model)
        if point_grids is not None:
            if points_per_side is not None:
                raise InputError("Give exactly one of points_per_side and point_grids.")
            base = dataclasses.replace(base, points_per_side=None)
        settings = base.replace(
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            stability_score_offset=stability_score_offset,
            box_nms_thresh=box_nms_thresh,
            crop_n_layers=crop_n_layers,
            crop_nms_thresh=crop_nms_thresh,
            crop_overlap_ratio=crop_overlap_ratio,
            crop_n_points_downscale_factor=crop_n_points_downscale_factor,
            min_mask_region_area=min_mask_region_area,
            output_mode=output_mode,
        )
        if settings.points_per_side is not None:
            self.point_grids = build_all_layer_point_grids(
                settings.points_per_side, settings.crop_n_layers, settings.crop_n_points_downscale_factor
            )
        elif point_grids is None:
            raise InputError("Give exactly one of points_per_side and point_grids.")
        else:
            if len(point_grids) != settings.crop_n_layers + 1:
                raise InputError(
                    f"point_grids needs one grid per layer ({settings.crop_n_layers + 1}), got {len(point_grids)}."
                )
            self.point_grids = [np.asarray(g, dtype=float) for g in point_grids]
        self.config = settings
        self.predictor = SamPredictor(model, max_pixels=max_pixels, fast=fast)
        self.points_per_batch = settings.points_per_batch
        self.pred_iou_thresh = settings.pred_iou_thresh
        self.stability_score_thresh = settings.stability_score_thresh
        self.stability_score_offset = settings.stability_score_offset
        self.box_nms_thresh = settings.box_nms_thresh
        self.crop_n_layers = settings.crop_n_layers
        self.crop_nms_thresh = settings.crop_nms_thresh
        self.crop_overlap_ratio = settings.crop_overlap_ratio
        self.crop_n_points_downscale_factor = settings.crop_n_points_downscale_factor
        self.min_mask_region_area = settings.min_mask_region_area
        self.output_mode = settings.output_mode

    @torch.no_grad()
    def generate(self, image: ImageInput) -> list[dict[str, Any]]:
        """Masks for `image` (`H x W x 3` uint8 RGB, or anything `alignsam.io.load_image` reads).

        Returns one record per mask: `segmentation` (per `output_mode`), `area` (px), `bbox` (XYWH),
        `predicted_iou`, `point_coords` (`[[x, y]]`), `stability_score` and `crop_box` (XYWH).
        """
        array = load_image_array(image, max_pixels=self.predictor.max_pixels)
        mask_data = self._generate_masks(array)
        if self.min_mask_region_area > 0:
            mask_data = self.postprocess_small_regions(
                mask_data, self.min_mask_region_area, max(self.box_nms_thresh, self.crop_nms_thresh)
            )
        segmentations: list[Any]
        if self.output_mode == "coco_rle":
            segmentations = [coco_encode_rle(rle) for rle in mask_data["rles"]]
        elif self.output_mode == "binary_mask":
            segmentations = [rle_to_mask(rle) for rle in mask_data["rles"]]
        else:
            segmentations = mask_data["rles"]
        records = []
        for idx, segmentation in enumerate(segmentations):
            records.append(
                {
                    "segmentation": segmentation,
                    "area": area_from_rle(mask_data["rles"][idx]),
                    "bbox": box_xyxy_to_xywh(mask_data["boxes"][idx]).tolist(),
                    "predicted_iou": mask_data["iou_preds"][idx].item(),
                    "point_coords": [mask_data["points"][idx].tolist()],
                    "stability_score": mask_data["stability_score"][idx].item(),
                    "crop_box": box_xyxy_to_xywh(mask_data["crop_boxes"][idx]).tolist(),
                }
            )
        return records

    def _generate_masks(self, image: np.ndarray) -> MaskData:
        orig_size = (image.shape[0], image.shape[1])
        crop_boxes, layer_idxs = generate_crop_boxes(orig_size, self.crop_n_layers, self.crop_overlap_ratio)
        data = MaskData()
        for crop_box, layer_idx in zip(crop_boxes, layer_idxs, strict=True):
            data.cat(self._process_crop(image, crop_box, layer_idx, orig_size))
        if len(crop_boxes) > 1 and len(data["rles"]) > 0:
            # Deduplicate across crops, preferring masks from smaller crops.
            scores = 1 / box_area(data["crop_boxes"])
            keep = batched_nms(
                data["boxes"].float(),
                scores.to(data["boxes"].device),
                torch.zeros(len(data["boxes"])),
                iou_threshold=self.crop_nms_thresh,
            )
            data.filter(keep)
        data.to_numpy()
        return data

    def _process_crop(
        self, image: np.ndarray, crop_box: list[int], layer_idx: int, orig_size: tuple[int, int]
    ) -> MaskData:
        x0, y0, x1, y1 = crop_box
        cropped = image[y0:y1, x0:x1, :]
        cropped_size = (cropped.shape[0], cropped.shape[1])
        self.predictor.set_image(cropped)
        points_for_image = self.point_grids[layer_idx] * np.array(cropped_size)[None, ::-1]
        data = MaskData()
        for (points,) in batch_iterator(self.points_per_batch, points_for_image):
            data.cat(self._process_batch(points, cropped_size, crop_box, orig_size))
        self.predictor.reset_image()

        keep = batched_nms(
            data["boxes"].float(), data["iou_preds"], torch.zeros(len(data["boxes"])), iou_threshold=self.box_nms_thresh
        )
        data.filter(keep)
        data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = torch.tensor([crop_box for _ in range(len(data["rles"]))], dtype=torch.long).reshape(-1, 4)
        return data

    def _process_batch(
        self, points: np.ndarray, im_size: tuple[int, int], crop_box: list[int], orig_size: tuple[int, int]
    ) -> MaskData:
        orig_h, orig_w = orig_size
        # Points stay float64 until the prompt encoder, as in the official code.
        transformed = self.predictor.transform.apply_coords(points, im_size)
        in_points = torch.as_tensor(transformed, device=self.predictor.device)
        in_labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
        low_res, iou_preds = self.predictor.decode_torch(in_points[:, None, :], in_labels[:, None])
        data = MaskData(
            masks=low_res.flatten(0, 1),
            iou_preds=iou_preds.flatten(0, 1),
            points=torch.as_tensor(points.repeat(low_res.shape[1], axis=0)),
        )
        del low_res
        if self.pred_iou_thresh > 0.0:
            data.filter(data["iou_preds"] > self.pred_iou_thresh)
        # Only the masks that passed are brought to full size (the official code resizes every mask first;
        # each mask is resized on its own, so the kept ones are the same either way), a few at a time: each
        # chunk is scored, thresholded, boxed and run-length encoded before the next is made, so memory holds
        # `full_size_chunk` full-size masks and the RLEs of the masks kept, whatever the image's size.
        threshold = self.predictor.model.mask_threshold
        scores, boxes, rles, kept = [], [], [], []
        for start in range(0, len(data["iou_preds"]), self._chunk(orig_size)):
            logits = self._full_size(data["masks"][start : start + self._chunk(orig_size)])
            stability = calculate_stability_score(logits, threshold, self.stability_score_offset)
            keep = stability >= self.stability_score_thresh if self.stability_score_thresh > 0.0 else None
            if keep is not None:
                logits, stability = logits[keep], stability[keep]
            masks = logits > threshold
            del logits
            chunk_boxes = batched_mask_to_box(masks)
            inside = ~is_box_near_crop_edge(chunk_boxes, crop_box, [0, 0, orig_w, orig_h])
            index = torch.arange(start, start + len(inside))
            if keep is not None:
                index = torch.arange(start, start + len(keep))[keep]
            scores.append(stability[inside])
            boxes.append(chunk_boxes[inside])
            rles.extend(mask_to_rle_pytorch(uncrop_masks(masks[inside], crop_box, orig_h, orig_w)))
            kept.append(index[inside])
        del data["masks"]
        data.filter(torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long))
        data["stability_score"] = torch.cat(scores) if scores else torch.zeros(0)
        data["boxes"] = torch.cat(boxes) if boxes else torch.zeros(0, 4, dtype=torch.long)
        data["rles"] = rles
        return data

    @staticmethod
    def _chunk(size: tuple[int, int]) -> int:
        """Masks brought to full size together: as many as fit in `FULL_SIZE_BYTES` of float32 logits."""
        return max(1, min(POSTPROCESS_CHUNK, FULL_SIZE_BYTES // (4 * size[0] * size[1])))

    def _full_size(self, low_res: torch.Tensor) -> torch.Tensor:
        """`N x 256 x 256` low-resolution logits -> `N x H x W` logits at the crop's size."""
        im_size, input_size = self.predictor.original_sizes[0], self.predictor.input_sizes[0]
        if not len(low_res):
            return low_res.new_empty(0, *im_size)
        return self.predictor.model.postprocess_masks(low_res[:, None], input_size, im_size)[:, 0]

    @staticmethod
    def postprocess_small_regions(mask_data: MaskData, min_area: int, nms_thresh: float) -> MaskData:
        """Fill holes and drop islands below `min_area`, then NMS again preferring unchanged masks (in place)."""
        if len(mask_data["rles"]) == 0:
            return mask_data
        # One mask at a time at full size: the cleaned masks are kept as RLEs, never all at once.
        cleaned, box_rows, scores = [], [], []
        for rle in mask_data["rles"]:
            mask = rle_to_mask(rle)
            mask, changed_holes = remove_small_regions(mask, min_area, mode="holes")
            mask, changed_islands = remove_small_regions(mask, min_area, mode="islands")
            changed = changed_holes or changed_islands
            as_tensor = torch.as_tensor(mask).unsqueeze(0)
            box_rows.append(batched_mask_to_box(as_tensor)[0])
            cleaned.append(mask_to_rle_pytorch(as_tensor)[0] if changed else rle)
            scores.append(float(not changed))  # unchanged masks win the NMS
        boxes = torch.stack(box_rows)
        keep = batched_nms(boxes.float(), torch.as_tensor(scores), torch.zeros(len(boxes)), iou_threshold=nms_thresh)
        for i in keep.tolist():
            if scores[i] == 0.0:
                mask_data["rles"][i] = cleaned[i]
                mask_data["boxes"][i] = boxes[i]
        mask_data.filter(keep)
        return mask_data
