"""Fast-path preparation of an ALIGN model (see `alignsam.inference.FastPath`)."""

from __future__ import annotations

import torch

from alignsam.align.efficientnet import fold_batchnorm
from alignsam.align.model import AlignModel
from alignsam.inference import FastPath


def prepare_align(model: AlignModel, fast: FastPath) -> AlignModel:
    """Apply `fast` to `model` in place and put it in eval mode; returns it. Not for training afterwards."""
    model.eval()
    net = model.vision_model.efficientnet
    if fast.fold_batchnorm:
        fold_batchnorm(net)
    if fast.channels_last:
        net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if fast.compile:
        # setattr: the compiled wrapper stands in for the module and forwards attribute access to it
        setattr(model.vision_model, "efficientnet", torch.compile(net))  # noqa: B010
        setattr(model.text_model, "bert", torch.compile(model.text_model.bert, dynamic=True))  # noqa: B010
    return model
