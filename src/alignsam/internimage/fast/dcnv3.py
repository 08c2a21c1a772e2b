"""DCNv3's sampling core on a CPU: every bilinear neighbour of every sampling point gathered in one fused
weighted sum, channels-last throughout.

What the core computes (the official `dcnv3_core_pytorch`, which `alignsam.internimage.dcnv3_reference`
restates with `grid_sample`): for output pixel (ho, wo), group g and kernel point k = (i, j) (i along x,
the outer index; j along y),

    out[n, ho, wo, g, :] = sum_k mask[n, ho, wo, g, k] * bilinear(value[n, :, :, g, :], x_k, y_k)
    x_k = wo * stride - pad + c + s * (-c + i * dilation + offset_x[n, ho, wo, g, k])
    y_k = ho * stride - pad + c + s * (-c + j * dilation + offset_y[n, ho, wo, g, k])

with c = dilation * (kernel - 1) // 2, s = offset_scale (which also scales the base grid), pixel centres at
integer coordinates, and zeros outside the H x W map.

How it is computed here:

1. A sampling plan, in float32 whatever the input dtype (float64 for float64 offsets): for each point
   its upper-left neighbour (x0, y0) and fractions (fx, fy). The fraction comes from the displacement
   `s * (dx + offset)` alone, never from `wo + ...`, so it carries no rounding from the pixel's position
   (the `grid_sample` formula normalises by the map size and back, which costs ~1e-6 pixel). Each
   neighbour pair is clamped into [-2, W] (and [-2, H]); with a zero margin of 2 pixels around the map a
   clamped pair reads zeros only, which is exact for the value and for the gradient, so no validity masks
   are needed.
2. Four weights per point, `mask * bilinear weight` (the softmax mask and the bilinear weights combined),
   and the four rows they read in the value map seen as a table of `Cg`-channel rows, one per (pixel,
   group) of the zero-padded channels-last map.
3. One `F.embedding_bag(mode="sum", per_sample_weights=...)` over the 4 * P rows of each output (pixel,
   group): gather and weighted sum fused in one kernel, never materialising the 4 * P * Cg samples.
   It has an autograd formula for the table and the weights (training) and runs in bfloat16.

For export (`torch.onnx.export`, tracing) the same plan feeds a gather (`index_select`) and a batched
`matmul` instead, which standard ONNX operators express.

Measured on InternImage-T's level shapes (batch 8, 224 px, one thread, CPU time; docs/internimage.md):
the embedding-bag sum ~19x faster than `index_select` + `matmul` and 1.2-1.5x faster than a CSR
sparse-dense product (`torch.sparse.mm`, which also has no bfloat16 kernel on CPU); the whole core 2.5x
(14 x 14 maps) to 4.7x (56 x 56) faster than the `grid_sample` formula.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MARGIN = 2
"""Zero pixels added around the value map: a clamped neighbour pair reads only these."""


def dcnv3_fast(
    value: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    *,
    group: int,
    kernel_size: int = 3,
    stride: int = 1,
    pad: int = 1,
    dilation: int = 1,
    offset_scale: float = 1.0,
) -> torch.Tensor:
    """DCNv3 deformable sampling (see the module docstring), fast on CPUs.

    Args:
        value: `N x H x W x C` (channels-last), C = group * Cg.
        offset: `N x Ho x Wo x (group * P * 2)` pixel offsets, per group, per point, (x, y);
            P = kernel_size**2, points ordered x-major (the official order).
        mask: `N x Ho x Wo x (group * P)` weights of the points (DCNv3: a softmax over each group's P).
        group, kernel_size, stride, pad, dilation, offset_scale: as the official operator.

    Returns:
        `N x Ho x Wo x C` in `value`'s dtype.
    """
    n, h, w, c = value.shape
    _, ho, wo, _ = offset.shape
    check_shapes(value, offset, mask, group, kernel_size * kernel_size)
    cg = c // group
    index, weight = sampling_plan(
        offset, mask, height=h, width=w, group=group, kernel_size=kernel_size, stride=stride, pad=pad,
        dilation=dilation, offset_scale=offset_scale,
    )  # fmt: skip
    # the value map as a table of Cg-channel rows, one per (padded pixel, group)
    table = F.pad(value, (0, 0, MARGIN, MARGIN, MARGIN, MARGIN)).reshape(-1, cg)
    weight = weight.to(table.dtype)
    if _tracing():
        rows = table.index_select(0, index.reshape(-1)).view(index.shape[0], index.shape[1], cg)
        out = torch.matmul(weight.unsqueeze(1), rows).squeeze(1)  # (R, 1, 4P) @ (R, 4P, Cg)
    else:
        out = F.embedding_bag(index, table, per_sample_weights=weight, mode="sum")
    return out.view(n, ho, wo, c)


def sampling_plan(
    offset: torch.Tensor,
    mask: torch.Tensor,
    *,
    height: int,
    width: int,
    group: int,
    kernel_size: int = 3,
    stride: int = 1,
    pad: int = 1,
    dilation: int = 1,
    offset_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and weights of every bilinear neighbour of every sampling point.

    Returns:
        index: `R x 4P` (R = N * Ho * Wo * group) rows of the zero-padded value table
            (`(N, H + 4, W + 4, group)` rows of Cg channels), int32 when the table allows.
        weight: `R x 4P` float32 (float64 for float64 offsets), mask times bilinear weight, in the same
            order as `index`: the P points' upper-left neighbours (y0, x0), then (y0, x0 + 1), (y0 + 1, x0),
            (y0 + 1, x0 + 1).
    """
    n, ho, wo, _ = offset.shape
    k = kernel_size
    p = k * k
    s = float(offset_scale)
    hp, wp = height + 2 * MARGIN, width + 2 * MARGIN
    device = offset.device
    rows = n * hp * wp * group
    # float32 holds integers exactly up to 2**24; larger tables (and float64 inputs) use float64
    exact = torch.float64 if rows >= 2**24 or offset.dtype == torch.float64 else torch.float32
    centre = dilation * (k - 1) // 2
    steps = torch.arange(k, dtype=exact, device=device) * dilation - centre
    grid_x = steps.repeat_interleave(k) * s  # point order: x-major, as the official grid
    grid_y = steps.repeat(k) * s
    # position of the unshifted kernel centre of each output pixel, in unpadded coordinates
    base_x = torch.arange(wo, dtype=exact, device=device) * stride + (centre - pad)  # (Wo,)
    base_y = torch.arange(ho, dtype=exact, device=device) * stride + (centre - pad)  # (Ho,)

    o = offset.to(exact).reshape(n, ho, wo, group, p, 2)
    # displacement a = s * (grid + offset) of each point: floor and fraction, exact to a's own rounding
    ax = torch.add(grid_x, o[..., 0], alpha=s)  # (N, Ho, Wo, G, P)
    ay = torch.add(grid_y, o[..., 1], alpha=s)
    ix = ax.detach().floor()
    iy = ay.detach().floor()
    fx = ax - ix
    fy = ay - iy
    # clamp the upper-left neighbour into [-2, W] x [-2, H]: outside that, both neighbours of a pair are
    # margin zeros, for the value and its gradient alike
    bx = base_x.view(wo, 1, 1)
    by = base_y.view(ho, 1, 1, 1)
    tracing = _tracing()
    if tracing:  # ONNX's Clip takes scalar bounds only
        ix = torch.minimum(torch.maximum(ix, -MARGIN - bx), width - bx)
        iy = torch.minimum(torch.maximum(iy, -MARGIN - by), height - by)
    else:
        ix = torch.clamp(ix, min=-MARGIN - bx, max=width - bx)
        iy = torch.clamp(iy, min=-MARGIN - by, max=height - by)
    # table row of the upper-left neighbour: ((n * Hp + y + 2) * Wp + x + 2) * G + g, with the parts that
    # do not depend on the point summed first (N x Ho x Wo x G x 1)
    pixel = (by + MARGIN) * wp + (bx + MARGIN)  # (Ho, Wo, 1, 1)
    image = torch.arange(n, dtype=exact, device=device).view(n, 1, 1, 1, 1) * (hp * wp)
    start = (image + pixel) * group + torch.arange(group, dtype=exact, device=device).view(group, 1)
    lin = torch.add(start, torch.add(ix, iy, alpha=wp), alpha=group)
    index_dtype = torch.int32 if rows < 2**31 else torch.int64
    first = lin.to(index_dtype).reshape(-1, p)
    # (R, 4, P): each neighbour's rows in a contiguous run of P (any order within a bag sums the same;
    # interleaving the four per point writes with stride 4 and costs twice as much)
    steps_ = (0, group, wp * group, (wp + 1) * group)
    if tracing:  # the exporter drops writes into slices of a preallocated tensor
        index = first.unsqueeze(1) + torch.tensor(steps_, dtype=index_dtype, device=device).view(4, 1)
    else:
        index = torch.empty(first.shape[0], 4, p, dtype=index_dtype, device=device)
        for i, step in enumerate(steps_):
            torch.add(first, step, out=index[:, i])

    real = torch.float64 if offset.dtype == torch.float64 else torch.float32
    m = mask.to(real).reshape(-1, p)
    fx, fy = fx.to(real).reshape(-1, p), fy.to(real).reshape(-1, p)
    low = m * fy  # weight of the lower row (y0 + 1), then split along x
    high = m - low
    low_right = low * fx
    high_right = high * fx
    weight = torch.stack((high - high_right, high_right, low - low_right, low_right), dim=1)
    return index.view(-1, 4 * p), weight.view(-1, 4 * p)


def check_shapes(value: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, group: int, points: int) -> None:
    """A `ValueError` naming the mismatch when the three inputs do not describe one DCNv3 sampling."""
    if value.dim() != 4 or offset.dim() != 4 or mask.dim() != 4:
        raise ValueError(f"DCNv3 takes 4-d tensors (N x H x W x C); got {value.dim()}, {offset.dim()}, {mask.dim()}-d.")
    if value.shape[-1] % group:
        raise ValueError(f"DCNv3: {value.shape[-1]} channels are not divisible by {group} groups.")
    if offset.shape[-1] != group * points * 2 or mask.shape[-1] != group * points:
        raise ValueError(
            f"DCNv3 with {group} groups of {points} points needs {group * points * 2} offsets and "
            f"{group * points} weights a pixel; got {offset.shape[-1]} and {mask.shape[-1]}."
        )
    if offset.shape[:3] != mask.shape[:3] or offset.shape[0] != value.shape[0]:
        raise ValueError(
            f"DCNv3: offsets {tuple(offset.shape)}, weights {tuple(mask.shape)} and values "
            f"{tuple(value.shape)} disagree in batch or output size."
        )


def _tracing() -> bool:
    """Whether the call is being traced (`torch.onnx.export`, `torch.jit.trace`): export-friendly ops then."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()
