"""`prepare_sam`: swap SAM's fast twins into a model, as `prepare_align` does for ALIGN."""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import nn

from alignsam.fast import FastPath
from alignsam.sam.fast.mask_decoder import PromptBatchDecoder
from alignsam.sam.modeling.mask_decoder import MaskDecoder

M = TypeVar("M", bound=nn.Module)  # an SamModel: this module never imports the model file (one load direction)


def prepare_sam(model: M, fast: FastPath | None = None) -> M:
    """Apply `fast` (default `FastPath()`) to `model` in place and put it in eval mode; returns it. No weight
    changes: the twins share the model's tensors (`SamPredictor` prepares a `shallow_copy` of the model it
    is given, which stays as it is)."""
    fast = fast or FastPath()
    model.eval()
    sam: Any = model
    if fast.sam.prompt_batch and type(sam.mask_decoder) is MaskDecoder:
        sam.mask_decoder = PromptBatchDecoder.of(sam.mask_decoder)
    if fast.compile:  # the compiled wrapper stands in for the module and forwards attribute access to it
        sam.image_encoder = torch.compile(sam.image_encoder)
    return model
