"""ALIGN: EfficientNet + BERT dual encoder, checkpoint-compatible with `kakaobrain/align-base`."""

from alignsam.align.modeling.align import (
    AlignModel,
    AlignOutput,
    AlignTextModel,
    AlignTextModelOutput,
    AlignVisionModel,
    AlignVisionModelOutput,
)
from alignsam.align.modeling.config import PRESETS, AlignConfig, AlignTextConfig, AlignVisionConfig, align_base
from alignsam.align.modeling.loss import align_loss, contrastive_loss
from alignsam.align.processing import AlignImageProcessor, AlignProcessor, AlignTokenizer, BatchFeature

__all__ = [
    "PRESETS",
    "AlignConfig",
    "AlignImageProcessor",
    "AlignModel",
    "AlignOutput",
    "AlignProcessor",
    "AlignTextConfig",
    "AlignTextModel",
    "AlignTextModelOutput",
    "AlignTokenizer",
    "AlignVisionConfig",
    "AlignVisionModel",
    "AlignVisionModelOutput",
    "BatchFeature",
    "align_base",
    "align_loss",
    "contrastive_loss",
]
