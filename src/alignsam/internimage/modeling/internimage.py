"""InternImage (Wang et al., CVPR 2023, arXiv 2211.05778): a CNN of DCNv3 blocks, checkpoint-compatible
with the official classification models T, S, B, L and XL.

    pixels N x 3 x H x W
      -> stem: conv 3x3/2 -> LN -> GELU -> conv 3x3/2 -> LN                 N x H/4 x W/4 x C (channels-last)
      -> 4 levels of blocks (C, 2C, 4C, 8C channels), each but the last followed by a downsample
         (conv 3x3/2 without bias -> LN); without post_norm a level ends with its own LN
      -> head: conv 1x1 (8C -> 1.5 * 8C, no bias) -> BatchNorm -> GELU -> global average -> linear

A block is `x + dcn(norm1(x))`, `x + mlp(norm2(x))` (T), or with `post_norm` (S, B, L, XL)
`x + gamma1 * norm1(dcn(x))`, `x + gamma2 * norm2(mlp(x))` (`gamma` only with `layer_scale`). Inside the
levels maps are channels-last (`N x H x W x C`), as in the official code. Attribute names are the official
ones, so `state_dict()` has the official keys (633 for T, 751 for S and B); `alignsam.internimage.convert`
maps the Hugging Face layout onto them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from alignsam.internimage import pretrained
from alignsam.internimage.modeling.config import InternImageConfig
from alignsam.internimage.modeling.dcnv3 import DCNv3, DCNv3Core
from alignsam.internimage.modeling.layers import batch_norm, layer_norm
from alignsam.io.hub import CacheDir
from alignsam.io.resolve import ModelSource, Ref, resolve_model
from alignsam.layers import DropPath


class Stem(nn.Module):
    """Two stride-2 convolutions: `N x 3 x H x W` -> `N x H/4 x W/4 x C` (channels-last)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(3, half, kernel_size=3, stride=2, padding=1)
        self.norm1 = layer_norm(half, channels_first_in=True, channels_first_out=True)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(half, channels, kernel_size=3, stride=2, padding=1)
        self.norm2 = layer_norm(channels, channels_first_in=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))


class Downsample(nn.Module):
    """`N x H x W x C` -> `N x H/2 x W/2 x 2C`: conv 3x3 stride 2 without bias, then LayerNorm."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 2 * channels, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = layer_norm(2 * channels, channels_first_in=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)))


class Mlp(nn.Module):
    """Linear -> GELU -> dropout -> Linear -> dropout, on the last dimension."""

    def __init__(self, channels: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """One InternImage block (the official `InternImageLayer`): DCNv3 then MLP, each in a residual branch.
    `N x H x W x C` -> same."""

    def __init__(
        self,
        channels: int,
        group: int,
        *,
        mlp_ratio: float,
        offset_scale: float,
        post_norm: bool,
        layer_scale: float | None,
        drop: float = 0.0,
        drop_path: float = 0.0,
        core: DCNv3Core | None = None,
    ) -> None:
        super().__init__()
        self.post_norm = post_norm
        self.norm1 = layer_norm(channels)
        self.dcn = DCNv3(channels, group, kernel_size=3, offset_scale=offset_scale, core=core)
        self.drop_path = DropPath(drop_path)
        self.norm2 = layer_norm(channels)
        self.mlp = Mlp(channels, int(channels * mlp_ratio), drop)
        self.gamma1: nn.Parameter | None = None
        self.gamma2: nn.Parameter | None = None
        if layer_scale is not None:
            self.gamma1 = nn.Parameter(torch.full((channels,), float(layer_scale)))
            self.gamma2 = nn.Parameter(torch.full((channels,), float(layer_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.norm1(self.dcn(x)) if self.post_norm else self.dcn(self.norm1(x))
        x = x + self.drop_path(branch if self.gamma1 is None else self.gamma1 * branch)
        branch = self.norm2(self.mlp(x)) if self.post_norm else self.mlp(self.norm2(x))
        return x + self.drop_path(branch if self.gamma2 is None else self.gamma2 * branch)


class Level(nn.Module):
    """One level (the official `InternImageBlock`): `depth` blocks, then a LayerNorm unless post_norm.

    The downsample that follows (all levels but the last) is held here for the official key names but
    applied by `InternImage`, which also needs the level's output before it."""

    def __init__(
        self,
        config: InternImageConfig,
        index: int,
        drop_paths: list[float],
        core: DCNv3Core | None = None,
    ) -> None:
        super().__init__()
        channels = config.level_channels(index)
        self.blocks = nn.ModuleList(
            Block(
                channels,
                config.groups[index],
                mlp_ratio=config.mlp_ratio,
                offset_scale=config.offset_scale,
                post_norm=config.post_norm,
                layer_scale=config.layer_scale,
                drop=config.drop_rate,
                drop_path=rate,
                core=core,
            )
            for rate in drop_paths
        )
        self.norm = None if config.post_norm else layer_norm(channels)
        self.downsample = Downsample(channels) if index < config.num_levels - 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.norm is None else self.norm(x)


class InternImage(nn.Module):
    """InternImage classifier (T/S/B/L/XL): `forward(pixel_values)` -> logits.

    Build one with `InternImage(config)` (random weights, the official initialisation) or load one with
    `InternImage.from_pretrained(ref)`. `pixel_values`: `N x 3 x H x W`, normalised with the ImageNet mean
    and std (`InternImageProcessor`); H and W need not be the training size (any size the stride-32 trunk
    accepts).
    """

    def __init__(self, config: InternImageConfig, core: DCNv3Core | None = None) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = Stem(config.channels)
        self.pos_drop = nn.Dropout(config.drop_rate)
        rates = config.drop_path_rates()
        starts = [sum(config.depths[:i]) for i in range(config.num_levels + 1)]
        self.levels = nn.ModuleList(
            Level(config, i, rates[starts[i] : starts[i + 1]], core) for i in range(config.num_levels)
        )
        width = config.head_features
        self.conv_head = nn.Sequential(
            nn.Conv2d(config.num_features, width, kernel_size=1, bias=False), batch_norm(width), nn.GELU()
        )
        self.head = nn.Linear(width, config.num_classes) if config.num_classes > 0 else None
        self.apply(_init_weights)
        for module in self.modules():
            if isinstance(module, DCNv3):
                module.reset_parameters()

    @classmethod
    def from_pretrained(
        cls,
        ref: Ref | ModelSource,
        *,
        config: InternImageConfig | None = None,
        revision: str | None = None,
        cache_dir: CacheDir = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> InternImage:
        """Load a model from a short name (`internimage-t`), a hub id, a folder or a weights file (an
        official `.pth`); see `alignsam.internimage.pretrained`. `config` replaces the checkpoint's own
        configuration (or the one read from its shapes). In eval mode."""
        source = resolve_model(ref, "internimage", revision=revision, cache_dir=cache_dir)
        return pretrained.load(source, cls, config=config, dtype=dtype, device=device)

    def save_pretrained(self, directory: str | os.PathLike[str], *, labels: Sequence[str] | None = None) -> Path:
        """Write `config.json` (with `id2label` when `labels` are given) and `model.safetensors` (official key
        names) into `directory`; returns it."""
        return pretrained.save(self, self.config, directory, labels=labels)

    def config_json(self) -> dict[str, Any]:
        """The configuration as the object `save_pretrained` writes into `config.json` (with its model_type)."""
        return pretrained.config_json(self.config)

    @property
    def embed_dim(self) -> int:
        """Width of `forward_features`: `int(8C * cls_scale)` (768 for T)."""
        return self.config.head_features

    def set_dcnv3_core(self, core: DCNv3Core) -> InternImage:
        """Use `core` for every DCNv3 sampling (e.g. `dcnv3_reference`); returns self."""
        for module in self.modules():
            if isinstance(module, DCNv3):
                module.core = core
        return self

    def _levels(self) -> Iterator[Level]:
        return cast(Iterator[Level], iter(self.levels))

    def forward_levels(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The output of each level, before its downsample (after its LayerNorm unless post_norm), for
        dense tasks: `[N x C x H/4 x W/4, N x 2C x H/8 x W/8, N x 4C x H/16 x W/16, N x 8C x H/32 x W/32]`
        (channels-first views of channels-last memory), as the official `forward_features_seq_out`."""
        x = self.pos_drop(self.patch_embed(pixel_values))
        outputs = []
        for level in self._levels():
            x = level(x)
            outputs.append(x.permute(0, 3, 1, 2))
            if level.downsample is not None:
                x = level.downsample(x)
        return outputs

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled features, the classifier's input: the last level through the convolutional head
        (1 x 1 conv, BatchNorm, GELU) and averaged over the map: `N x int(8C * cls_scale)` (768 for T)."""
        x = self.pos_drop(self.patch_embed(pixel_values))
        for level in self._levels():
            x = level(x)
            if level.downsample is not None:
                x = level.downsample(x)
        return self.conv_head(x.permute(0, 3, 1, 2)).mean((2, 3))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`N x 3 x H x W` -> logits `N x num_classes` (the pooled features when num_classes is 0)."""
        features = self.forward_features(pixel_values)
        return features if self.head is None else self.head(features)


def _init_weights(module: nn.Module) -> None:
    """The official initialisation: truncated-normal linear weights (std 0.02), zero biases, unit norms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
