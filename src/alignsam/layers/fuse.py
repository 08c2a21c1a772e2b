"""Inference-time fusions that callers apply to built models (never done inside a module's forward)."""

from __future__ import annotations

import ctypes
import functools
import mmap
import sys
from collections.abc import Callable, Iterable

import torch
from torch import nn

_MADV_POPULATE_WRITE = 23  # Linux 5.14+


@functools.cache
def _madvise() -> Callable[[int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def prefault_for_writing(tensors: Iterable[torch.Tensor]) -> bool:
    """Ask the kernel to make the CPU memory of `tensors` writable now, in one call per tensor, before
    they are rewritten in place; True where it did, False where it cannot (not Linux 5.14+).

    Weights memory-mapped from a checkpoint are copy-on-write: scaling them in place otherwise takes one
    page fault per 4 KB page (align-base's image tower is 250 MB), where `madvise(MADV_POPULATE_WRITE)` makes
    the pages writable in one call per tensor, a fraction of the cold start. Contents are unchanged either way
    (the kernel copies each page as a write would); memory the process already owns is left as it is."""
    madvise = _madvise()
    if madvise is None:
        return False
    page = mmap.PAGESIZE
    done = True
    for t in tensors:
        if t.device.type != "cpu" or t.numel() == 0:
            continue
        start = t.data_ptr() // page * page
        end = -(-(t.data_ptr() + t.numel() * t.element_size()) // page) * page
        if madvise(start, end - start, _MADV_POPULATE_WRITE) != 0:
            done = False  # EINVAL on older kernels; the in-place writes then fault page by page as before
    return done


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Fold `bn` (eval mode) into `conv`, in place, and return `conv`, now equal to `bn(conv(x))`: the
    weights become `w * g / sqrt(v + eps)` and the bias `(b - m) * g / sqrt(v + eps) + beta`.

    The weights are scaled where they lie rather than copied: weights memory-mapped from a checkpoint are
    then rewritten page by page (copy-on-write) instead of being kept twice, which for align-base's image
    tower is about 250 MB of resident memory."""
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # C_out
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)
    prefault_for_writing([conv.weight])  # memory-mapped: writable in one call, not a page fault at a time
    conv.weight.mul_(scale.view(-1, 1, 1, 1).to(conv.weight.dtype))
    return conv.requires_grad_(False)
