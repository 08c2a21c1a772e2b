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

from alignsam.sam import SamAutomaticMaskGenerator, SamModel
from tests.sam.sam_testing import AMG_THRESHOLDS, compare_amg_records, region_masks_pair, tiny_config

RANDOM: dict[str, Any] = {**AMG_THRESHOLDS, "points_per_side": 8}


@pytest.fixture(scope="module")
def models(official: Any) -> tuple[Any, SamModel]:
    return region_masks_pair(tiny_config(image_size=512))


@pytest.mark.parametrize("name", ["rocket", "astronaut"])
def test_crops_and_coco_rle_match_official(official: Any, models: tuple[Any, SamModel], name: str) -> None:
    from skimage import data

    image = getattr(data, name)()  # 427 x 640 and 512 x 512
    reference, ours = models
    params = {**RANDOM, "crop_n_layers": 1, "crop_nms_thresh": 0.95, "output_mode": "coco_rle"}
    expected = official.SamAutomaticMaskGenerator(reference, **params).generate(image)
    got = SamAutomaticMaskGenerator(ours, **params).generate(image)
    compare_amg_records(official, reference, image, expected, got, f"{name}, crops, coco_rle")
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
    compare_amg_records(official, reference, image, expected, got, "coffee, min_mask_region_area=400")
    plain = SamAutomaticMaskGenerator(ours, **{**params, "min_mask_region_area": 0}).generate(image)
    changed = sum(not np.array_equal(a["segmentation"], b["segmentation"]) for a, b in zip(plain, got, strict=False))
    assert changed > 0 or len(plain) != len(got), "the clean-up changed nothing: the test would not catch a bug"
