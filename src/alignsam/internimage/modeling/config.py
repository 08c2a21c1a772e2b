"""InternImage configuration: a frozen, validated dataclass with the published presets T, S, B, L and XL.

Field names follow the official code's constructor and the Hugging Face remote-code `config.json`
(`channels`, `depths`, `groups`, `layer_scale`, `post_norm`, `offset_scale`, `cls_scale`, ...), so a hub
`config.json` reads unchanged. The fields that only InternImage-H and -G use (`res_post_norm`,
`center_feature_scale`, `level2_post_norm`, `level2_post_norm_block_ids`, `dw_kernel_size`, `remove_center`,
`use_clip_projector`) are read and must keep their defaults: such a configuration is refused with a
`ConfigError` that names the field and the supported variants.

Preset values are those of the official `classification/configs/*.yaml` (architecture and drop-path rate)
and of the Hugging Face repositories `OpenGVLab/internimage_{t,s,b}_1k_224` and
`OpenGVLab/internimage_{l,xl}_22kto1k_384` (image size).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from alignsam.errors import ConfigError
from alignsam.validation import check_numbers, require

DropPathType = Literal["linear", "uniform"]

SUPPORTED = "InternImage-T, -S, -B, -L and -XL"

MAX_PARAMETERS = 4_000_000_000
"""Configurations above this many parameters (InternImage-G has 3 B) are refused before anything is built."""

MAX_IMAGE_SIZE = 8192

# H/G-only fields and the value every supported variant has.
_HG_DEFAULTS: dict[str, Any] = {
    "res_post_norm": False,
    "center_feature_scale": False,
    "level2_post_norm": False,
    "level2_post_norm_block_ids": None,
    "dw_kernel_size": None,
    "remove_center": False,
    "use_clip_projector": False,
}


@dataclasses.dataclass(frozen=True)
class InternImageConfig:
    """The architecture of an InternImage classifier (defaults: InternImage-T at 224 px).

    channels: width C of the first level; level i has C * 2**i channels.
    depths, groups: blocks and DCNv3 groups per level (the same number of levels in both).
    mlp_ratio: MLP hidden width over the block width.
    offset_scale: DCNv3 sampling offsets (and the 3 x 3 base grid) are multiplied by this (2.0 for L/XL).
    layer_scale: None, or the initial value of the per-channel residual scales `gamma1`/`gamma2`.
    post_norm: blocks normalise the branch output (`x + norm(dcn(x))`) instead of its input; levels then
        end without their own LayerNorm.
    drop_rate: dropout after the stem and inside the MLPs; drop_path_rate: stochastic depth of the last
        block, rising linearly from 0 over the blocks (`drop_path_type="linear"`) or the same everywhere.
    cls_scale: the head's 1 x 1 convolution widens the last level's 8C channels to int(8C * cls_scale).
    num_classes: classifier outputs; 0 keeps the convolutional head and drops the final linear layer.
    image_size: the side the evaluation preprocessing resizes and crops to.
    """

    channels: int = 64
    depths: tuple[int, ...] = (4, 4, 18, 4)
    groups: tuple[int, ...] = (4, 8, 16, 32)
    mlp_ratio: float = 4.0
    offset_scale: float = 1.0
    layer_scale: float | None = None
    post_norm: bool = False
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    drop_path_type: DropPathType = "linear"
    cls_scale: float = 1.5
    num_classes: int = 1000
    image_size: int = 224
    # InternImage-H/G only; must keep these values.
    res_post_norm: bool = False
    center_feature_scale: bool = False
    level2_post_norm: bool = False
    level2_post_norm_block_ids: tuple[int, ...] | None = None
    dw_kernel_size: int | None = None
    remove_center: bool = False
    use_clip_projector: bool = False

    def __post_init__(self) -> None:
        for name in ("depths", "groups"):
            value = getattr(self, name)
            if not isinstance(value, list | tuple) or not value:
                raise ConfigError(f"InternImageConfig.{name} must be a non-empty list of integers, got {value!r}.")
            object.__setattr__(self, name, tuple(value))
        if isinstance(self.level2_post_norm_block_ids, list):
            object.__setattr__(self, "level2_post_norm_block_ids", tuple(self.level2_post_norm_block_ids))
        self._check_hg_fields()
        check_numbers(self, "channels", "image_size", low=1, integer=True)
        check_numbers(self, "num_classes", low=0, integer=True)
        for name in ("depths", "groups"):
            for i, v in enumerate(getattr(self, name)):
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ConfigError(f"InternImageConfig.{name}[{i}] must be an integer >= 1, got {v!r}.")
        require(
            len(self.depths) == len(self.groups),
            f"InternImageConfig.depths {list(self.depths)} and groups {list(self.groups)} differ in length.",
        )
        require(len(self.depths) <= 8, f"InternImageConfig has {len(self.depths)} levels; at most 8 are allowed.")
        require(
            self.channels % 2 == 0,
            f"InternImageConfig.channels must be even (the stem halves it), got {self.channels}.",
        )
        for i, g in enumerate(self.groups):
            width = self.level_channels(i)
            require(
                width % g == 0,
                f"InternImageConfig: level {i} has {width} channels, not divisible by its {g} DCNv3 groups.",
            )
        check_numbers(self, "mlp_ratio", "offset_scale", "cls_scale", low=0, above=True)
        check_numbers(self, "layer_scale", low=0, above=True, optional=True)
        check_numbers(self, "drop_rate", "drop_path_rate", low=0, high=1, below=True)
        require(
            self.drop_path_type in ("linear", "uniform"),
            f"InternImageConfig.drop_path_type must be 'linear' or 'uniform', got {self.drop_path_type!r}.",
        )
        for name in ("post_norm",):
            require(isinstance(getattr(self, name), bool), f"InternImageConfig.{name} must be true or false.")
        require(
            self.image_size <= MAX_IMAGE_SIZE,
            f"InternImageConfig.image_size {self.image_size} is over the limit of {MAX_IMAGE_SIZE}.",
        )
        require(
            int(self.channels * self.mlp_ratio) >= 1 and int(self.num_features * self.cls_scale) >= 1,
            "InternImageConfig: mlp_ratio and cls_scale leave a layer without channels.",
        )
        params = self.num_parameters()
        require(
            params <= MAX_PARAMETERS,
            f"InternImageConfig describes {params / 1e9:.1f} B parameters, over the limit of "
            f"{MAX_PARAMETERS / 1e9:.0f} B; is it the intended configuration?",
        )

    def _check_hg_fields(self) -> None:
        changed = [k for k, default in _HG_DEFAULTS.items() if getattr(self, k) != default]
        if changed:
            shown = ", ".join(f"{k}={getattr(self, k)!r}" for k in changed)
            raise ConfigError(
                f"This InternImage configuration uses InternImage-H/G features ({shown}), which are not "
                f"supported; supported: {SUPPORTED}."
            )

    @property
    def num_levels(self) -> int:
        return len(self.depths)

    def level_channels(self, level: int) -> int:
        """Channels of level `level` (C * 2**level)."""
        return self.channels * 2**level

    @property
    def num_features(self) -> int:
        """Channels of the last level, the input of the convolutional head."""
        return self.level_channels(self.num_levels - 1)

    @property
    def head_features(self) -> int:
        """Width of the pooled features `forward_features` returns: int(num_features * cls_scale)."""
        return int(self.num_features * self.cls_scale)

    def drop_path_rates(self) -> list[float]:
        """Stochastic-depth rate of each block, in order (linear: 0 to `drop_path_rate`, as the official code)."""
        import torch

        total = sum(self.depths)
        if self.drop_path_type == "uniform":
            return [self.drop_path_rate] * total
        return torch.linspace(0, self.drop_path_rate, total, device="cpu").tolist()

    def num_parameters(self) -> int:
        """The parameter count of the model this configuration builds (from the shapes; nothing is built)."""
        total = 3 * 9 * (self.channels // 2) + self.channels // 2 + 2 * (self.channels // 2)  # stem conv1 + LN
        total += (self.channels // 2) * 9 * self.channels + 3 * self.channels  # stem conv2 + LN
        for i, depth in enumerate(self.depths):
            c, g = self.level_channels(i), self.groups[i]
            hidden = int(c * self.mlp_ratio)
            dcn = 12 * c + 2 * (c * c + c) + (c + 1) * g * 27  # dw conv + LN, in/out proj, offset + mask
            mlp = 2 * c * hidden + hidden + c
            block = 4 * c + dcn + mlp + (2 * c if self.layer_scale is not None else 0)
            total += depth * block + (0 if self.post_norm else 2 * c)
            if i < self.num_levels - 1:
                total += c * 9 * 2 * c + 4 * c  # downsample conv + LN
        head = self.head_features
        total += self.num_features * head + 2 * head
        if self.num_classes:
            total += head * self.num_classes + self.num_classes
        return total

    # JSON -------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists), the H/G-only fields included for the hub's readers."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InternImageConfig:
        """From our `config.json` fields or a Hugging Face remote-code `config.json` (unknown keys ignored;
        `core_op`, `act_layer` and `norm_layer` must be the published 'DCNv3', 'GELU' and 'LN')."""
        for key, expected in (("core_op", "DCNv3"), ("act_layer", "GELU"), ("norm_layer", "LN")):
            if key in data and data[key] != expected:
                raise ConfigError(
                    f"InternImage {key}={data[key]!r} is not supported (only {expected!r}, as every published "
                    f"checkpoint); supported: {SUPPORTED}."
                )
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise ConfigError(f"Not an InternImage configuration: {err}") from err

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        out = Path(path)
        out.write_text(self.to_json())
        return out

    def replace(self, **changes: Any) -> InternImageConfig:
        """A copy with some fields changed (configurations are frozen)."""
        return dataclasses.replace(self, **changes)


def internimage_t() -> InternImageConfig:
    """InternImage-T: 29.92 M parameters, 224 px, ImageNet-1k top-1 83.5."""
    return InternImageConfig(channels=64, depths=(4, 4, 18, 4), groups=(4, 8, 16, 32), drop_path_rate=0.1)


def internimage_s() -> InternImageConfig:
    """InternImage-S: 50.08 M parameters, 224 px, post-norm with layer scale, top-1 84.2."""
    return InternImageConfig(
        channels=80, depths=(4, 4, 21, 4), groups=(5, 10, 20, 40), layer_scale=1e-5, post_norm=True,
        drop_path_rate=0.4,
    )  # fmt: skip


def internimage_b() -> InternImageConfig:
    """InternImage-B: 97.46 M parameters, 224 px, post-norm with layer scale, top-1 84.9."""
    return InternImageConfig(
        channels=112, depths=(4, 4, 21, 4), groups=(7, 14, 28, 56), layer_scale=1e-5, post_norm=True,
        drop_path_rate=0.5,
    )  # fmt: skip


def internimage_l() -> InternImageConfig:
    """InternImage-L (ImageNet-22k pre-trained, 1k fine-tuned): 384 px, offset scale 2, top-1 87.7."""
    return InternImageConfig(
        channels=160, depths=(5, 5, 22, 5), groups=(10, 20, 40, 80), layer_scale=1e-5, post_norm=True,
        offset_scale=2.0, drop_path_rate=0.1, image_size=384,
    )  # fmt: skip


def internimage_xl() -> InternImageConfig:
    """InternImage-XL (ImageNet-22k pre-trained, 1k fine-tuned): 384 px, offset scale 2, top-1 88.0."""
    return InternImageConfig(
        channels=192, depths=(5, 5, 24, 5), groups=(12, 24, 48, 96), layer_scale=1e-5, post_norm=True,
        offset_scale=2.0, drop_path_rate=0.2, image_size=384,
    )  # fmt: skip


INTERNIMAGE_PRESETS: dict[str, Callable[[], InternImageConfig]] = {
    "internimage-t": internimage_t,
    "internimage-s": internimage_s,
    "internimage-b": internimage_b,
    "internimage-l": internimage_l,
    "internimage-xl": internimage_xl,
}
