"""Inference-time fusions that callers apply to built models (never done inside a module's forward)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Fold `bn` (eval mode) into `conv`, in place, and return `conv`, now equal to `bn(conv(x))`: the
    weights become `w * g / sqrt(v + eps)` and the bias `(b - m) * g / sqrt(v + eps) + beta`.

    The weights are scaled where they lie rather than copied: weights memory-mapped from a checkpoint are
    then rewritten page by page (copy-on-write) instead of being kept twice, which for align-base's image
    tower is about 250 MB of resident memory."""
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # C_out
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)
    conv.weight.mul_(scale.view(-1, 1, 1, 1).to(conv.weight.dtype))
    return conv.requires_grad_(False)
