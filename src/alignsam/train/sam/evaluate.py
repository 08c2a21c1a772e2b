"""How well a SAM segments held-out objects: mean IoU from one point, one box and several points, and how
many objects the automatic mask generator finds.

The protocol of the SAM paper (section 7.1, following RITM) at the original image resolution:

- one point: the pixel deepest inside the object; the model gives three masks and the one with the
  highest *predicted* IoU is scored (what a user gets). `oracle` scores the best of the three instead.
- one box: the object's box (pixel edges: x0 = first column, x1 = last column + 1), one mask.
- several points: the first point as above, then each next click at the pixel deepest inside the larger
  error (false negative: a positive click, false positive: a negative one), with the previous low-res
  logits as mask input and one mask out; scored after the last click.

Masks are the model's low-resolution logits upsampled to the image (`postprocess_masks`) and thresholded
at `mask_threshold`, as the predictor does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from alignsam.sam.modeling.sam import SamModel
from alignsam.sam.transforms import ResizeLongestSide
from alignsam.train.sam.data import Dataset, Sample, SampleError
from alignsam.train.sam.prepare import mask_boxes, prepare
from alignsam.train.sam.prompts import depth_map, interior_points


def masks_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU of `N x H x W` bool masks, pairwise in order: `N` (1 when both are empty)."""
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def _samples(data: Dataset, limit: int | None, skipped: dict[str, int]) -> Iterator[Sample]:
    count = len(data) if not limit else min(limit, len(data))
    for i in range(count):
        try:
            yield data.load(i)
        except SampleError as err:
            skipped[err.reason] = skipped.get(err.reason, 0) + 1


class _Scorer:
    """Prompts one image's objects (all at once) on its embedding and scores the masks."""

    def __init__(self, model: SamModel, embedding: torch.Tensor, sample: Sample) -> None:
        self.model, self.embedding = model, embedding
        self.gt = torch.from_numpy(sample.masks)  # N x H x W
        self.original = tuple(sample.image.shape[:2])
        self.transform = ResizeLongestSide(model.config.image_size)
        self.input = self.transform.target_size(self.original)

    def run(self, multimask: bool, **prompts: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Low-res logits `N x M x L x L`, predicted IoUs `N x M`, masks `N x M x H x W`."""
        out = self.model(image_embeddings=self.embedding, multimask_output=multimask, **prompts)
        logits = self.model.postprocess_masks(out.low_res_logits.float(), self.input, self.original)
        return out.low_res_logits, out.iou_predictions, logits > self.model.mask_threshold

    def coords(self, points: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.transform.apply_coords(points.numpy(), self.original), dtype=torch.float32)

    def box(self) -> torch.Tensor:
        boxes = torch.as_tensor(self.transform.apply_boxes(mask_boxes(self.gt.numpy()), self.original))
        _, _, masks = self.run(False, boxes=boxes.float())
        return masks_iou(masks[:, 0], self.gt)

    def points(self, clicks: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """IoUs after one point (predicted-best of 3, and the oracle's best) and after `clicks` points."""
        n = self.gt.shape[0]
        first, _ = interior_points(self.gt)
        points, labels = first[:, None], torch.ones(n, 1, dtype=torch.int)
        low_res, scores, masks = self.run(True, point_coords=self.coords(points), point_labels=labels)
        ious = torch.stack([masks_iou(masks[:, k], self.gt) for k in range(masks.shape[1])], dim=1)  # N x 3
        best = scores.argmax(1)
        one, oracle = ious.gather(1, best[:, None])[:, 0], ious.amax(1)
        previous, pred = low_res[torch.arange(n), best], masks[torch.arange(n), best]
        for _ in range(1, clicks):
            fn, fp = self.gt & ~pred, pred & ~self.gt
            p_fn, d_fn = interior_points(fn)
            p_fp, d_fp = interior_points(fp)
            positive = d_fn >= d_fp
            click = torch.where(positive[:, None], p_fn, p_fp)
            # an object already segmented exactly repeats its last click
            done = torch.maximum(d_fn, d_fp) == 0
            click = torch.where(done[:, None], points[:, -1], click)
            label = torch.where(done, labels[:, -1], positive.int())
            points, labels = torch.cat([points, click[:, None]], 1), torch.cat([labels, label[:, None]], 1)
            low_res, _, masks = self.run(
                False, point_coords=self.coords(points), point_labels=labels, mask_inputs=previous[:, None]
            )
            previous, pred = low_res[:, 0], masks[:, 0]
        return one, oracle, masks_iou(pred, self.gt)


@torch.no_grad()
def evaluate(
    model: SamModel,
    data: Dataset,
    *,
    max_samples: int | None = None,
    clicks: int = 3,
    batch_size: int = 8,
    progress: bool = False,
) -> dict[str, Any]:
    """Mean IoU of the held-out objects of `data` from one point, one box and `clicks` points.

    Returns:
        `{"images", "objects", "miou_point", "miou_point_oracle", "miou_box", "miou_points", "clicks",
        "skipped"}`; every object of every readable image counts once.
    """
    was_training = model.training
    model.eval()
    skipped: dict[str, int] = {}
    scores: dict[str, list[torch.Tensor]] = {"point": [], "oracle": [], "box": [], "points": []}
    images = 0
    samples = _samples(data, max_samples, skipped)
    from tqdm.auto import tqdm

    bar = tqdm(total=min(max_samples or len(data), len(data)), desc="evaluate", disable=not progress, leave=False)
    while chunk := [s for _, s in zip(range(batch_size), samples, strict=False)]:
        size = model.config.image_size
        pixels = []
        for sample in chunk:
            image = prepare(sample, 0, size, model.config.mask_input_size, max_masks=1).image
            assert image is not None
            pixels.append(model.preprocess(image[None].float().to(model.device)))
        embeddings = model.image_encoder(torch.cat(pixels).to(model.dtype))
        for i, sample in enumerate(chunk):
            scorer = _Scorer(model, embeddings[i : i + 1], sample)
            one, oracle, several = scorer.points(clicks)
            scores["point"].append(one)
            scores["oracle"].append(oracle)
            scores["points"].append(several)
            scores["box"].append(scorer.box())
        images += len(chunk)
        bar.update(len(chunk))
    bar.close()
    model.train(was_training)
    means = {k: float(torch.cat(v).mean()) if v else float("nan") for k, v in scores.items()}
    return {
        "images": images,
        "objects": int(sum(len(v) for v in scores["box"])),
        "miou_point": round(means["point"], 4),
        "miou_point_oracle": round(means["oracle"], 4),
        "miou_box": round(means["box"], 4),
        "miou_points": round(means["points"], 4),
        "clicks": clicks,
        "skipped": skipped,
    }


def automatic_recall(
    generator: Any, data: Dataset, *, max_samples: int | None = None, iou_threshold: float = 0.5
) -> dict[str, Any]:
    """Share of held-out objects that the automatic mask generator finds (some mask with IoU >= threshold).

    Args:
        generator: a `SamAutomaticMaskGenerator` (its `output_mode` is set to binary masks).
    Returns:
        `{"images", "objects", "found", "recall", "masks", "precision"}`; `precision` is the share of the
        generated masks that match some object.
    """
    generator.output_mode = "binary_mask"
    skipped: dict[str, int] = {}
    objects = found = masks_total = matched = images = 0
    for sample in _samples(data, max_samples, skipped):
        records = generator.generate(sample.image)
        gt = torch.from_numpy(sample.masks).flatten(1).float()  # N x HW
        images += 1
        objects += gt.shape[0]
        masks_total += len(records)
        if not records:
            continue
        pred = torch.from_numpy(np.stack([r["segmentation"] for r in records])).flatten(1).float()  # M x HW
        inter = gt @ pred.T  # N x M
        union = gt.sum(1)[:, None] + pred.sum(1)[None, :] - inter
        iou = inter / union.clamp_min(1)
        found += int((iou.amax(1) >= iou_threshold).sum())
        matched += int((iou.amax(0) >= iou_threshold).sum())
    return {
        "images": images,
        "objects": objects,
        "found": found,
        "recall": round(found / max(objects, 1), 4),
        "masks": masks_total,
        "precision": round(matched / max(masks_total, 1), 4),
        "skipped": skipped,
    }


__all__ = ["automatic_recall", "depth_map", "evaluate", "masks_iou"]
