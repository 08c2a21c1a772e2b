"""`sam_model_registry`, as in the official code: `sam_model_registry["vit_b"](checkpoint="sam_vit_b_01ec64.pth")`.

Each builder uses its preset's configuration (and so the official epsilons) whatever the checkpoint's
layout; use `SamModel.from_pretrained` to take a directory's own configuration instead. Without a
checkpoint the model has random weights, like the official builders.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from alignsam.sam.modeling.config import SAM_PRESETS, SamConfig
from alignsam.sam.modeling.sam import SamModel

Checkpoint = str | os.PathLike[str] | None


def _build(config: SamConfig, checkpoint: Checkpoint) -> SamModel:
    if checkpoint is None:
        return SamModel.from_config(config).eval()
    return SamModel.from_pretrained(checkpoint, config=config)


def build_sam_vit_h(checkpoint: Checkpoint = None) -> SamModel:
    """ViT-H SAM; `checkpoint` is e.g. `sam_vit_h_4b8939.pth`, `facebook/sam-vit-huge` or a saved directory."""
    return _build(SAM_PRESETS["vit_h"](), checkpoint)


def build_sam_vit_l(checkpoint: Checkpoint = None) -> SamModel:
    """ViT-L SAM; `checkpoint` is e.g. `sam_vit_l_0b3195.pth`."""
    return _build(SAM_PRESETS["vit_l"](), checkpoint)


def build_sam_vit_b(checkpoint: Checkpoint = None) -> SamModel:
    """ViT-B SAM; `checkpoint` is e.g. `sam_vit_b_01ec64.pth`."""
    return _build(SAM_PRESETS["vit_b"](), checkpoint)


build_sam = build_sam_vit_h

sam_model_registry: dict[str, Callable[..., SamModel]] = {
    "default": build_sam_vit_h,
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
}
