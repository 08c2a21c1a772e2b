"""What a run trains: the demonstration architecture, models from scratch or from a checkpoint, freezing."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from alignsam.io.files import named_or_json
from alignsam.sam.modeling.config import (
    SAM_PRESETS,
    ImageEncoderConfig,
    MaskDecoderConfig,
    PromptEncoderConfig,
    SamConfig,
)
from alignsam.sam.modeling.sam import SamModel
from alignsam.sam.pretrained import read_config


def sam_demo() -> SamConfig:
    """The demonstration SAM (preset `demo`): SAM's design at 128 px, small enough to train on 2 CPU cores.

    A 128 x 128 input cut into 8 x 8 patches gives a 16 x 16 grid: few enough tokens that every block of the
    ViT attends globally (window 0), and mask logits of 64 x 64, one cell per 2 x 2 pixels of the input.
    The prompt encoder and the two-way decoder are the published design at width 128.
    """
    width = 128
    return SamConfig(
        image_encoder=ImageEncoderConfig(
            image_size=128,
            patch_size=8,
            embed_dim=128,
            depth=4,
            num_heads=4,
            mlp_dim=512,
            out_chans=width,
            window_size=0,
            global_attn_indexes=(),
        ),
        prompt_encoder=PromptEncoderConfig(embed_dim=width, mask_in_chans=16),
        mask_decoder=MaskDecoderConfig(transformer_dim=width, num_heads=4, mlp_dim=512, iou_head_hidden_dim=width),
    )


ARCHITECTURES: dict[str, Callable[[], SamConfig]] = {"demo": sam_demo, **SAM_PRESETS}


def architecture(name: str) -> SamConfig:
    """A named architecture (`demo`, `vit_b`, `vit_l`, `vit_h`) or the `SamConfig` in a `config.json`."""
    # our config.json (with "model_type"), a Hugging Face one, or a bare `SamConfig.to_dict()`
    return named_or_json(
        name, ARCHITECTURES, lambda data: read_config(data) if "model_type" in data else SamConfig.from_dict(data)
    )


def build_model(init: str | None, arch: str | None, seed: int) -> SamModel:
    """`init` loaded, or `arch` built from scratch with weights drawn from `seed`; float32 on the CPU."""
    if init is not None:
        return SamModel.from_pretrained(init, device="cpu").float()
    assert arch is not None
    torch.manual_seed(seed)
    return SamModel.from_config(architecture(arch))


def freeze(model: SamModel, towers: Iterable[str]) -> list[str]:
    """Stop gradients to the named towers (`image_encoder`, `prompt_encoder`, `mask_decoder`); returns the
    names of the frozen parameters."""
    frozen = []
    for tower in towers:
        module: nn.Module = getattr(model, tower)
        module.requires_grad_(False)
        frozen += [f"{tower}.{name}" for name, _ in module.named_parameters()]
    return frozen


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """The trainable parameters in two AdamW groups: weight matrices, convolutions and embeddings decay;
    biases, norms and 1-d tables do not."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
