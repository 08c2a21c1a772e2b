"""EfficientNet, as ALIGN's image tower: MBConv blocks with squeeze-excite, no head conv, global pooling.

The block schedule comes from a base (B0) table scaled by width and depth coefficients; align-base is
B7 (width 2.0, depth 3.1: 55 blocks ending in 640 channels). Padding follows the checkpoint, not TF "SAME":
the stem and every stride-2 depthwise conv pad `(k//2 - 1)` before and `k//2` after on each axis, whatever
the input size, so a 289 px input gives a 9 x 9 final map.

Two deliberate differences from transformers, both only in training mode: drop-connect drops whole samples
(the original Keras `noise_shape=(None, 1, 1, 1)`) instead of single elements, and batch-norm momentum is
converted from TensorFlow's convention (0.99) to PyTorch's (0.01) instead of being copied verbatim.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from alignsam.align.modeling.config import AlignVisionConfig
from alignsam.layers import DropPath, get_activation
from alignsam.layers.fuse import fold_conv_bn


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One MBConv block of the schedule."""

    in_dim: int
    out_dim: int
    expand_ratio: int
    kernel_size: int
    stride: int
    se_dim: int
    residual: bool
    drop_path: float
    pad: tuple[int, int, int, int]  # (left, right, top, bottom) before a stride-2 depthwise conv


def block_schedule(cfg: AlignVisionConfig) -> list[BlockSpec]:
    """Expand the per-stage config into one spec per block, in order."""
    specs: list[BlockSpec] = []
    total = cfg.num_blocks
    for stage in range(len(cfg.in_channels)):
        stage_in = cfg.round_filters(cfg.in_channels[stage])
        out_dim = cfg.round_filters(cfg.out_channels[stage])
        k = cfg.kernel_sizes[stage]
        for j in range(cfg.round_repeats(cfg.num_block_repeats[stage])):
            idx = len(specs)
            in_dim = stage_in if j == 0 else out_dim
            stride = cfg.strides[stage] if j == 0 else 1
            symmetric = idx in cfg.depthwise_padding
            pad = (k // 2,) * 4 if symmetric else (k // 2 - 1, k // 2, k // 2 - 1, k // 2)
            specs.append(
                BlockSpec(
                    in_dim=in_dim,
                    out_dim=out_dim,
                    expand_ratio=cfg.expand_ratios[stage],
                    kernel_size=k,
                    stride=stride,
                    # squeeze width follows the block *input*, not the expanded width
                    se_dim=max(1, int(in_dim * cfg.squeeze_expansion_ratio)),
                    # the first block of a stage never has a residual, even when shapes would allow one
                    residual=j > 0,
                    drop_path=cfg.drop_connect_rate * idx / total,
                    pad=pad,
                )
            )
    return specs


def _bn(channels: int, cfg: AlignVisionConfig) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=cfg.batch_norm_eps, momentum=1.0 - cfg.batch_norm_momentum)


class SqueezeExcite(nn.Module):
    """Channel gating: global mean -> reduce -> act -> expand -> sigmoid -> scale."""

    def __init__(self, channels: int, se_dim: int, act: str) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, se_dim, 1)
        self.act = get_activation(act)
        self.conv_expand = nn.Conv2d(se_dim, channels, 1)
        self.inplace = False  # scale x where it lies (inference fast path; autograd needs x kept)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # B x C x 1 x 1
        gate = self.conv_expand(self.act(self.conv_reduce(s))).sigmoid()
        return x.mul_(gate) if self.inplace else x * gate


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand] -> depthwise kxk -> squeeze-excite -> 1x1 project [-> + input]."""

    def __init__(self, spec: BlockSpec, cfg: AlignVisionConfig) -> None:
        super().__init__()
        mid = spec.in_dim * spec.expand_ratio
        self.stride = spec.stride
        self.pad = spec.pad
        self.residual = spec.residual
        # The norms are typed as plain modules because `fold_batchnorm` swaps them for identities.
        if spec.expand_ratio != 1:
            self.conv_pw: nn.Conv2d | None = nn.Conv2d(spec.in_dim, mid, 1, bias=False)
            self.bn1: nn.Module | None = _bn(mid, cfg)
        else:
            self.conv_pw = self.bn1 = None
        k = spec.kernel_size
        self.conv_dw = nn.Conv2d(
            mid, mid, k, stride=spec.stride, padding=k // 2 if spec.stride == 1 else 0, groups=mid, bias=False
        )
        self.bn2: nn.Module = _bn(mid, cfg)
        self.act = get_activation(cfg.hidden_act)
        self.se = SqueezeExcite(mid, spec.se_dim, cfg.hidden_act)
        self.conv_pwl = nn.Conv2d(mid, spec.out_dim, 1, bias=False)
        self.bn3: nn.Module = _bn(spec.out_dim, cfg)
        self.drop_path = DropPath(spec.drop_path) if spec.residual else nn.Identity()
        self.inplace = False  # add the shortcut into the output where it lies (inference fast path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.conv_pw is not None and self.bn1 is not None:
            x = self.act(self.bn1(self.conv_pw(x)))
        if self.stride == 2:
            x = F.pad(x, self.pad)
        x = self.act(self.bn2(self.conv_dw(x)))
        x = self.se(x)
        x = self.bn3(self.conv_pwl(x))
        if self.residual:
            x = self.drop_path(x)
            x = x.add_(shortcut) if self.inplace else x + shortcut
        return x


class Stem(nn.Module):
    """3x3 stride-2 conv (padded right and bottom only), batch norm, activation."""

    def __init__(self, cfg: AlignVisionConfig) -> None:
        super().__init__()
        out = cfg.round_filters(32)
        self.conv = nn.Conv2d(cfg.num_channels, out, 3, stride=2, bias=False)
        self.bn: nn.Module = _bn(out, cfg)
        self.act = get_activation(cfg.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(F.pad(x, (0, 1, 0, 1)))))


class EfficientNet(nn.Module):
    """The trunk: stem and MBConv blocks. `forward` returns the last feature map, `B x C x h x w`."""

    def __init__(self, cfg: AlignVisionConfig) -> None:
        super().__init__()
        self.stem = Stem(cfg)
        self.blocks = nn.ModuleList([MBConv(spec, cfg) for spec in block_schedule(cfg)])
        self.pooling = cfg.pooling_type

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixel_values)  # B x 3 x H x W -> B x C0 x H/2 x W/2
        for block in self.blocks:
            x = block(x)
        return x

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Global pooling of a `B x C x h x w` map to `B x C` (the image embedding)."""
        return features.mean((2, 3)) if self.pooling == "mean" else features.amax((2, 3))


def fold_batchnorm(net: EfficientNet) -> EfficientNet:
    """Fold every batch norm into the convolution before it, in place (for inference only: the folded
    network has no batch statistics to train)."""

    def fold(owner: nn.Module, conv_name: str, bn_name: str) -> None:
        conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
        if isinstance(bn, nn.BatchNorm2d):
            fold_conv_bn(conv, bn)  # in place: the convolution stays where it is
            setattr(owner, bn_name, nn.Identity())

    fold(net.stem, "conv", "bn")
    for block in net.blocks:
        assert isinstance(block, MBConv)
        if block.conv_pw is not None:
            fold(block, "conv_pw", "bn1")
        fold(block, "conv_dw", "bn2")
        fold(block, "conv_pwl", "bn3")
    return net
