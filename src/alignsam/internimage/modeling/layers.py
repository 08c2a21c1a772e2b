"""Layout permutes and the normalisation wrappers whose positions give InternImage its key names.

The official code puts every LayerNorm in an `nn.Sequential` after any layout permute it needs, so the
checkpoint names them `norm1.0.weight` (no permute), `patch_embed.norm1.1.weight` (after a permute) and
`conv_head.1.0.weight` (a BatchNorm). These builders reproduce those positions, so that our `state_dict()`
keys are the official ones.
"""

from __future__ import annotations

import torch
from torch import nn

LN_EPS = 1e-6


class ToChannelsLast(nn.Module):
    """`N x C x H x W` -> `N x H x W x C` (a view)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class ToChannelsFirst(nn.Module):
    """`N x H x W x C` -> `N x C x H x W` (a view)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


def layer_norm(dim: int, channels_first_in: bool = False, channels_first_out: bool = False) -> nn.Sequential:
    """LayerNorm over the channels (eps 1e-6), with the permutes a channels-first input or output needs."""
    layers: list[nn.Module] = [ToChannelsLast()] if channels_first_in else []
    layers.append(nn.LayerNorm(dim, eps=LN_EPS))
    if channels_first_out:
        layers.append(ToChannelsFirst())
    return nn.Sequential(*layers)


def batch_norm(dim: int) -> nn.Sequential:
    """BatchNorm2d on a channels-first map (PyTorch's default eps 1e-5 and momentum)."""
    return nn.Sequential(nn.BatchNorm2d(dim))
