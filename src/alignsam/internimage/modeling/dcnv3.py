"""DCNv3, InternImage's deformable convolution, with a pluggable sampling core.

The module (official names: `input_proj`, `dw_conv`, `offset`, `mask`, `output_proj`) on a channels-last
input X (`N x H x W x C`), G groups, kernel K (P = K * K points):

    V = input_proj(X)                                   the values that are sampled
    F = GELU(LayerNorm(depthwise KxK conv(X)))          from X itself, not from V
    offsets = offset(F)                                 N x H x W x (G * P * 2), per group, per point, (x, y)
    weights = softmax over each group's P of mask(F)    DCNv3's softmax (DCNv2 used a sigmoid), float32
    out = output_proj(core(V, offsets, weights))

`core` does the deformable sampling. The default is `dcnv3_fast` (one fused gather-and-sum, see
`alignsam.internimage.fast.dcnv3`); `dcnv3_reference` is the official `dcnv3_core_pytorch` formula
restated with `grid_sample`, kept as the reference to test against. Both take and return the same shapes.

Offsets and mask weights are initialised to zero, as in the official code: a fresh module samples the
plain 3 x 3 grid with uniform weights 1/9.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from alignsam.internimage.fast.dcnv3 import dcnv3_fast
from alignsam.internimage.modeling.layers import layer_norm


class DCNv3Core(Protocol):
    """The sampling core: `value` N x H x W x C, `offset` N x Ho x Wo x (G*P*2), `mask` N x Ho x Wo x (G*P)
    -> N x Ho x Wo x C."""

    def __call__(
        self,
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
    ) -> torch.Tensor: ...


def dcnv3_reference(
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
    """The official pure-PyTorch DCNv3 core (`dcnv3_core_pytorch`) as a formula: the zero-padded map is
    sampled with `grid_sample(bilinear, zeros, align_corners=False)` at normalised positions
    `reference point + offset_scale * (base grid + offset) / padded size`, then weighted by `mask` and
    summed over the points. Slow (each group's channels are read point by point, channels-first); the
    reference the fast core is tested against. Shapes as `DCNv3Core`."""
    n, h, w, c = value.shape
    _, ho, wo, _ = offset.shape
    k, cg, p = kernel_size, c // group, kernel_size * kernel_size
    padded = F.pad(value, (0, 0, pad, pad, pad, pad))
    h_in, w_in = h + 2 * pad, w + 2 * pad
    device = value.device

    # reference points: centres of the first kernel position, normalised by the padded size
    start = (dilation * (k - 1)) // 2 + 0.5
    ref_y, ref_x = torch.meshgrid(
        torch.linspace(start, start + (ho - 1) * stride, ho, dtype=torch.float32, device=device),
        torch.linspace(start, start + (wo - 1) * stride, wo, dtype=torch.float32, device=device),
        indexing="ij",
    )
    ref = torch.stack((ref_x.reshape(-1) / w_in, ref_y.reshape(-1) / h_in), -1).view(1, ho, wo, 1, 2)

    # base grid of the kernel, x-major: grid[i * K + j] = (x_i, y_j), the same for every group
    first = -((dilation * (k - 1)) // 2)
    last = first + (k - 1) * dilation
    gx, gy = torch.meshgrid(
        torch.linspace(first, last, k, dtype=torch.float32, device=device),
        torch.linspace(first, last, k, dtype=torch.float32, device=device),
        indexing="ij",
    )
    grid = torch.stack((gx / w_in, gy / h_in), -1).reshape(1, p, 2).repeat(group, 1, 1).view(1, 1, 1, group * p, 2)
    size = torch.tensor([w_in, h_in], device=device).repeat(group * p).view(1, 1, 1, group * p * 2)

    locations = (ref + grid * offset_scale).repeat(n, 1, 1, 1, 1).flatten(3, 4)
    locations = locations + offset * offset_scale / size  # N x Ho x Wo x (G * P * 2)
    grids = (2 * locations - 1).view(n, ho * wo, group, p, 2).transpose(1, 2).flatten(0, 1)  # NG x HoWo x P x 2
    channels_first = padded.view(n, h_in * w_in, c).transpose(1, 2).reshape(n * group, cg, h_in, w_in)
    samples = F.grid_sample(channels_first, grids, mode="bilinear", padding_mode="zeros", align_corners=False)
    weights = mask.view(n, ho * wo, group, p).transpose(1, 2).reshape(n * group, 1, ho * wo, p)
    out = (samples * weights).sum(-1).view(n, c, ho * wo)  # NG x Cg x HoWo -> N x C x HoWo
    return out.transpose(1, 2).reshape(n, ho, wo, c).contiguous()


def softmax_small(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over a short last dimension (DCNv3's 9 points), in float32.

    The same formula as `torch.softmax` (the maximum subtracted, then exp and normalise), to ~2e-7;
    PyTorch's CPU softmax kernel vectorises along the last dimension and is 7-13x slower than these four
    elementwise passes when that dimension is 9 (InternImage-T, batch 8: 18-36 ms a block on level 1)."""
    x = logits.float()
    e = (x - x.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


class DCNv3(nn.Module):
    """Deformable convolution v3 on channels-last maps: `N x H x W x C` -> `N x H x W x C`."""

    def __init__(
        self,
        channels: int,
        group: int,
        kernel_size: int = 3,
        offset_scale: float = 1.0,
        core: DCNv3Core | None = None,
    ) -> None:
        super().__init__()
        if channels % group:
            raise ValueError(f"channels {channels} are not divisible by group {group}")
        self.channels = channels
        self.group = group
        self.kernel_size = kernel_size
        self.pad = (kernel_size - 1) // 2
        self.offset_scale = offset_scale
        self.core: DCNv3Core = core if core is not None else dcnv3_fast
        points = kernel_size * kernel_size
        self.dw_conv = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2, groups=channels),
            layer_norm(channels, channels_first_in=True),
            nn.GELU(),
        )
        self.offset = nn.Linear(channels, group * points * 2)
        self.mask = nn.Linear(channels, group * points)
        self.input_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation: zero offsets and mask logits, Xavier-uniform projections."""
        for layer in (self.offset, self.mask):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        for layer in (self.input_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, _ = x.shape
        value = self.input_proj(x)
        features = self.dw_conv(x.permute(0, 3, 1, 2))  # channels-first view in, N x H x W x C out
        offset = self.offset(features)
        mask = softmax_small(self.mask(features).view(n, h, w, self.group, -1)).view(n, h, w, -1)
        out = self.core(
            value, offset, mask.to(value.dtype), group=self.group, kernel_size=self.kernel_size, stride=1,
            pad=self.pad, dilation=1, offset_scale=self.offset_scale,
        )  # fmt: skip
        return self.output_proj(out)

    def extra_repr(self) -> str:
        core = getattr(self.core, "__name__", type(self.core).__name__)
        return f"channels={self.channels}, group={self.group}, offset_scale={self.offset_scale}, core={core}"
