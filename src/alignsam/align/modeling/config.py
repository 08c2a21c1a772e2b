"""ALIGN configurations: frozen, validated dataclasses that read and write Hugging Face's `config.json`.

Field names and defaults are those of transformers' `AlignTextConfig`, `AlignVisionConfig` and `AlignConfig`,
so a `config.json` from the hub (or one transformers saved) loads unchanged and ours load in transformers.
The defaults are BERT-base and EfficientNet-B7 as transformers defines them; `kakaobrain/align-base` differs
only in `image_size=289` and `hidden_dim=640` (see `presets.align_base`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from alignsam.errors import ConfigError
from alignsam.layers.activations import known_activation
from alignsam.validation import check_numbers, check_parameters, int_tuple

MAX_IMAGE_SIZE = 4096
"""The largest input side a vision configuration may declare (the published models use 289 and 600)."""

C = TypeVar("C", bound="_JsonConfig")


@dataclasses.dataclass(frozen=True)
class _JsonConfig:
    model_type: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """The `config.json` content, in transformers' layout."""
        out: dict[str, Any] = {"model_type": self.model_type}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, _JsonConfig):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Build from a `config.json` mapping.

        Keys this config does not define are ignored: transformers writes dozens of generic ones (generation
        settings, `architectures`, `torch_dtype`, ...) into every file, the hub's align-base included.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        if data.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError(
                f"Only absolute position embeddings are supported, not {data['position_embedding_type']!r}."
            )
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
        return cls(**kwargs)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        path = Path(directory) / "config.json"
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (configs are frozen)."""
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class AlignTextConfig(_JsonConfig):
    """BERT text tower. Post-LayerNorm, exact GELU, absolute positions; defaults are BERT-base uncased."""

    model_type: ClassVar[str] = "align_text_model"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        sizes = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
        check_numbers(self, *sizes, "max_position_embeddings", "type_vocab_size", low=1, integer=True)
        check_numbers(self, "layer_norm_eps", low=0, above=True)
        check_numbers(self, "hidden_dropout_prob", "attention_probs_dropout_prob", low=0, high=1, below=True)
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}."
            )
        if not known_activation(self.hidden_act):
            raise ConfigError(f"Unknown hidden_act {self.hidden_act!r}.")
        if not isinstance(self.pad_token_id, int) or not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"pad_token_id {self.pad_token_id!r} is outside the vocabulary.")
        check_parameters(self, self.num_parameters())

    def num_parameters(self) -> int:
        """The parameter count of the BERT tower this configuration builds (from the shapes; nothing is built)."""
        h, i = self.hidden_size, self.intermediate_size
        total = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * h + 2 * h
        layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
        return int(total + self.num_hidden_layers * layer + h * h + h)  # + the pooler


@dataclasses.dataclass(frozen=True)
class AlignVisionConfig(_JsonConfig):
    """EfficientNet image tower: a base schedule (the B0 lists below) scaled by width and depth coefficients.

    `depthwise_padding` lists blocks whose stride-2 depthwise conv pads symmetrically; every other stride-2
    block pads `(k//2 - 1, k//2)` on each axis, as the checkpoint was trained (not TF "SAME").
    `hidden_dim` only sized transformers' pooling kernel; pooling here is a global mean (or max).
    `batch_norm_momentum` is in TensorFlow's convention (0.99 = keep 99% of the running statistics).
    """

    model_type: ClassVar[str] = "align_vision_model"

    num_channels: int = 3
    image_size: int = 600
    width_coefficient: float = 2.0
    depth_coefficient: float = 3.1
    depth_divisor: int = 8
    kernel_sizes: tuple[int, ...] = (3, 3, 5, 3, 5, 5, 3)
    in_channels: tuple[int, ...] = (32, 16, 24, 40, 80, 112, 192)
    out_channels: tuple[int, ...] = (16, 24, 40, 80, 112, 192, 320)
    depthwise_padding: tuple[int, ...] = ()
    strides: tuple[int, ...] = (1, 2, 2, 2, 1, 2, 1)
    num_block_repeats: tuple[int, ...] = (1, 2, 2, 3, 3, 4, 1)
    expand_ratios: tuple[int, ...] = (1, 6, 6, 6, 6, 6, 6)
    squeeze_expansion_ratio: float = 0.25
    hidden_act: str = "swish"
    hidden_dim: int = 2560
    pooling_type: str = "mean"
    initializer_range: float = 0.02
    batch_norm_eps: float = 0.001
    batch_norm_momentum: float = 0.99
    drop_connect_rate: float = 0.2

    def __post_init__(self) -> None:
        for name in ("kernel_sizes", "in_channels", "out_channels", "strides", "num_block_repeats", "expand_ratios"):
            object.__setattr__(self, name, int_tuple(self, name, getattr(self, name)))
        object.__setattr__(self, "depthwise_padding", int_tuple(self, "depthwise_padding", self.depthwise_padding))
        if isinstance(self.image_size, list | tuple) and self.image_size:  # transformers allows [h, w]
            object.__setattr__(self, "image_size", self.image_size[0])  # the tower is size-agnostic
        check_numbers(self, "num_channels", "image_size", "depth_divisor", "hidden_dim", low=1, integer=True)
        check_numbers(self, "image_size", low=1, high=MAX_IMAGE_SIZE, integer=True)
        check_numbers(self, "width_coefficient", "depth_coefficient", low=0, high=100, above=True)
        check_numbers(self, "batch_norm_eps", low=0, above=True)
        check_numbers(self, "squeeze_expansion_ratio", low=0, high=1, above=True)
        for name in ("in_channels", "out_channels", "num_block_repeats", "expand_ratios"):
            if any(v < 1 for v in getattr(self, name)):
                raise ConfigError(f"AlignVisionConfig.{name} must be positive, got {getattr(self, name)}.")
        stages = {len(getattr(self, n)) for n in ("kernel_sizes", "in_channels", "out_channels", "strides")}
        stages |= {len(self.num_block_repeats), len(self.expand_ratios)}
        if len(stages) != 1 or 0 in stages:
            raise ConfigError(
                "kernel_sizes, in/out_channels, strides, num_block_repeats and expand_ratios differ in length."
            )
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ConfigError(f"kernel_sizes must be odd, got {self.kernel_sizes}.")
        if any(s not in (1, 2) for s in self.strides):
            raise ConfigError(f"strides must be 1 or 2, got {self.strides}.")
        if self.pooling_type not in ("mean", "max"):
            raise ConfigError(f"pooling_type must be 'mean' or 'max', got {self.pooling_type!r}.")
        if not known_activation(self.hidden_act):
            raise ConfigError(f"Unknown hidden_act {self.hidden_act!r}.")
        check_numbers(self, "batch_norm_momentum", "drop_connect_rate", low=0, high=1, below=True)
        check_parameters(self, self.num_parameters())

    def num_parameters(self) -> int:
        """The parameter count of the EfficientNet this configuration builds (batch-norm scale and shift
        included; from the shapes, stage by stage, so a config of a million blocks costs nothing to check)."""
        stem = self.round_filters(32)
        total = self.num_channels * 9 * stem + 2 * stem

        def block(in_dim: int, out_dim: int, expand: int, k: int) -> int:
            mid, se = in_dim * expand, max(1, int(in_dim * self.squeeze_expansion_ratio))
            expand_part = in_dim * mid + 2 * mid if expand != 1 else 0
            return expand_part + mid * k * k + 2 * mid + 2 * mid * se + se + mid + mid * out_dim + 2 * out_dim

        for stage, repeats in enumerate(self.num_block_repeats):
            first, out = self.round_filters(self.in_channels[stage]), self.round_filters(self.out_channels[stage])
            e, k = self.expand_ratios[stage], self.kernel_sizes[stage]
            n = self.round_repeats(repeats)
            total += block(first, out, e, k) + (n - 1) * block(out, out, e, k)
        return int(total)

    def round_filters(self, channels: int) -> int:
        """Scale a base channel count by the width coefficient, rounded to the divisor (EfficientNet's rule)."""
        divisor = self.depth_divisor
        scaled = channels * self.width_coefficient
        new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
        if new < 0.9 * scaled:  # never round down by more than 10%
            new += divisor
        return int(new)

    def round_repeats(self, repeats: int) -> int:
        return math.ceil(self.depth_coefficient * repeats)

    @property
    def num_blocks(self) -> int:
        return sum(self.round_repeats(r) for r in self.num_block_repeats)

    @property
    def embed_dim(self) -> int:
        """Channels of the last block, which is the pooled image embedding."""
        return self.round_filters(self.out_channels[-1])


@dataclasses.dataclass(frozen=True)
class AlignConfig(_JsonConfig):
    """The dual encoder: a text config, a vision config, the shared embedding size and the temperature.

    `image_tower` describes an image tower other than ALIGN's EfficientNet (the contrastive recipe with
    another backbone, such as InternImage): that tower's own configuration as its `config.json` object, with
    its `model_type`; `vision_config` is then unused, and an image projection maps the tower's width to
    `projection_dim` where they differ. None (ALIGN): the EfficientNet of `vision_config`, whose pooled
    features are the image embedding, without a projection.
    """

    model_type: ClassVar[str] = "align"

    text_config: AlignTextConfig = dataclasses.field(default_factory=AlignTextConfig)
    vision_config: AlignVisionConfig = dataclasses.field(default_factory=AlignVisionConfig)
    projection_dim: int = 640
    temperature_init_value: float = 1.0
    initializer_range: float = 0.02
    image_tower: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        text, vision = self.text_config, self.vision_config
        if text is None:
            text = AlignTextConfig()
        if vision is None:
            vision = AlignVisionConfig()
        if isinstance(text, Mapping):
            text = AlignTextConfig.from_dict(text)
        if isinstance(vision, Mapping):
            vision = AlignVisionConfig.from_dict(vision)
        if not isinstance(text, AlignTextConfig) or not isinstance(vision, AlignVisionConfig):
            raise ConfigError("text_config and vision_config must be AlignTextConfig / AlignVisionConfig or dicts.")
        object.__setattr__(self, "text_config", text)
        object.__setattr__(self, "vision_config", vision)
        check_numbers(self, "projection_dim", low=1, integer=True)
        check_numbers(self, "temperature_init_value", low=0, above=True)
        if self.image_tower is None:
            check_parameters(self, text.num_parameters() + vision.num_parameters())
        if self.image_tower is not None:
            tower = self.image_tower
            if not isinstance(tower, Mapping) or not isinstance(tower.get("model_type"), str):
                raise ConfigError("image_tower must be an image tower's configuration with its model_type.")
            object.__setattr__(self, "image_tower", dict(tower))
        elif vision.embed_dim != self.projection_dim:
            # ALIGN has no image projection: the pooled EfficientNet features are the image embedding.
            raise ConfigError(
                f"projection_dim {self.projection_dim} must equal the vision tower's output width "
                f"{vision.embed_dim} (ALIGN has no image projection)."
            )

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.image_tower is None:  # ALIGN's own config.json, as transformers writes it
            del out["image_tower"]
        return out

    @classmethod
    def from_text_vision_configs(
        cls, text_config: AlignTextConfig, vision_config: AlignVisionConfig, **kwargs: Any
    ) -> AlignConfig:
        """Combine a text and a vision configuration (transformers' constructor of the same name)."""
        return cls(text_config=text_config, vision_config=vision_config, **kwargs)


def config_from_json(data: Mapping[str, Any]) -> AlignConfig | AlignTextConfig | AlignVisionConfig:
    """The configuration a `config.json` describes, by its `model_type` (BERT configs become text configs)."""
    kind = data.get("model_type")
    if kind == "align":
        return AlignConfig.from_dict(data)
    if kind in ("align_text_model", "bert"):
        return AlignTextConfig.from_dict(data)
    if kind in ("align_vision_model", "efficientnet"):
        return AlignVisionConfig.from_dict(data)
    if kind is None:
        raise ConfigError("config.json has no model_type (expected 'align').")
    raise ConfigError(f"config.json describes a {kind!r} model, not ALIGN (expected model_type 'align').")


def align_base() -> AlignConfig:
    """`kakaobrain/align-base`: EfficientNet-B7 at 289 px (640-d) and BERT-base uncased."""
    return AlignConfig(
        text_config=AlignTextConfig(),
        vision_config=AlignVisionConfig(image_size=289, hidden_dim=640),
        projection_dim=640,
    )


PRESETS: dict[str, Callable[[], AlignConfig]] = {"align-base": align_base}
"""Named ALIGN architectures, as short builder functions collected in a plain dict."""
