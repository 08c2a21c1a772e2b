"""Shared pieces of the InternImage tests: tiny configurations, weight randomisation, and the explicit
double-sum DCNv3 formula (bilinear weights written out, zeros outside the map) used as the reference."""

from __future__ import annotations

import math

import torch
from torch import nn

from alignsam.internimage import InternImage, InternImageConfig


def tiny_config(**changes: object) -> InternImageConfig:
    """Four levels, 16 channels a group (as every published model), 6 blocks; ~0.3 M parameters."""
    base = InternImageConfig(channels=16, depths=(1, 1, 2, 1), groups=(1, 2, 4, 8), num_classes=10)
    return base.replace(**changes)


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every tensor the initialisers leave trivial a spread-out random value: offsets of a few pixels
    (many leave the map), uneven point weights, batch-norm statistics, layer scales, norm affines, and a
    head whose logits differ between classes."""
    g = torch.Generator().manual_seed(seed)

    def normal(t: torch.Tensor, std: float, mean: float = 0.0) -> None:
        t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype) * std + mean)

    for name, p in model.named_parameters():
        fan_in = p[0].numel() if p.ndim > 1 else 1
        if ".dcn.offset." in name:
            # static offsets of a few pixels (many points leave the map) that depend on the features only
            # mildly: strong dependence makes deep random stacks chaotic (float32 rounding then changes
            # the logits by O(1), in the official code as in any other)
            normal(p, 0.5 / math.sqrt(fan_in) if name.endswith("weight") else 2.0)
        elif ".dcn.mask." in name:
            normal(p, 1.0 / math.sqrt(fan_in) if name.endswith("weight") else 1.0)
        elif name.endswith(("gamma1", "gamma2")):
            normal(p, 0.05, 0.2)
        elif p.ndim == 1 and name.endswith("weight"):  # LayerNorm / BatchNorm scales
            normal(p, 0.2, 1.0)
        elif p.ndim == 1:
            normal(p, 0.1)
        else:
            normal(p, 1.0 / math.sqrt(fan_in))
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            normal(b, 0.5)
        elif name.endswith("running_var"):
            b.copy_(torch.rand(b.shape, generator=g) * 1.5 + 0.5)
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        head.weight.mul_(8.0)  # logits that differ between classes
    return model


def random_model(config: InternImageConfig, seed: int = 0) -> InternImage:
    torch.manual_seed(seed)
    return randomize(InternImage(config), seed).eval()  # type: ignore[return-value]


def dcnv3_double_sum(
    value: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    group: int,
    offset_scale: float = 1.0,
    kernel: int = 3,
    stride: int = 1,
    pad: int = 1,
    dilation: int = 1,
) -> torch.Tensor:
    """DCNv3 as the explicit sum over points and bilinear neighbours, in float64 whatever the input, and
    differentiable (positions stay tensors; only the neighbour indices are taken as integers).

    out[n, ho, wo, g] = sum_k mask[k] * sum_{(y, x) in the 4 neighbours} w_y * w_x * value[n, y, x, g]
    at x_k = wo * stride - pad + c + s * (-c + i * dilation + offset_x), i the point's column (outer index)
    and y_k likewise with j (inner index), c = dilation * (kernel - 1) // 2; value is 0 outside the map.
    """
    v = value.double()
    n, h, w, c = v.shape
    _, ho, wo, _ = offset.shape
    cg, p = c // group, kernel * kernel
    off = offset.double().view(n, ho, wo, group, p, 2)
    m = mask.double().view(n, ho, wo, group, p)
    centre = dilation * (kernel - 1) // 2
    out = torch.zeros(n, ho, wo, group, cg, dtype=torch.float64)
    vg = v.view(n, h, w, group, cg)
    zero = torch.zeros(cg, dtype=torch.float64)
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                for g_ in range(group):
                    total = torch.zeros(cg, dtype=torch.float64)
                    for k in range(p):
                        i, j = divmod(k, kernel)
                        x = (
                            ox * stride
                            - pad
                            + centre
                            + offset_scale * (-centre + i * dilation + off[b, oy, ox, g_, k, 0])
                        )
                        y = (
                            oy * stride
                            - pad
                            + centre
                            + offset_scale * (-centre + j * dilation + off[b, oy, ox, g_, k, 1])
                        )
                        x0, y0 = math.floor(x.item()), math.floor(y.item())
                        for yy, wy in ((y0, y0 + 1 - y), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, x0 + 1 - x), (x0 + 1, x - x0)):
                                inside = 0 <= yy < h and 0 <= xx < w
                                sample = vg[b, yy, xx, g_] if inside else zero
                                total = total + m[b, oy, ox, g_, k] * wy * wx * sample
                    out[b, oy, ox, g_] = total
    return out.view(n, ho, wo, c)
