"""Fast-path preparation of an ALIGN model (see `alignsam.fast.FastPath`)."""

from __future__ import annotations

import torch

from alignsam.align.fast.efficientnet import can_fuse, fuse_efficientnet
from alignsam.align.modeling.align import AlignModel
from alignsam.align.modeling.efficientnet import EfficientNet, MBConv, SqueezeExcite, fold_batchnorm
from alignsam.fast import FastPath


def prepare_align(model: AlignModel, fast: FastPath) -> AlignModel:
    """Apply `fast` to `model` in place and put it in eval mode; returns it. Not for training afterwards."""
    model.eval()
    net = model.vision_model.efficientnet
    if fast.fold_batchnorm:
        fold_batchnorm(net)
    if fast.channels_last:
        to_channels_last(net)
    if fast.inplace:
        set_inplace(net)
    if fast.fuse and fast.fold_batchnorm and not fast.compile and isinstance(net, EfficientNet) and can_fuse(net):
        dtype = torch.bfloat16 if fast.precision == "bf16" else torch.float32
        fused = fuse_efficientnet(net, dtype)
        setattr(model.vision_model, "efficientnet", fused)  # noqa: B010  (a stand-in, not an EfficientNet)
    if fast.pack_text and not fast.compile:
        model.text_model.bert.packed = True
    if fast.compile:
        # setattr: the compiled wrapper stands in for the module and forwards attribute access to it
        setattr(model.vision_model, "efficientnet", torch.compile(net))  # noqa: B010
        setattr(model.text_model, "bert", torch.compile(model.text_model.bert, dynamic=True))  # noqa: B010
    return model


def set_inplace(net: torch.nn.Module) -> None:
    """Activations, squeeze-excite gates and residual sums of the image tower write into their input
    (inference only: autograd needs those inputs kept)."""
    for module in net.modules():
        if isinstance(module, torch.nn.SiLU | torch.nn.ReLU | SqueezeExcite | MBConv):
            module.inplace = True


def to_channels_last(net: torch.nn.Module) -> None:
    """Convolution weights in channels-last order, copying only those not already in it.

    `Module.to(memory_format=...)` copies every 4-D weight, even 1x1 and depthwise kernels whose layout is
    channels-last already; for weights memory-mapped from a checkpoint that kept a second copy of most of
    align-base's image tower (~250 MB) resident."""
    with torch.no_grad():
        for param in net.parameters():
            if param.dim() == 4 and not param.is_contiguous(memory_format=torch.channels_last):
                param.data = param.data.contiguous(memory_format=torch.channels_last)
