"""The automatic-mask helpers against their references: pycocotools, OpenCV, the official amg utilities."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from alignsam.sam import amg
from tests.sam.sam_testing import reference_batched_nms, reference_nms


def _masks(seed: int, n: int = 6, h: int = 37, w: int = 53) -> torch.Tensor:
    """Random blobby masks plus the edge cases: empty, full, first pixel set, a single pixel."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, 1, h // 4 + 1, w // 4 + 1, generator=gen)
    blobs = torch.nn.functional.interpolate(noise, (h, w), mode="bilinear")[:, 0] > 0.55
    extra = torch.zeros(4, h, w, dtype=torch.bool)
    extra[1] = True
    extra[2, 0, 0] = True
    extra[3, h - 1, w - 1] = True
    return torch.cat([blobs, extra])


def test_rle_matches_official(official: Any) -> None:
    from segment_anything.utils import amg as ref

    masks = _masks(0)
    rles = amg.mask_to_rle_pytorch(masks)
    assert rles == ref.mask_to_rle_pytorch(masks)
    for rle, mask in zip(rles, masks, strict=True):
        np.testing.assert_array_equal(amg.rle_to_mask(rle), mask.numpy())
        assert amg.area_from_rle(rle) == int(mask.sum())
    assert amg.mask_to_rle_pytorch(torch.zeros(0, 4, 5, dtype=torch.bool)) == []


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' own numpy 2 warning
def test_coco_rle_matches_pycocotools() -> None:
    from pycocotools import mask as mask_utils

    masks = torch.cat([_masks(1), _masks(2, h=300, w=211)[:, :37, :53]])
    for rle in amg.mask_to_rle_pytorch(masks):
        h, w = rle["size"]
        expected = mask_utils.frPyObjects(rle, h, w)
        ours = amg.coco_encode_rle(rle)
        assert ours == {"size": [h, w], "counts": expected["counts"].decode("utf-8")}
        assert amg.coco_decode_rle(ours) == rle
        decoded = mask_utils.decode({"size": [h, w], "counts": ours["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), amg.rle_to_mask(rle))
    # Large counts need several 5-bit groups and negative differences.
    rle = {"size": [1000, 1000], "counts": [5, 300_000, 7, 2, 650_000, 42_986]}
    expected = mask_utils.frPyObjects(rle, 1000, 1000)["counts"].decode()
    assert amg.coco_encode_rle(rle)["counts"] == expected
    assert amg.coco_decode_rle(amg.coco_encode_rle(rle))["counts"] == rle["counts"]


def test_stability_score_and_boxes_match_official(official: Any) -> None:
    from segment_anything.utils import amg as ref

    logits = torch.randn(5, 3, 40, 30) * 3
    torch.testing.assert_close(
        amg.calculate_stability_score(logits, 0.0, 1.0), ref.calculate_stability_score(logits, 0.0, 1.0)
    )
    masks = _masks(3)
    torch.testing.assert_close(amg.batched_mask_to_box(masks), ref.batched_mask_to_box(masks))
    torch.testing.assert_close(amg.batched_mask_to_box(masks[0]), ref.batched_mask_to_box(masks[0]))
    empty = torch.zeros(0, 7, 9, dtype=torch.bool)
    torch.testing.assert_close(amg.batched_mask_to_box(empty), ref.batched_mask_to_box(empty))


def test_grids_and_crops_match_official(official: Any) -> None:
    from segment_anything.utils import amg as ref

    for args in [(32, 0, 1), (16, 2, 2), (5, 1, 1)]:
        for ours, expected in zip(
            amg.build_all_layer_point_grids(*args), ref.build_all_layer_point_grids(*args), strict=True
        ):
            np.testing.assert_array_equal(ours, expected)
    for size, layers, ratio in [((400, 600), 0, 0.3), ((427, 640), 2, 512 / 1500), ((1000, 37), 1, 0.5)]:
        assert amg.generate_crop_boxes(size, layers, ratio) == ref.generate_crop_boxes(size, layers, ratio)
    boxes = torch.tensor([[0, 0, 10, 10], [15, 20, 100, 80], [50, 5, 98, 60], [3, 3, 90, 95]])
    for crop in ([0, 0, 100, 100], [10, 10, 110, 90]):
        torch.testing.assert_close(
            amg.is_box_near_crop_edge(boxes, crop, [0, 0, 200, 100]),
            ref.is_box_near_crop_edge(boxes, crop, [0, 0, 200, 100]),
        )
        torch.testing.assert_close(amg.uncrop_boxes_xyxy(boxes, crop), ref.uncrop_boxes_xyxy(boxes, crop))
        masks = _masks(4, h=80, w=100)
        torch.testing.assert_close(amg.uncrop_masks(masks, crop, 120, 130), ref.uncrop_masks(masks, crop, 120, 130))


def _random_boxes(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    xy = torch.randint(0, 60, (n, 2), generator=gen)
    wh = torch.randint(0, 40, (n, 2), generator=gen)
    boxes = torch.cat([xy, xy + wh], dim=1).float()
    boxes[5] = boxes[4]  # a duplicate
    scores = torch.randint(0, 8, (n,), generator=gen).float() / 8  # many ties
    return boxes, scores


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7, 0.95, 1.0])
def test_nms_matches_reference(threshold: float) -> None:
    boxes, scores = _random_boxes(int(threshold * 100), 120)
    keep = amg.nms(boxes, scores, threshold)
    assert keep.tolist() == reference_nms(boxes, scores, threshold)
    assert 0 < len(keep) <= len(boxes)
    categories = torch.randint(0, 3, (len(boxes),))
    assert (
        amg.batched_nms(boxes, scores, categories, threshold).tolist()
        == reference_batched_nms(boxes, scores, categories, threshold).tolist()
    )
    assert amg.nms(boxes[:0], scores[:0], threshold).numel() == 0


def test_nms_compares_iou_as_float64() -> None:
    # IoU exactly 0.5 in float32; with a threshold of 0.5 the box survives (IoU must be *greater*).
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 2.0, 1.0]])
    assert amg.nms(boxes, torch.tensor([1.0, 0.5]), 0.5).tolist() == [0, 1]
    assert amg.nms(boxes, torch.tensor([1.0, 0.5]), 0.49).tolist() == [0]


def _blobs(seed: int, h: int = 120, w: int = 90, density: float = 0.5) -> np.ndarray:
    gen = np.random.default_rng(seed)
    small = gen.random((h // 6, w // 6)) > density
    mask = np.kron(small, np.ones((6, 6), dtype=bool))[:h, :w]
    return mask ^ (gen.random((h, w)) > 0.97)  # sprinkle single-pixel islands and holes


@pytest.mark.parametrize("seed", range(4))
def test_connected_components_match_opencv(seed: int) -> None:
    import cv2

    mask = _blobs(seed)
    labels, sizes = amg.connected_components(mask)
    n, expected_labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    assert len(sizes) == n - 1
    # Same partition: a bijection between our labels and OpenCV's on every pixel.
    pairs = set(zip(labels[mask].tolist(), expected_labels[mask].tolist(), strict=True))
    assert len(pairs) == n - 1 == len({a for a, _ in pairs}) == len({b for _, b in pairs})
    assert sorted(sizes.tolist()) == sorted(stats[1:, cv2.CC_STAT_AREA].tolist())
    assert (labels == 0).sum() == (~mask).sum()
    for label, size in enumerate(sizes, start=1):
        assert (labels == label).sum() == size


def test_connected_components_edge_cases() -> None:
    labels, sizes = amg.connected_components(np.zeros((4, 5), dtype=bool))
    assert sizes.tolist() == [] and labels.max() == 0
    diagonal = np.eye(6, dtype=bool)  # 8-connected: one component
    assert amg.connected_components(diagonal)[1].tolist() == [6]
    spiral = np.zeros((9, 9), dtype=bool)
    spiral[0, :] = spiral[:, 8] = spiral[8, :] = spiral[2:, 0] = spiral[2, :7] = spiral[2:7, 6] = True
    assert amg.connected_components(spiral)[1].tolist() == [int(spiral.sum())]
    two = np.zeros((3, 7), dtype=bool)
    two[0, 0] = two[2, 6] = True
    labels, sizes = amg.connected_components(two)
    assert sizes.tolist() == [1, 1] and labels[0, 0] == 1 and labels[2, 6] == 2  # raster order


@pytest.mark.parametrize("mode", ["holes", "islands"])
@pytest.mark.parametrize("seed", range(3))
def test_remove_small_regions_matches_official(official: Any, mode: str, seed: int) -> None:
    from segment_anything.utils import amg as ref

    mask = _blobs(seed + 10, density=0.6 if mode == "islands" else 0.4)
    changes = []
    for area in (5, 40, 200, 10**6):
        ours, changed = amg.remove_small_regions(mask, area, mode)  # type: ignore[arg-type]
        expected, expected_changed = ref.remove_small_regions(mask, area, mode)
        assert changed == expected_changed
        np.testing.assert_array_equal(ours, expected)
        changes.append(changed)
    assert any(changes)


def test_mask_data_filter_and_cat() -> None:
    data = amg.MaskData(a=torch.arange(4), b=np.arange(4) * 10, c=["w", "x", "y", "z"])
    data.filter(torch.tensor([True, False, True, True]))
    data.filter(torch.tensor([2, 0]))
    assert data["a"].tolist() == [3, 0] and data["b"].tolist() == [30, 0] and data["c"] == ["z", "w"]
    data.cat(amg.MaskData(a=torch.tensor([9]), b=np.array([90]), c=["q"]))
    assert data["a"].tolist() == [3, 0, 9] and data["c"] == ["z", "w", "q"]
    with pytest.raises(TypeError):
        amg.MaskData(a=3)
