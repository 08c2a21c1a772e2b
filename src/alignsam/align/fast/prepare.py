"""`prepare_align`: swap ALIGN's fast twins into a model; `inference_twin`: a prepared view of a model.

`prepare_align(model, fast)` changes the model in place (the encoder of the tools uses it: one copy of the
weights). `inference_twin(model, fast)` leaves the model as it is and returns a prepared model that shares
its text tower and holds a prepared copy of its image tower; `AlignModel` answers inference calls with it
(eval mode, no autograd), so code written for transformers gets the fast paths without a call of ours.
"""

from __future__ import annotations

import copy
from typing import Any, TypeVar

import torch
from torch import nn

from alignsam.align.fast.bert import PackedBert
from alignsam.align.fast.efficientnet import can_fuse, fuse_efficientnet
from alignsam.align.modeling.bert import Bert
from alignsam.align.modeling.efficientnet import EfficientNet, MBConv, SqueezeExcite, fold_batchnorm
from alignsam.fast import FastPath, onednn_bf16
from alignsam.layers import shallow_copy

M = TypeVar("M", bound=nn.Module)  # an AlignModel: this module never imports the model file (one load direction)


def prepare_align(model: M, fast: FastPath | None = None) -> M:
    """Apply `fast` (default `FastPath()`) to `model` in place and put it in eval mode; returns it. The
    image tower's weights are rewritten (batch norms folded), so the model is not for training afterwards;
    `inference_twin` leaves the model as it is."""
    fast = fast or FastPath()
    model.eval()
    align: Any = model
    net = _efficientnet(align)
    if net is not None:  # another image tower (AlignConfig.image_tower) runs as it is
        _prepare_efficientnet(align, net, fast)
    bert = align.text_model.bert
    if fast.align.pack_text and not fast.compile and type(bert) is Bert:
        align.text_model.bert = PackedBert.of(bert)
    if fast.compile:  # the compiled wrapper stands in for the module and forwards attribute access to it
        align.text_model.bert = torch.compile(align.text_model.bert, dynamic=True)
    align.fast = FastPath.PLAIN  # the model is the fast one now: its calls need no twin
    return model


def inference_twin(model: M, fast: FastPath) -> M:
    """A prepared model for inference that leaves `model` untouched: it shares `model`'s parameters except
    the image tower's, which it holds folded and fused (as much memory again as the image tower). Built
    once and kept beside the model until its weights, device or dtype change."""
    align: Any = model
    key = _weights_key(align, fast)
    cache = align.__dict__.get("_twin_cache")
    if isinstance(cache, _TwinCache) and cache.key == key:
        return cache.twin  # type: ignore[return-value]
    twin = shallow_copy(align)
    twin.text_model = shallow_copy(align.text_model)
    if _efficientnet(align) is not None:  # another image tower is shared: preparing leaves it as it is
        twin.vision_model = shallow_copy(align.vision_model)
        twin.vision_model.efficientnet = copy.deepcopy(align.vision_model.efficientnet)
    with torch.no_grad():
        prepare_align(twin, fast)  # sets the twin's own `fast` to PLAIN: it answers its calls itself
    object.__setattr__(model, "_twin_cache", _TwinCache(key, twin))  # not a submodule: not saved
    return twin


def _efficientnet(align: Any) -> nn.Module | None:
    """The model's EfficientNet (or the stand-in a preparation put there), or None for another image tower."""
    net = getattr(align.vision_model, "efficientnet", None)
    return net if isinstance(net, nn.Module) else None


def _prepare_efficientnet(align: Any, net: Any, fast: FastPath) -> None:
    options = fast.align
    if options.fold_batchnorm:
        fold_batchnorm(net)
    if options.channels_last:
        to_channels_last(net)
    if options.inplace:
        set_inplace(net)
    dtype = torch.bfloat16 if fast.precision == "bf16" else torch.float32
    # the fused bfloat16 tower needs oneDNN's bfloat16 kernels; without them bf16 runs the modules under autocast
    fusable = can_fuse(net) and (dtype == torch.float32 or onednn_bf16())
    if options.fuse and options.fold_batchnorm and not fast.compile and isinstance(net, EfficientNet) and fusable:
        align.vision_model.efficientnet = fuse_efficientnet(net, dtype)  # a stand-in, not an EfficientNet
    if fast.compile:
        align.vision_model.efficientnet = torch.compile(net)


class _TwinCache:
    """The prepared twin and the weights it was made from; never copied or pickled with the model."""

    def __init__(self, key: tuple[Any, ...], twin: nn.Module) -> None:
        self.key, self.twin = key, twin

    def __deepcopy__(self, memo: dict[int, Any]) -> None:
        return None

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(None), ())


def _weights_key(model: Any, fast: FastPath) -> tuple[Any, ...]:
    """What the image tower's prepared copy depends on: the options and every tensor's identity and version
    (an in-place update such as an optimiser step, `load_state_dict` or `.to()` changes it)."""
    tensors = [*model.vision_model.parameters(), *model.vision_model.buffers()]
    return (fast, *((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors))


def set_inplace(net: torch.nn.Module) -> None:
    """Activations, squeeze-excite gates and residual sums of the image tower write into their input
    (inference only: autograd needs those inputs kept)."""
    for module in net.modules():
        if isinstance(module, torch.nn.SiLU | torch.nn.ReLU | SqueezeExcite | MBConv):
            module.inplace = True


def to_channels_last(net: torch.nn.Module) -> None:
    """Convolution weights in channels-last order, copying only those not already in it.

    `Module.to(memory_format=...)` copies every 4-D weight, even 1x1 and depthwise kernels whose layout is
    channels-last already; for weights memory-mapped from a checkpoint that would keep a second copy of most
    of the image tower resident."""
    with torch.no_grad():
        for param in net.parameters():
            if param.dim() == 4 and not param.is_contiguous(memory_format=torch.channels_last):
                param.data = param.data.contiguous(memory_format=torch.channels_last)
