"""Automatic masks: the same masks as the official `SamAutomaticMaskGenerator` on real photographs.

Both generators run their public `generate` with the same parameters on the same weights (a small SAM,
512 px, whose random weights are shaped so that masks are image regions; see
`region_masks_pair`). Thresholds are lowered so that masks pass with random weights; crops,
NMS within and across crops, small-region clean-up (official: OpenCV) and COCO RLE (official: pycocotools)
are all exercised.

What must agree: the number and order of masks, boxes, areas, points, crop boxes, predicted IoUs (1e-4),
stability scores (1e-3) and the masks themselves, pixel for pixel, except where the official model's
full-size logit is within 1e-3 of the threshold (checked by re-running the official predictor for that
mask's point).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from alignsam.sam import SamAutomaticMaskGenerator, SamModel
from alignsam.sam.amg import coco_decode_rle, rle_to_mask
from tests.sam.sam_testing import AMG_THRESHOLDS, region_masks_pair, tiny_config

MASK_MARGIN = 1e-3
RANDOM: dict[str, Any] = {**AMG_THRESHOLDS, "points_per_side": 8}


@pytest.fixture(scope="module")
def models(official: Any) -> tuple[Any, SamModel]:
    return region_masks_pair(tiny_config(image_size=512))


def _mask(record: dict[str, Any]) -> np.ndarray:
    seg = record["segmentation"]
    if isinstance(seg, np.ndarray):
        return seg
    return rle_to_mask(coco_decode_rle(seg) if isinstance(seg["counts"], str) else seg)


def _official_logits(official: Any, reference: Any, image: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """The official full-size logits of the output that produced `record` (recomputed for its point)."""
    x0, y0, w, h = (int(v) for v in record["crop_box"])
    predictor = official.SamPredictor(reference)
    predictor.set_image(image[y0 : y0 + h, x0 : x0 + w])
    point = np.array(record["point_coords"]) - [x0, y0]
    coords = torch.as_tensor(predictor.transform.apply_coords(point, (h, w)))[None]
    logits, _, _ = predictor.predict_torch(coords, torch.ones(1, 1, dtype=torch.int), return_logits=True)
    full = np.zeros((3, *image.shape[:2]), dtype=np.float32)
    full[:, y0 : y0 + h, x0 : x0 + w] = logits[0].numpy()
    mask = _mask(record)
    return full[np.argmin([((m > 0) != mask).sum() for m in full])]


def _compare(official: Any, reference: Any, image: np.ndarray, expected: list, got: list, tag: str) -> None:
    assert len(got) == len(expected) > 0
    flips = 0
    for ref, ours in zip(expected, got, strict=True):
        assert ours.keys() == ref.keys()
        assert ours["crop_box"] == ref["crop_box"]
        assert ours["point_coords"] == ref["point_coords"]
        assert abs(ours["predicted_iou"] - ref["predicted_iou"]) < 1e-4
        assert abs(ours["stability_score"] - ref["stability_score"]) < 1e-3
        ref_mask, our_mask = _mask(ref), _mask(ours)
        assert our_mask.sum() == ours["area"] and ref_mask.sum() == ref["area"]
        differ = ref_mask != our_mask
        if differ.any():
            logits = _official_logits(official, reference, image, ref)
            assert np.all(np.abs(logits[differ]) < MASK_MARGIN), "masks differ away from the threshold"
            flips += int(differ.sum())
        else:
            assert ours["bbox"] == ref["bbox"] and ours["area"] == ref["area"]
            if not isinstance(ref["segmentation"], np.ndarray):
                assert ours["segmentation"] == ref["segmentation"]  # RLE dicts, COCO strings included
    print(f"\n[amg {tag}] {len(got)} masks, {flips} pixels differ (all within {MASK_MARGIN} of the threshold)")


@pytest.mark.parametrize("name", ["rocket", "astronaut"])
def test_crops_and_coco_rle_match_official(official: Any, models: tuple[Any, SamModel], name: str) -> None:
    from skimage import data

    image = getattr(data, name)()  # 427 x 640 and 512 x 512
    reference, ours = models
    params = {**RANDOM, "crop_n_layers": 1, "crop_nms_thresh": 0.95, "output_mode": "coco_rle"}
    expected = official.SamAutomaticMaskGenerator(reference, **params).generate(image)
    got = SamAutomaticMaskGenerator(ours, **params).generate(image)
    _compare(official, reference, image, expected, got, f"{name}, crops, coco_rle")
    if name == "rocket":
        assert len({tuple(r["crop_box"]) for r in got}) > 1, "no mask came from a crop: the crop path is untested"
    assert all(isinstance(r["segmentation"]["counts"], str) for r in got)


def test_small_region_postprocessing_matches_official(official: Any, models: tuple[Any, SamModel]) -> None:
    from skimage import data

    image = data.coffee()  # 400 x 600
    reference, ours = models
    params = {**RANDOM, "min_mask_region_area": 400, "output_mode": "binary_mask"}
    expected = official.SamAutomaticMaskGenerator(reference, **params).generate(image)
    got = SamAutomaticMaskGenerator(ours, **params).generate(image)
    _compare(official, reference, image, expected, got, "coffee, min_mask_region_area=400")
    plain = SamAutomaticMaskGenerator(ours, **{**params, "min_mask_region_area": 0}).generate(image)
    changed = sum(not np.array_equal(a["segmentation"], b["segmentation"]) for a, b in zip(plain, got, strict=False))
    assert changed > 0 or len(plain) != len(got), "the clean-up changed nothing: the test would not catch a bug"
