"""Prompt simulation: points inside objects, clicks in the error, jittered boxes, evaluation clicks."""

from __future__ import annotations

import numpy as np
import torch

from alignsam.synthetic import SceneConfig, SceneGenerator
from alignsam.train.sam.prepare import coverage_targets, mask_boxes
from alignsam.train.sam.prompts import (
    depth_map,
    error_points,
    interior_points,
    jitter_boxes,
    points_inside,
    valid_cells,
)

SIZE, CELLS = 128, 64  # the demo model's frame: 2 x 2 pixels per cell


def _objects(n_scenes: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-resolution masks `P x 128 x 128` of synthetic objects, and their coverage targets `P x 64 x 64`."""
    gen = SceneGenerator(SceneConfig(image_size=SIZE), seed=11)
    masks = torch.from_numpy(np.concatenate([gen[i].masks for i in range(n_scenes)]))
    return masks, coverage_targets(masks, SIZE, CELLS)


def test_first_points_lie_inside_their_object() -> None:
    masks, cov = _objects()
    sizes = torch.full((len(masks), 2), SIZE)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        pts = points_inside(cov, SIZE, sizes, gen).long()
        assert pts.dtype == torch.long and pts.min() >= 0 and pts.max() < SIZE
        inside = masks[torch.arange(len(masks)), pts[:, 1], pts[:, 0]]
        assert bool(inside.all())
    # they spread over the object rather than sitting at one place
    spread = torch.stack([points_inside(cov[:1], SIZE, sizes[:1], gen)[0] for _ in range(50)]).std(0)
    assert bool((spread > 1.0).all())


def test_error_clicks_are_positive_in_misses_and_negative_in_false_parts() -> None:
    masks, cov = _objects()
    p = len(masks)
    sizes = torch.full((p, 2), SIZE)
    gen = torch.Generator().manual_seed(1)
    # predictions that miss everything: every click positive, inside the object
    pts, labels = error_points(torch.full((p, CELLS, CELLS), -5.0), cov, SIZE, sizes, gen)
    assert bool((labels == 1).all())
    assert bool(masks[torch.arange(p), pts[:, 1].long(), pts[:, 0].long()].all())
    # predictions that are the whole image: every click negative, outside the object
    pts, labels = error_points(torch.full((p, CELLS, CELLS), 5.0), cov, SIZE, sizes, gen)
    assert bool((labels == 0).all())
    assert not bool(masks[torch.arange(p), pts[:, 1].long(), pts[:, 0].long()].any())
    # a perfect prediction gets a positive click inside
    perfect = torch.where(cov >= 0.5, 5.0, -5.0)
    pts, labels = error_points(perfect, cov, SIZE, sizes, gen)
    assert bool((labels == 1).all())


def test_error_clicks_never_fall_in_the_padding() -> None:
    cov = torch.zeros(1, CELLS, CELLS)
    cov[0, 10:20, 10:20] = 1.0
    sizes = torch.tensor([[64, 128]])  # a wide image: rows 64..127 are padding
    pred = torch.full((1, CELLS, CELLS), 5.0)  # false positive everywhere, padding included
    gen = torch.Generator().manual_seed(2)
    for _ in range(100):
        pts, labels = error_points(pred, cov, SIZE, sizes, gen)
        assert int(labels[0]) == 0 and float(pts[0, 1]) < 64
    assert valid_cells(sizes, SIZE, CELLS)[0].sum() == 32 * 64


def test_boxes_are_jittered_within_bounds() -> None:
    masks, _ = _objects()
    boxes = torch.as_tensor(mask_boxes(masks.numpy()), dtype=torch.float32)
    sizes = torch.full((len(boxes), 2), SIZE)
    gen = torch.Generator().manual_seed(3)
    capped = torch.stack([jitter_boxes(boxes, sizes, gen, noise=0.1, max_noise=2.5) for _ in range(50)])
    assert float((capped - boxes).abs().max()) <= 2.5 + 1e-5
    deltas = []
    for _ in range(300):
        out = jitter_boxes(boxes, sizes, gen, noise=0.1, max_noise=100.0)
        assert bool((out >= 0).all() and (out <= SIZE).all())
        assert bool((out[:, 2] >= out[:, 0]).all() and (out[:, 3] >= out[:, 1]).all())
        deltas.append(out - boxes)
    d = torch.stack(deltas)  # 300 x P x 4
    side = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)  # P x 4 (w, h, w, h)
    # std 10% of the side where the image edge does not clip (coordinates 4 std away from it)
    free = (boxes > 0.4 * side) & (boxes < SIZE - 0.4 * side)
    assert int(free.sum()) > 20
    ratio = d.std(0)[free] / (0.1 * side[free])
    assert 0.85 < float(ratio.mean()) < 1.15
    assert abs(float(d[:, free].mean())) < 0.2  # unbiased
    # no noise: the boxes themselves
    assert jitter_boxes(boxes, sizes, gen, noise=0.0).equal(boxes)


def test_interior_points_are_the_deepest_pixels() -> None:
    mask = torch.zeros(3, 20, 30, dtype=torch.bool)
    mask[0, 2:9, 3:10] = True  # a 7 x 7 square: centre (6, 5)
    mask[1, :, :] = True  # the whole image: the border counts as outside
    points, depth = interior_points(mask)
    assert points[0].tolist() == [6.0, 5.0] and float(depth[0]) == 4
    assert points[1].tolist() == [15.0, 10.0] or points[1].tolist() == [14.0, 9.0]
    assert float(depth[2]) == 0 and points[2].tolist() == [0.0, 0.0]
    d = depth_map(mask[0])
    assert float(d[2, 3]) == 1 and float(d[5, 6]) == 4 and float(d[0, 0]) == 0
