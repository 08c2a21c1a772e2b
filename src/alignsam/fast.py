"""Fast inference, chosen at the edge: the options, and the oneDNN matrix multiply both models use.

Model code stays plain (`alignsam.align.modeling`, `alignsam.sam.modeling`); `prepare_align` and
`prepare_sam` (in each model's `fast` package) swap in fast twins of modules according to a `FastPath`, and
`FastPath.autocast` wraps the calls. Every option is exact to float32 rounding except `precision="bf16"`.
The defaults are on wherever they pay off; `FastPath.PLAIN` turns everything off (the reference path the
fast ones are tested against).

Shared by both models:
- `precision="bf16"`: bfloat16 for the heavy towers (autocast, or bfloat16 weights in ALIGN's fused tower).
- `compile`: `torch.compile` the heavy towers (slow first call, faster afterwards).
- `onednn_matmul`: float32 linear layers (`F.linear`) on oneDNN's matrix multiply rather than the BLAS
  PyTorch uses for float32 (MKL), and large attention (SAM's global blocks) head by head on it too
  (`OneDNNMatmul`; benchmarks/RESULTS.md has the rates). A function mode active inside `FastPath.autocast`;
  the models are not changed.

ALIGN (`FastPath.align`, `AlignFast`; applied by `alignsam.align.fast.prepare_align`):
- `fold_batchnorm`: fold each batch norm into the convolution before it.
- `channels_last`: NHWC memory layout for the image tower's convolutions, which oneDNN runs faster on CPUs.
- `inplace`: activations, squeeze-excite gates and residual sums write into the tensor they transform
  (the same numbers to the bit): a fresh buffer for a large feature map costs its page faults each time.
- `fuse`: the image tower on oneDNN's fused convolutions, activations and residual sums inside the
  convolutions (CPU only; needs `fold_batchnorm`; `alignsam.align.fast.efficientnet`).
- `pack_text`: text embeddings computed on the real tokens only, padding left out of every per-token step
  (`alignsam.align.fast.bert`).

SAM (`FastPath.sam`, `SamFast`; applied by `alignsam.sam.fast.prepare_sam`):
- `prompt_batch`: the mask decoder computes the image side once for every prompt set on an image and
  reassociates its cross-attentions around the few prompt tokens (`alignsam.sam.fast.mask_decoder`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Iterator
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from alignsam.layers import needs_grad

Precision = Literal["fp32", "bf16"]


@dataclasses.dataclass(frozen=True)
class AlignFast:
    """ALIGN's speed options (see the module docstring); all exact to float32 rounding."""

    fold_batchnorm: bool = True
    channels_last: bool = True
    inplace: bool = True
    fuse: bool = True
    pack_text: bool = True


@dataclasses.dataclass(frozen=True)
class SamFast:
    """SAM's speed options (see the module docstring); exact to float32 rounding."""

    prompt_batch: bool = True


@dataclasses.dataclass(frozen=True)
class FastPath:
    """Speed options: shared ones, and per model (`align`, `sam`). The defaults are exact to float32
    rounding and on wherever they pay off; `FastPath.PLAIN` is everything off."""

    precision: Precision = "fp32"
    compile: bool = False
    onednn_matmul: bool = True
    align: AlignFast = AlignFast()
    sam: SamFast = SamFast()

    PLAIN: ClassVar[FastPath]

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', not {self.precision!r}")

    def replace(self, **changes: object) -> FastPath:
        """A copy with `changes`: shared fields by name, model fields as `align=AlignFast(...)` or by name
        (`fuse=False` changes `align.fuse`)."""
        shared = {f.name for f in dataclasses.fields(self)}
        per_model: dict[str, dict[str, object]] = {"align": {}, "sam": {}}
        top: dict[str, object] = {}
        for name, value in changes.items():
            if name in shared:
                top[name] = value
                continue
            owner = next((m for m in per_model if name in {f.name for f in dataclasses.fields(getattr(self, m))}), None)
            if owner is None:
                raise TypeError(f"FastPath has no option {name!r}")
            per_model[owner][name] = value
        for model, fields in per_model.items():
            if fields:
                top[model] = dataclasses.replace(top.get(model, getattr(self, model)), **fields)  # type: ignore[type-var]
        return dataclasses.replace(self, **top)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def autocast(self, device: torch.device | str, inference_mode: bool = True) -> Iterator[None]:
        """`torch.inference_mode` (unless `inference_mode` is False: the caller's tensors may be changed in
        place afterwards), plus bf16 autocast and oneDNN matrix multiplies when asked for."""
        kind = torch.device(device).type
        with contextlib.ExitStack() as stack:
            if inference_mode:
                stack.enter_context(torch.inference_mode())
            if self.precision == "bf16":
                if kind == "cpu" and not onednn_bf16():
                    _warn_emulated_bf16()
                stack.enter_context(torch.autocast(kind, dtype=torch.bfloat16))
            if not self.compile:  # compiled towers pick their own kernels (inductor cannot lower oneDNN calls)
                stack.enter_context(self.matmul(device))
            yield

    def matmul(self, device: torch.device | str) -> contextlib.AbstractContextManager[object]:
        """`OneDNNMatmul` where `onednn_matmul` asks for it and oneDNN can run (CPU); else nothing."""
        if self.onednn_matmul and torch.device(device).type == "cpu" and torch.backends.mkldnn.is_available():
            return OneDNNMatmul()
        return contextlib.nullcontext()


class OneDNNMatmul(TorchFunctionMode):
    """Within this mode, CPU matrix multiplies that need no gradient run on oneDNN
    (`torch.ops.mkldnn._linear_pointwise`); every other call, and every other function, is left as it is:

    - `F.linear` on float32 tensors (bfloat16 ones, and autocast, already reach oneDNN through PyTorch);
    - `F.scaled_dot_product_attention` on large problems (at least `BIG_ATTENTION` scores a head, as SAM's
      global attention): head by head, the scores from oneDNN (float32 sums), the mask added and the softmax
      taken in place, then oneDNN again.
      - bfloat16: faster than PyTorch's CPU flash attention on SAM's global attention (which keeps its
        scores in float32); the bfloat16 scores here differ from float32 attention by ~1.4e-3 on average
        against flash attention's ~1.8e-4 (SAM's masks: IoU to float32 in the benchmark).
      - float32 (outside autocast): the same numbers to float32 rounding (4e-6), faster than flash attention
        on SAM's global blocks (benchmarks/RESULTS.md).
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if _onednn_can_run(x, weight, bias):
                return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
        elif func is F.scaled_dot_product_attention:
            out = _large_attention(*args, **kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)


def _warn_emulated_bf16() -> None:
    global _WARNED_BF16
    if not _WARNED_BF16:
        _WARNED_BF16 = True
        warnings.warn(
            "this CPU has no bfloat16 matrix units (AVX512-BF16 or AMX): precision bf16 runs PyTorch's emulated "
            "kernels, usually slower than fp32",
            stacklevel=3,
        )


_WARNED_BF16 = False


def onednn_bf16() -> bool:
    """Whether oneDNN has bfloat16 kernels on this CPU (AVX512-BF16 or AMX; older x86 CPUs, AVX2 only, do
    not). Without them the oneDNN bfloat16 paths are skipped: bf16 then runs PyTorch's own kernels."""
    global _ONEDNN_BF16
    if _ONEDNN_BF16 is None:
        check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        _ONEDNN_BF16 = bool(torch.backends.mkldnn.is_available() and check is not None and check())
    return _ONEDNN_BF16


_ONEDNN_BF16: bool | None = None

BIG_ATTENTION = 1 << 20
"""Queries x keys of one head from which attention goes head by head through oneDNN."""


def _large_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    **other: object,
) -> torch.Tensor | None:
    """`softmax(q k^T * scale + attn_mask) v` for `B x H x L x D` bfloat16 CPU tensors, or float32 ones outside
    autocast; None where the call is not one this path takes (PyTorch's own kernel then runs)."""
    tensors = [q, k, v] if attn_mask is None else [q, k, v, attn_mask]
    if (
        other
        or dropout_p
        or is_causal
        or not (
            (q.dtype == torch.bfloat16 and onednn_bf16())
            or (q.dtype == torch.float32 and not torch.is_autocast_enabled("cpu"))
        )
        or any(type(t) is not torch.Tensor or t.device.type != "cpu" for t in tensors)
        or k.dtype != q.dtype
        or v.dtype != q.dtype
        or q.dim() != 4
        or k.shape[:2] != q.shape[:2]
        or v.shape[:2] != q.shape[:2]
        or q.shape[2] * k.shape[2] < BIG_ATTENTION
        or (attn_mask is not None and (attn_mask.dtype == torch.bool or attn_mask.dim() != 4))
        or needs_grad(*tensors)
    ):
        return None
    b, h, n, d = q.shape
    q = q * (d**-0.5 if scale is None else scale)  # one pass over the queries, not one over each head's scores
    mask = None if attn_mask is None else attn_mask.expand(b, h, n, k.shape[2])
    out = q.new_empty(b, h, n, v.shape[-1])
    linear = torch.ops.mkldnn._linear_pointwise
    with torch.autocast("cpu", enabled=False):
        for i in range(b):
            for j in range(h):
                scores = linear(q[i, j], k[i, j].contiguous(), None, "none", [], "")  # bfloat16, fp32 sums
                if mask is not None:
                    scores.add_(mask[i, j])
                out[i, j] = linear(scores.softmax(-1), v[i, j].t().contiguous(), None, "none", [], "")
    return out


_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)  # not subclasses with their own dispatch


def _onednn_can_run(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    tensors = (x, weight) if bias is None else (x, weight, bias)
    return (
        all(type(t) in _PLAIN_TENSORS and t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)
        and x.dim() >= 2
        and weight.dim() == 2
        and weight.is_contiguous()
        and x.numel() > 0
        and weight.shape[1] > 0  # oneDNN has no inner product over zero features
        and not torch.is_autocast_enabled("cpu")  # autocast casts to bf16, which PyTorch runs on oneDNN already
        and not needs_grad(*tensors)  # oneDNN's op has no autograd formula
    )


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def idle_cores() -> int:
    """Of `available_cores`, those other processes are not busy on now (minus the 1-minute load average,
    rounded), at least 1.

    The commands start with this many torch threads. On a machine whose cores are taken, more threads than
    idle cores make every parallel region wait for a thread the scheduler has put aside, which costs the many
    small operations of SAM's decoder and the mask generator several times their work; one thread per idle
    core degrades with the load instead (benchmarks/RESULTS.md, "Threads")."""
    cores = available_cores()
    try:
        busy = round(os.getloadavg()[0])
    except (AttributeError, OSError):  # not Unix
        return cores
    return max(1, min(cores, cores - busy))


FastPath.PLAIN = FastPath(
    onednn_matmul=False,
    align=AlignFast(fold_batchnorm=False, channels_last=False, inplace=False, fuse=False, pack_text=False),
    sam=SamFast(prompt_batch=False),
)
PLAIN = FastPath.PLAIN
"""No transformation at all: the reference path the fast ones are tested against."""
