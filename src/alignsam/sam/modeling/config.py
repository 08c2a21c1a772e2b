"""Configurations of SAM's three towers and of the assembled model, with the published presets.

Every number that shapes the model lives here (image size, patch size, depth, width, window size, global
attention blocks, epsilons), so that other sizes (a small "demo" SAM, SlimSAM, a Hugging Face directory
with its own values) are a configuration away. Configurations are frozen dataclasses, validated on
creation, and travel as JSON beside every checkpoint this library writes.

The epsilons deserve a note: the official code uses LayerNorm eps 1e-6 in the image encoder and 1e-5 in
the two-way transformer, while Hugging Face's `SamModel` uses its config's 1e-6 in the transformer blocks
and 1e-5 only in the final norm. Each checkpoint format brings its own values, so each reproduces its own
reference exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from alignsam.errors import ConfigError
from alignsam.layers.activations import known_activation
from alignsam.validation import check_numbers, check_parameters, float_tuple, int_tuple, require

ImageFormat = Literal["RGB", "BGR"]


MAX_IMAGE_SIZE = 4096
"""The largest input side a configuration may declare: 4x the published 1024 (attention grows with its square)."""


def _check_activation(name: str, what: str) -> None:
    require(known_activation(name), f"{what}: unknown activation {name!r}.")


@dataclass(frozen=True)
class ImageEncoderConfig:
    """The ViT image encoder (ViTDet-style: windowed blocks, a few global blocks, decomposed rel-pos)."""

    image_size: int = 1024  # side of the square, padded input
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    out_chans: int = 256  # channels of the image embedding (the neck's output)
    qkv_bias: bool = True
    use_abs_pos: bool = True
    use_rel_pos: bool = True
    window_size: int = 14  # 0 means every block attends globally
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    act: str = "gelu"
    layer_norm_eps: float = 1e-6
    neck_layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        indexes = int_tuple(self, "global_attn_indexes", self.global_attn_indexes)
        object.__setattr__(self, "global_attn_indexes", indexes)
        sizes = ("image_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_dim", "out_chans")
        check_numbers(self, *sizes, low=1, integer=True)
        check_numbers(self, "image_size", low=1, high=MAX_IMAGE_SIZE, integer=True)
        for name in ("qkv_bias", "use_abs_pos", "use_rel_pos"):
            require(isinstance(getattr(self, name), bool), f"ImageEncoderConfig.{name} must be true or false.")
        check_numbers(self, "window_size", low=0, integer=True)
        check_numbers(self, "layer_norm_eps", "neck_layer_norm_eps", low=0, above=True)
        require(
            self.image_size % self.patch_size == 0,
            f"ImageEncoderConfig.image_size {self.image_size} is not a multiple of patch_size {self.patch_size}.",
        )
        require(
            self.embed_dim % self.num_heads == 0,
            f"ImageEncoderConfig.embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}.",
        )
        bad = [i for i in self.global_attn_indexes if not 0 <= i < self.depth]
        require(not bad, f"ImageEncoderConfig.global_attn_indexes {bad} are outside 0..{self.depth - 1}.")
        _check_activation(self.act, "ImageEncoderConfig.act")

    @property
    def grid_size(self) -> int:
        """Side of the token grid and of the image embedding (64 for 1024 px and patch 16)."""
        return self.image_size // self.patch_size

    def block_window_size(self, index: int) -> int:
        """Window size of block `index`; 0 for a global-attention block."""
        return 0 if index in self.global_attn_indexes else self.window_size


@dataclass(frozen=True)
class PromptEncoderConfig:
    """Points, boxes and mask logits to sparse and dense prompt embeddings."""

    embed_dim: int = 256
    mask_in_chans: int = 16
    act: str = "gelu"
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        check_numbers(self, "embed_dim", "mask_in_chans", low=1, integer=True)
        check_numbers(self, "layer_norm_eps", low=0, above=True)
        require(
            self.embed_dim > 0 and self.embed_dim % 2 == 0,
            f"PromptEncoderConfig.embed_dim must be positive and even (sin and cos halves), got {self.embed_dim}.",
        )
        require(
            self.mask_in_chans > 0 and self.mask_in_chans % 4 == 0,
            f"PromptEncoderConfig.mask_in_chans must be a positive multiple of 4, got {self.mask_in_chans}.",
        )
        _check_activation(self.act, "PromptEncoderConfig.act")


@dataclass(frozen=True)
class MaskDecoderConfig:
    """The two-way transformer, the mask hypernetworks and the IoU head."""

    transformer_dim: int = 256
    depth: int = 2
    num_heads: int = 8
    mlp_dim: int = 2048
    mlp_act: str = "relu"
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    upscale_act: str = "gelu"
    layer_norm_eps: float = 1e-5  # the four norms of each two-way block
    final_layer_norm_eps: float = 1e-5  # the norm after the final token-to-image attention
    upscale_layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        sizes = ("depth", "num_heads", "mlp_dim", "attention_downsample_rate", "num_multimask_outputs")
        check_numbers(self, *sizes, "transformer_dim", "iou_head_depth", "iou_head_hidden_dim", low=1, integer=True)
        check_numbers(self, "layer_norm_eps", "final_layer_norm_eps", "upscale_layer_norm_eps", low=0, above=True)
        require(
            self.transformer_dim > 0 and self.transformer_dim % 8 == 0,
            f"MaskDecoderConfig.transformer_dim must be a positive multiple of 8, got {self.transformer_dim}.",
        )
        internal = self.transformer_dim // self.attention_downsample_rate
        require(
            self.transformer_dim % self.num_heads == 0 and internal % self.num_heads == 0,
            f"MaskDecoderConfig.num_heads {self.num_heads} must divide transformer_dim {self.transformer_dim} "
            f"and transformer_dim / attention_downsample_rate = {internal}.",
        )
        _check_activation(self.mlp_act, "MaskDecoderConfig.mlp_act")
        _check_activation(self.upscale_act, "MaskDecoderConfig.upscale_act")

    @property
    def num_mask_tokens(self) -> int:
        """The single-mask token plus one token per multimask output."""
        return self.num_multimask_outputs + 1


@dataclass(frozen=True)
class SamConfig:
    """The whole model: the three towers plus pre- and post-processing constants."""

    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    prompt_encoder: PromptEncoderConfig = field(default_factory=PromptEncoderConfig)
    mask_decoder: MaskDecoderConfig = field(default_factory=MaskDecoderConfig)
    pixel_mean: tuple[float, ...] = (123.675, 116.28, 103.53)  # on 0..255 RGB
    pixel_std: tuple[float, ...] = (58.395, 57.12, 57.375)
    mask_threshold: float = 0.0
    image_format: ImageFormat = "RGB"  # channel order the model was trained on

    def __post_init__(self) -> None:
        object.__setattr__(self, "pixel_mean", float_tuple(self, "pixel_mean", self.pixel_mean))
        object.__setattr__(self, "pixel_std", float_tuple(self, "pixel_std", self.pixel_std))
        check_numbers(self, "mask_threshold", low=-1e6, high=1e6)
        enc, prompt, dec = self.image_encoder, self.prompt_encoder, self.mask_decoder
        for name, kind in (("image_encoder", ImageEncoderConfig), ("prompt_encoder", PromptEncoderConfig),
                           ("mask_decoder", MaskDecoderConfig)):  # fmt: skip
            require(isinstance(getattr(self, name), kind), f"SamConfig.{name} must be a {kind.__name__}.")
        require(
            enc.out_chans == prompt.embed_dim == dec.transformer_dim,
            "SamConfig: the image embedding, the prompt embeddings and the decoder must share one width; got "
            f"image_encoder.out_chans={enc.out_chans}, prompt_encoder.embed_dim={prompt.embed_dim}, "
            f"mask_decoder.transformer_dim={dec.transformer_dim}.",
        )
        require(
            len(self.pixel_mean) == len(self.pixel_std) == enc.in_chans,
            f"SamConfig: pixel_mean and pixel_std need {enc.in_chans} values.",
        )
        require(all(s > 0 for s in self.pixel_std), "SamConfig.pixel_std values must be positive.")
        require(
            self.image_format in ("RGB", "BGR"), f"SamConfig.image_format must be RGB or BGR: {self.image_format!r}."
        )
        check_parameters(self, self.num_parameters())

    def num_parameters(self) -> int:
        """The parameter count of the model this configuration builds, from the shapes (nothing is built).

        Exact for the image encoder and the prompt encoder, within a few percent for the decoder: it sizes
        the check of `check_parameters`."""
        enc, prompt, dec = self.image_encoder, self.prompt_encoder, self.mask_decoder
        d, g, m, o = enc.embed_dim, enc.grid_size, enc.mlp_dim, enc.out_chans
        head = d // enc.num_heads
        total = enc.in_chans * enc.patch_size**2 * d + d + (g * g * d if enc.use_abs_pos else 0)
        block = 4 * d + 3 * d * d + (3 * d if enc.qkv_bias else 0) + d * d + d + 2 * d * m + m + d
        total += enc.depth * block
        if enc.use_rel_pos:
            total += sum(2 * (2 * (enc.block_window_size(i) or g) - 1) * head for i in range(enc.depth))
        total += d * o + 2 * o + 9 * o * o + 2 * o  # neck: 1x1 conv, LN, 3x3 conv, LN
        e, c = prompt.embed_dim, prompt.mask_in_chans
        total += e + 4 * e + e + e  # positional matrix (2 x e/2), point embeddings, not-a-point, no-mask
        total += 4 * (c // 4) + (c // 4) + 2 * (c // 4) + 4 * (c // 4) * c + c + 2 * c + c * e + e
        t, n = dec.transformer_dim, dec.num_mask_tokens
        inner = t // dec.attention_downsample_rate
        attn_self, attn_cross = 4 * (t * t + t), 2 * (t * inner + inner) + 2 * (inner * t + t)
        layer = attn_self + 2 * attn_cross + 2 * t * dec.mlp_dim + dec.mlp_dim + t + 8 * t
        total += dec.depth * layer + attn_cross + 2 * t + (1 + n) * t
        total += t * (t // 4) * 4 + t // 4 + 2 * (t // 4) + (t // 4) * (t // 8) * 4 + t // 8  # upscaling
        total += n * (2 * (t * t + t) + t * (t // 8) + t // 8)  # hypernetworks
        hid = dec.iou_head_hidden_dim
        total += t * hid + hid + (dec.iou_head_depth - 2) * (hid * hid + hid) + hid * n + n
        return int(total)

    @property
    def image_size(self) -> int:
        """Side of the padded square the image encoder reads (1024 for the published models)."""
        return self.image_encoder.image_size

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding (64 for the published models)."""
        return self.image_encoder.grid_size

    @property
    def mask_input_size(self) -> int:
        """Side of the low-resolution mask logits (4 x the embedding: 256 for the published models)."""
        return 4 * self.image_encoder.grid_size

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["image_encoder"]["global_attn_indexes"] = list(self.image_encoder.global_attn_indexes)
        out["pixel_mean"] = list(self.pixel_mean)
        out["pixel_std"] = list(self.pixel_std)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SamConfig:
        """Inverse of `to_dict`; unknown keys are an error (a typo must not be silently ignored)."""
        data = dict(data)
        parts: dict[str, Any] = {}
        for name, part_cls in (
            ("image_encoder", ImageEncoderConfig),
            ("prompt_encoder", PromptEncoderConfig),
            ("mask_decoder", MaskDecoderConfig),
        ):
            parts[name] = _dataclass_from_dict(part_cls, data.pop(name, {}), f"SamConfig.{name}")
        top = _dataclass_from_dict(cls, data, "SamConfig", skip=set(parts))
        return dataclasses.replace(top, **parts)


def _dataclass_from_dict(cls: Any, data: Mapping[str, Any], what: str, skip: Collection[str] = ()) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{what} must be a JSON object, got {type(data).__name__}.")
    names = {f.name for f in dataclasses.fields(cls)} - set(skip)
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{what} has unknown keys {unknown}; known: {sorted(names)}.")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{what}: {err}") from err


# ---------------------------------------------------------------------------------------------------------
# Presets of the published checkpoints (build_sam.py of the official repository).


def _official(embed_dim: int, depth: int, num_heads: int, global_attn_indexes: tuple[int, ...]) -> SamConfig:
    return SamConfig(
        image_encoder=ImageEncoderConfig(
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_dim=4 * embed_dim,
            global_attn_indexes=global_attn_indexes,
        )
    )


def sam_vit_b() -> SamConfig:
    """ViT-B/16 SAM (`sam_vit_b_01ec64.pth`, `facebook/sam-vit-base`)."""
    return _official(768, 12, 12, (2, 5, 8, 11))


def sam_vit_l() -> SamConfig:
    """ViT-L/16 SAM (`sam_vit_l_0b3195.pth`, `facebook/sam-vit-large`)."""
    return _official(1024, 24, 16, (5, 11, 17, 23))


def sam_vit_h() -> SamConfig:
    """ViT-H/16 SAM (`sam_vit_h_4b8939.pth`, `facebook/sam-vit-huge`)."""
    return _official(1280, 32, 16, (7, 15, 23, 31))


SAM_PRESETS: dict[str, Callable[[], SamConfig]] = {
    "vit_b": sam_vit_b,
    "vit_l": sam_vit_l,
    "vit_h": sam_vit_h,
}
