"""Fast inference, chosen by the caller (the encoder, the predictor, the command line, the service).

Model code stays plain; these options transform a built model or wrap its calls:

- `fold_batchnorm`: fold each batch norm into the convolution before it (eval only).
- `channels_last`: NHWC memory layout for convolution networks, which oneDNN runs faster on CPUs.
- `inplace`: activations, squeeze-excite gates and residual sums write into the tensor they transform
  instead of a new one (eval only; the same numbers to the bit). A fresh buffer of a large feature map
  costs its page faults every time: an out-of-place SiLU of an align-base map took 25 ms, in place 3 ms.
- `fuse`: ALIGN's image tower on oneDNN's fused convolutions, weights reordered once, activations and
  residual sums inside the convolutions; with bf16, bfloat16 weights and activations end to end instead
  of autocast (CPU only; needs `fold_batchnorm`; see `alignsam.align.fused`).
- `onednn_matmul`: float32 linear layers (`F.linear`) on oneDNN's matrix multiply rather than the BLAS
  PyTorch uses for float32 (MKL): on this project's AMD EPYC machine oneDNN multiplies 2-2.3x faster
  (~390 against ~175 GFLOP/s at BERT's and SAM's shapes), to float32 rounding. A function mode active
  inside `FastPath.autocast`; the models are not changed.
- `precision="bf16"`: bfloat16 autocast for matrix multiplies and convolutions (outputs stay float32).
- `compile`: `torch.compile` the heavy tower (slow first call, faster afterwards).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

Precision = Literal["fp32", "bf16"]


@dataclasses.dataclass(frozen=True)
class FastPath:
    """Speed options; the defaults are exact to float32 rounding and on by default where they pay off."""

    precision: Precision = "fp32"
    fold_batchnorm: bool = True
    channels_last: bool = True
    inplace: bool = True
    fuse: bool = True
    onednn_matmul: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', not {self.precision!r}")

    @contextlib.contextmanager
    def autocast(self, device: torch.device | str) -> Iterator[None]:
        """`torch.inference_mode`, plus bf16 autocast and oneDNN matrix multiplies when asked for."""
        kind = torch.device(device).type
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if self.precision == "bf16":
                stack.enter_context(torch.autocast(kind, dtype=torch.bfloat16))
            # compiled towers pick their own kernels (inductor cannot lower the mode's oneDNN calls)
            if self.onednn_matmul and not self.compile and kind == "cpu" and torch.backends.mkldnn.is_available():
                stack.enter_context(OneDNNLinear())
            yield


class OneDNNLinear(TorchFunctionMode):
    """Within this mode, `F.linear` on float32 CPU tensors that need no gradient runs on oneDNN
    (`torch.ops.mkldnn._linear_pointwise`); every other call, and every other function, is left as it is."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if _onednn_can_run(x, weight, bias):
                return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
        return func(*args, **kwargs)


_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)  # not subclasses with their own dispatch


def _onednn_can_run(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    tensors = (x, weight) if bias is None else (x, weight, bias)
    return (
        all(type(t) in _PLAIN_TENSORS and t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)
        and x.dim() >= 2
        and weight.dim() == 2
        and weight.is_contiguous()
        and not torch.is_autocast_enabled("cpu")  # autocast casts to bf16, which PyTorch runs on oneDNN already
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))  # no autograd formula
    )


PLAIN = FastPath(fold_batchnorm=False, channels_last=False, inplace=False, fuse=False, onednn_matmul=False)
"""No transformation at all: the reference path the fast ones are tested against."""
