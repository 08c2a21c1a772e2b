"""Simulated interactive prompts, as SAM was trained (paper, appendix A "Training algorithm").

First round: a box (the object's box, each coordinate jittered by a share of the side) or one point drawn
uniformly inside the object. Later rounds: one new point drawn uniformly from the error of the previous
prediction; a point in a missed part is positive (label 1), one in a false part negative (label 0).

Everything happens in the low-resolution frame of the targets (`L x L` cells over the padded `S x S`
input), vectorised over P prompts, and draws only from the `torch.Generator` passed in, so prompts are a
function of the seed and the step. Points are integer pixel coordinates `(x, y)` of the resized input, as
a click is; a point drawn in a cell is a uniform pixel of that cell.

`interior_points` gives the evaluation's deterministic click: the pixel deepest inside a region.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FULL = 1.0 - 1e-3  # coverage of a cell that lies wholly inside an object


def _cell_points(
    weights: torch.Tensor, image_size: int, input_sizes: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One cell per row drawn with probability proportional to `weights` (`P x L x L`, every row with a
    positive entry), then a uniform pixel of it. Returns points `P x 2` (x, y) and the flat cell indices `P`."""
    p, size, _ = weights.shape
    cell = image_size // size
    flat = torch.multinomial(weights.reshape(p, -1).double(), 1, generator=generator)[:, 0]  # P
    cy, cx = flat // size, flat % size
    offset = torch.randint(0, cell, (p, 2), generator=generator)
    x = (cx * cell + offset[:, 0]).minimum(input_sizes[:, 1] - 1)
    y = (cy * cell + offset[:, 1]).minimum(input_sizes[:, 0] - 1)
    return torch.stack([x, y], dim=1).float(), flat


def valid_cells(input_sizes: torch.Tensor, image_size: int, mask_size: int) -> torch.Tensor:
    """`P x L x L` bool: the cells that hold image pixels (not only padding), for input sizes `P x 2` (h, w)."""
    cell = image_size // mask_size
    idx = torch.arange(mask_size) * cell
    rows = idx[None, :] < input_sizes[:, :1]  # P x L
    cols = idx[None, :] < input_sizes[:, 1:]  # P x L
    return rows[:, :, None] & cols[:, None, :]


def points_inside(
    coverage: torch.Tensor, image_size: int, input_sizes: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """One point inside each object, uniform over the cells that lie wholly inside it.

    Args:
        coverage: `P x L x L` float coverage targets in [0, 1].
        input_sizes: `P x 2` (h, w) of the resized images.
    Returns:
        `P x 2` float (x, y) pixel coordinates. An object too thin to cover any cell wholly gets a pixel of
        its most covered cell.
    """
    return _cell_points(_inside_weights(coverage), image_size, input_sizes, generator)[0]


def _inside_weights(coverage: torch.Tensor) -> torch.Tensor:
    """1 on the cells wholly inside each object (or, for objects too thin for that, its most covered cells)."""
    full = coverage >= FULL
    best = coverage >= coverage.flatten(1).amax(1)[:, None, None]
    has_full = full.flatten(1).any(1)[:, None, None]
    return torch.where(has_full, full, best).float()


def jitter_boxes(
    boxes: torch.Tensor,
    input_sizes: torch.Tensor,
    generator: torch.Generator,
    *,
    noise: float = 0.1,
    max_noise: float = 20.0,
) -> torch.Tensor:
    """Boxes with each coordinate moved by N(0, (noise * side)^2), at most `max_noise` pixels, then kept
    inside the image and non-empty.

    Args:
        boxes: `P x 4` XYXY in the resized frame; input_sizes: `P x 2` (h, w).
    Returns:
        `P x 4` jittered boxes.
    """
    w = (boxes[:, 2] - boxes[:, 0]).clamp_min(1.0)
    h = (boxes[:, 3] - boxes[:, 1]).clamp_min(1.0)
    scale = torch.stack([w, h, w, h], dim=1) * noise
    delta = (torch.randn(boxes.shape, generator=generator) * scale).clamp(-max_noise, max_noise)
    out = boxes + delta
    limits = torch.stack([input_sizes[:, 1], input_sizes[:, 0]] * 2, dim=1).float()
    out = torch.minimum(out.clamp_min(0.0), limits)
    x0, x1 = torch.minimum(out[:, 0], out[:, 2]), torch.maximum(out[:, 0], out[:, 2])
    y0, y1 = torch.minimum(out[:, 1], out[:, 3]), torch.maximum(out[:, 1], out[:, 3])
    return torch.stack([x0, y0, x1, y1], dim=1)


def error_points(
    logits: torch.Tensor,
    coverage: torch.Tensor,
    image_size: int,
    input_sizes: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next click of each prompt: a point in the error between the prediction and the object.

    A cell is a false negative when it is mostly inside the object (coverage >= 0.5) but predicted outside
    (logit <= 0), a false positive the other way round. The click is a uniform pixel of a uniformly drawn
    error cell that lies wholly inside (false negative) or wholly outside (false positive) the object, so
    its label is right at the pixel level; only when every error cell is partly covered (a thin error along
    an edge) are those drawn, weighted by how clearly they are wrong. Padding cells are never clicked. A
    prediction without error gets a positive click inside the object.

    Args:
        logits: `P x L x L` low-resolution logits of the previous prediction.
        coverage: `P x L x L` coverage targets; input_sizes: `P x 2` (h, w).
    Returns:
        points `P x 2` (x, y) and labels `P` (1 positive, 0 negative), int64.
    """
    mask_size = coverage.shape[-1]
    pred = logits > 0
    inside = coverage >= 0.5
    valid = valid_cells(input_sizes, image_size, mask_size)
    fn, fp = inside & ~pred, ~inside & pred & valid
    sure = (fn & (coverage >= FULL)) | (fp & (coverage <= 0))
    soft = torch.where(fn, coverage, torch.where(fp, 1.0 - coverage, torch.zeros_like(coverage)))
    weights = torch.where(sure.flatten(1).any(1)[:, None, None], sure.float(), soft)
    none = weights.flatten(1).sum(1) <= 0
    if none.any():
        weights = torch.where(none[:, None, None], _inside_weights(coverage), weights)
    points, flat = _cell_points(weights, image_size, input_sizes, generator)
    labels = inside.flatten(1).gather(1, flat[:, None])[:, 0] | none
    return points, labels.long()


def depth_map(masks: torch.Tensor) -> torch.Tensor:
    """How many 3 x 3 erosions each pixel of `... x H x W` bool masks survives (0 outside): a chessboard
    distance to the nearest pixel outside its mask (the image border counts as outside)."""
    shape = masks.shape
    x = masks.reshape(-1, 1, *shape[-2:]).float()
    depth = torch.zeros_like(x)
    while bool(x.any()):
        depth += x
        x = -F.max_pool2d(-F.pad(x, (1, 1, 1, 1)), 3, stride=1)  # erosion, with a zero border
    return depth.reshape(shape)


def interior_points(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixel farthest inside each of `N x H x W` bool masks: the usual evaluation click (the centre of the
    object, or of the largest error). Among ties, the one nearest to the tied pixels' mean.

    Returns:
        points `N x 2` (x, y) as float, and each mask's depth `N` (0 for an empty mask, whose point is (0, 0)).
    """
    depth = depth_map(masks)  # N x H x W
    n, h, w = depth.shape
    top = depth.flatten(1).amax(1)  # N
    tied = (depth == top[:, None, None]) & (top[:, None, None] > 0)
    ys = torch.arange(h, dtype=torch.float32)[None, :, None].expand(n, h, w)
    xs = torch.arange(w, dtype=torch.float32)[None, None, :].expand(n, h, w)
    count = tied.flatten(1).sum(1).clamp_min(1)
    cy = (ys * tied).flatten(1).sum(1) / count
    cx = (xs * tied).flatten(1).sum(1) / count
    dist = (ys - cy[:, None, None]) ** 2 + (xs - cx[:, None, None]) ** 2
    flat = torch.where(tied, dist, torch.full_like(dist, float("inf"))).flatten(1).argmin(1)
    points = torch.stack([flat % w, flat // w], dim=1).float()
    return torch.where(top[:, None] > 0, points, torch.zeros_like(points)), top
