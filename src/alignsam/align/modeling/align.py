"""ALIGN: an EfficientNet image tower and a BERT text tower in one embedding space.

The classes and methods mirror transformers' (`AlignModel`, `AlignTextModel`, `AlignVisionModel`,
`get_text_features`, `get_image_features`, `from_pretrained`, `save_pretrained`), so code written for
transformers runs with `from alignsam import ...`. `get_*_features` return plain `B x D` tensors, as in
transformers 4 and in the model card's examples. `encode_text` / `encode_image` are the lean path the
rest of the project uses.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from alignsam.align import convert
from alignsam.align.modeling.bert import Bert
from alignsam.align.modeling.config import AlignConfig, AlignTextConfig, AlignVisionConfig, config_from_json
from alignsam.align.modeling.efficientnet import EfficientNet
from alignsam.align.modeling.loss import align_loss
from alignsam.align.pretrained import (
    RECOMMENDED_FILES,
    load_pretrained,
    read_config,
    read_weights,
    resolve,
    take_prefix,
    write_pretrained,
)
from alignsam.errors import ConfigError, InputError
from alignsam.fast import FastPath
from alignsam.io.hub import CacheDir
from alignsam.io.resolve import ModelSource, Ref
from alignsam.outputs import ModelOutput

T = TypeVar("T", bound="_Tower")


@dataclasses.dataclass
class AlignTextModelOutput(ModelOutput):
    """`last_hidden_state`: `B x L x C`; `pooler_output`: `B x C` (tanh pooler, unused by ALIGN)."""

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None


@dataclasses.dataclass
class AlignVisionModelOutput(ModelOutput):
    """`last_hidden_state`: `B x C x h x w` final feature map; `pooler_output`: `B x C` pooled features."""

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None


@dataclasses.dataclass
class AlignOutput(ModelOutput):
    """Output of `AlignModel.forward`.

    `logits_per_image`: `B_img x B_txt`; `logits_per_text`: `B_txt x B_img` (cosine / temperature);
    `text_embeds`, `image_embeds`: L2-normalised, `B x D`; `loss`: contrastive loss if asked for.
    """

    loss: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_model_output: AlignTextModelOutput | None = None
    vision_model_output: AlignVisionModelOutput | None = None


def _init_module(module: nn.Module, std: float) -> None:
    """From-scratch init: BERT's N(0, std) for linear and embedding layers, EfficientNet's fan-out
    He-normal for convolutions (the original Keras init), identity for norms."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=std)
        if module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()
    elif isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm | nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class _Tower(nn.Module):
    """Loading and saving shared by the two towers. A tower knows its slice of an ALIGN checkpoint: the
    sub-configuration (`text_config` / `vision_config`), the key prefixes its tensors may carry, its root
    module's name, and the converters to and from Hugging Face names."""

    _config_type: ClassVar[type]
    _sub_config: ClassVar[str]
    _prefixes: ClassVar[tuple[str, ...]]
    _root: ClassVar[str]
    _architecture: ClassVar[str]

    config: Any

    @staticmethod
    def _to_ours(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @staticmethod
    def _to_hf(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @classmethod
    def from_pretrained(
        cls: type[T],
        ref: Ref | ModelSource,
        *,
        revision: str | None = None,
        cache_dir: CacheDir = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> T:
        """From a full ALIGN checkpoint (this tower's part) or a single-tower checkpoint (for the text tower
        also any BERT checkpoint); a hub id, a local folder or a bundled model (`demo`)."""
        source = resolve(ref, revision, cache_dir)
        config = config_from_json(read_config(source))
        if isinstance(config, AlignConfig):
            config = getattr(config, cls._sub_config)
        if not isinstance(config, cls._config_type):
            raise ConfigError(f"'{ref}' holds no {cls._sub_config.split('_')[0]} tower.")
        tensors = take_prefix(read_weights(source), *cls._prefixes)
        sd = {f"{cls._root}.{k}": v for k, v in cls._to_ours(tensors).items()}
        return load_pretrained(lambda: cls(config), sd, f"checkpoint '{ref}'", dtype, device)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write a Hugging Face single-tower folder (config.json, model.safetensors)."""
        sd = self._to_hf(take_prefix(self.state_dict(), f"{self._root}."))
        write_pretrained(directory, self.config.to_dict(), self._architecture, sd)


class AlignTextModel(_Tower):
    """BERT text tower. Load with `AlignTextModel.from_pretrained` from an ALIGN or a BERT checkpoint."""

    _config_type = AlignTextConfig
    _sub_config = "text_config"
    _prefixes = ("text_model.", "bert.")
    _root = "bert"
    _architecture = "AlignTextModel"
    _to_ours = staticmethod(convert.hf_text_to_ours)
    _to_hf = staticmethod(convert.ours_text_to_hf)

    def __init__(self, config: AlignTextConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = Bert(config)
        self.apply(lambda m: _init_module(m, config.initializer_range))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> AlignTextModelOutput:
        """`input_ids`, `attention_mask`, `token_type_ids`: `B x L`."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids, position_ids)
        return AlignTextModelOutput(last_hidden_state=hidden, pooler_output=self.bert.pooler(hidden))


class AlignVisionModel(_Tower):
    """EfficientNet image tower with global pooling. The pooled `B x C` output is ALIGN's image embedding."""

    _config_type = AlignVisionConfig
    _sub_config = "vision_config"
    _prefixes = ("vision_model.", "efficientnet.")
    _root = "efficientnet"
    _architecture = "AlignVisionModel"
    _to_ours = staticmethod(convert.hf_vision_to_ours)
    _to_hf = staticmethod(convert.ours_vision_to_hf)

    def __init__(self, config: AlignVisionConfig) -> None:
        super().__init__()
        self.config = config
        self.efficientnet = EfficientNet(config)
        self.apply(lambda m: _init_module(m, config.initializer_range))

    def forward(self, pixel_values: torch.Tensor) -> AlignVisionModelOutput:
        """`pixel_values`: `B x 3 x H x W`, scaled to [-1, 1] (see `AlignImageProcessor`)."""
        features = self.efficientnet(pixel_values)
        return AlignVisionModelOutput(last_hidden_state=features, pooler_output=self.efficientnet.pool(features))

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The pooled features, `B x embed_dim`: ALIGN's image embedding (the `ImageTower` protocol)."""
        return self.efficientnet.pool(self.efficientnet(pixel_values))

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim


class ImageTower(Protocol):
    """What `AlignModel` needs of an image tower (an `nn.Module`): `forward_features(pixel_values)`, pixels
    `B x 3 x H x W` -> pooled features `B x embed_dim`, and, for a tower other than ALIGN's EfficientNet,
    `config_json()`, its configuration as the `config.json` object (with its `model_type`) that
    `AlignConfig.image_tower` holds. `alignsam.internimage.InternImage` is one."""

    @property
    def embed_dim(self) -> int: ...

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor: ...

    def config_json(self) -> dict[str, Any]: ...


TowerBuilder = Callable[[Mapping[str, Any]], nn.Module]
"""Builds an image tower, with fresh weights, from the configuration `AlignConfig.image_tower` holds."""


class AlignModel(nn.Module):
    """The dual encoder.

    Built from a config (`AlignModel(config)`), or from towers that are already built
    (`AlignModel(config, text_model=..., vision_model=...)`), or loaded with `from_pretrained`.

    The image tower is ALIGN's EfficientNet (`AlignVisionModel`), or another `ImageTower` (InternImage:
    ALIGN's recipe with another backbone) that `config.image_tower` describes. ALIGN has no image
    projection: its pooled EfficientNet features are the embedding. Another tower whose width differs from
    `projection_dim` gets one (`image_projection`, a linear layer).
    """

    def __init__(
        self,
        config: AlignConfig | None = None,
        text_model: AlignTextModel | None = None,
        vision_model: AlignVisionModel | nn.Module | None = None,
    ) -> None:
        super().__init__()
        config = config or AlignConfig()
        self.config = config
        self.text_model = text_model or AlignTextModel(config.text_config)
        self.vision_model = vision_model or _efficientnet_tower(config)
        _check_tower(self.vision_model, config)
        width = self._tower().embed_dim
        self.image_projection: nn.Linear | None = None
        if width != config.projection_dim:
            self.image_projection = nn.Linear(width, config.projection_dim)
            nn.init.xavier_uniform_(self.image_projection.weight)
            nn.init.zeros_(self.image_projection.bias)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim)
        # Logits are cosine similarities divided by this learnable scalar (ALIGN's temperature, init 1.0).
        self.temperature = nn.Parameter(torch.tensor(float(config.temperature_init_value)))
        nn.init.xavier_uniform_(self.text_projection.weight)
        nn.init.zeros_(self.text_projection.bias)
        # Settings the checkpoint's folder recommends (file name -> JSON object, e.g. the demo's `regions.json`
        # for mask labels); filled by `from_pretrained`, written back by `save_pretrained`.
        self.recommended: dict[str, dict[str, Any]] = {}
        # How inference calls run (eval mode, autograd off): through a prepared twin of this model with the
        # fast paths of `alignsam.align.fast`; `FastPath.PLAIN` runs these modules as they are.
        self.fast = FastPath()

    def _inference_twin(self) -> AlignModel | None:
        """The prepared twin that answers a call made for inference, or None (training, autograd on, or
        `fast` is `FastPath.PLAIN`): the same numbers within the fast paths' tolerances, faster."""
        if self.training or torch.is_grad_enabled() or self.fast == FastPath.PLAIN:
            return None
        from alignsam.align.fast.prepare import inference_twin

        return inference_twin(self, self.fast)

    # --- the lean path --------------------------------------------------------------------------------

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        normalize: bool = False,
    ) -> torch.Tensor:
        """Text embeddings, `B x D`: the projected [CLS] state (L2-normalised if `normalize`)."""
        twin = self._inference_twin()
        if twin is not None:
            with self.fast.autocast(self.temperature.device, inference_mode=False):
                return twin.encode_text(input_ids, attention_mask, token_type_ids, position_ids, normalize)
        first = self.text_model.bert.first_token(input_ids, attention_mask, token_type_ids, position_ids)
        embeds = self.text_projection(first)
        return F.normalize(embeds, dim=-1) if normalize else embeds

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Image embeddings, `B x D`: the pooled EfficientNet features, or another tower's projected
        (L2-normalised if `normalize`)."""
        twin = self._inference_twin()
        if twin is not None:
            with self.fast.autocast(self.temperature.device, inference_mode=False):
                return twin.encode_image(pixel_values, normalize)
        embeds = self._project_image(self._tower().forward_features(pixel_values))
        return F.normalize(embeds, dim=-1) if normalize else embeds

    def _tower(self) -> ImageTower:
        return cast(ImageTower, self.vision_model)

    def _project_image(self, features: torch.Tensor) -> torch.Tensor:
        return features if self.image_projection is None else self.image_projection(features)

    def logits(self, text_embeds: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        """`logits_per_text`, `B_txt x B_img`, from L2-normalised embeddings."""
        return text_embeds @ image_embeds.t() / self.temperature

    # --- transformers' surface ------------------------------------------------------------------------

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unnormalised text embeddings, `B x D` (a tensor, as in transformers 4 and the model card)."""
        return self.encode_text(input_ids, attention_mask, token_type_ids, position_ids)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Unnormalised image embeddings, `B x D`."""
        return self.encode_image(pixel_values)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        return_loss: bool | None = None,
        **unused: Any,
    ) -> AlignOutput:
        """Embed both modalities and score every text against every image.

        Args:
            input_ids, attention_mask, token_type_ids: `B_txt x L` (from `AlignProcessor`).
            pixel_values: `B_img x 3 x H x W`.
            return_loss: also return the contrastive loss (needs `B_txt == B_img`, pairs on the diagonal).
        """
        if input_ids is None or pixel_values is None:
            raise InputError("AlignModel.forward needs both input_ids and pixel_values.")
        if unused.get("return_dict") is False:
            raise InputError("return_dict=False is not supported; outputs also index like tuples.")
        twin = self._inference_twin()
        if twin is not None:
            with self.fast.autocast(self.temperature.device, inference_mode=False):
                return twin(input_ids, pixel_values, attention_mask, token_type_ids, position_ids, return_loss)
        if isinstance(self.vision_model, AlignVisionModel):
            vision = self.vision_model(pixel_values)
        else:  # another tower: its pooled features
            vision = AlignVisionModelOutput(pooler_output=self._tower().forward_features(pixel_values))
        text = self.text_model(input_ids, attention_mask, token_type_ids, position_ids)
        assert text.last_hidden_state is not None and vision.pooler_output is not None
        text_embeds = F.normalize(self.text_projection(text.last_hidden_state[:, 0]), dim=-1)
        image_embeds = F.normalize(self._project_image(vision.pooler_output), dim=-1)
        logits_per_text = self.logits(text_embeds, image_embeds)
        loss = None
        if return_loss:
            if logits_per_text.shape[0] != logits_per_text.shape[1]:
                raise InputError(
                    f"return_loss needs as many texts as images (pairs), got {tuple(logits_per_text.shape)}."
                )
            loss = align_loss(logits_per_text)
        return AlignOutput(
            loss=loss,
            logits_per_image=logits_per_text.t(),
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text,
            vision_model_output=vision,
        )

    @classmethod
    def from_pretrained(
        cls,
        ref: Ref | ModelSource,
        *,
        revision: str | None = None,
        cache_dir: CacheDir = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        image_tower: TowerBuilder | None = None,
    ) -> AlignModel:
        """Load a Hugging Face ALIGN checkpoint: a hub id such as `kakaobrain/align-base` (or its short name
        `align-base`), a local folder, or a bundled model (`demo`).

        A checkpoint with another image tower (`config.image_tower`) needs `image_tower`, the function that
        builds that tower from its configuration (`alignsam.tools.towers.build_image_tower` knows InternImage;
        `alignsam.tools.towers.load_align` passes it)."""
        source = resolve(ref, revision, cache_dir)
        config = config_from_json(read_config(source))
        if not isinstance(config, AlignConfig):
            raise ConfigError(
                f"'{ref}' holds a single tower; load it with AlignTextModel or AlignVisionModel.from_pretrained."
            )
        tower = config.image_tower
        if tower is not None and image_tower is None:
            raise ConfigError(
                f"'{ref}' has a {tower['model_type']} image tower, which AlignModel builds only with a tower "
                "builder: load it with alignsam.tools.towers.load_align (the alignsam commands do)."
            )

        def build() -> AlignModel:
            return cls(config, vision_model=None if tower is None or image_tower is None else image_tower(tower))

        sd = convert.hf_align_to_ours(read_weights(source), efficientnet=tower is None)
        model = load_pretrained(build, sd, f"checkpoint '{ref}'", dtype, device)
        model.recommended = source.recommended(RECOMMENDED_FILES)
        return model

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write a Hugging Face `AlignModel` folder (config.json, model.safetensors) that transformers loads,
        with the recommended-settings files."""
        sd = convert.ours_align_to_hf(self.state_dict())
        write_pretrained(directory, self.config.to_dict(), "AlignModel", sd, self.recommended)


def _efficientnet_tower(config: AlignConfig) -> AlignVisionModel:
    if config.image_tower is not None:
        raise ConfigError(
            f"This ALIGN's image tower is {config.image_tower['model_type']!r}: build it and pass it as "
            "vision_model (alignsam.tools.towers.build_image_tower builds it from config.image_tower)."
        )
    return AlignVisionModel(config.vision_config)


def _check_tower(tower: nn.Module, config: AlignConfig) -> None:
    """An image tower other than ALIGN's must follow `ImageTower` and be the one `config.image_tower` names
    (so that a saved model says which tower it has)."""
    if isinstance(tower, AlignVisionModel):
        if config.image_tower is not None:
            raise ConfigError("config.image_tower describes another tower, but an EfficientNet was given.")
        return
    if not callable(getattr(tower, "forward_features", None)) or not isinstance(getattr(tower, "embed_dim", None), int):
        raise ConfigError(
            f"{type(tower).__name__} is not an image tower: it needs forward_features(pixels) -> B x D and embed_dim."
        )
    described = cast(ImageTower, tower).config_json() if callable(getattr(tower, "config_json", None)) else None
    if config.image_tower is None or described is None or described != config.image_tower:
        raise ConfigError(
            f"config.image_tower must describe the {type(tower).__name__} image tower: "
            "AlignConfig(..., image_tower=tower.config_json())."
        )


__all__ = [
    "AlignModel",
    "AlignOutput",
    "AlignTextModel",
    "AlignTextModelOutput",
    "AlignVisionModel",
    "AlignVisionModelOutput",
    "ImageTower",
]
