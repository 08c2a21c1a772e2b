"""EfficientNet for CPU inference on oneDNN's fused convolutions (the `FastPath.fuse` option).

`fuse_efficientnet` turns a folded `EfficientNet` into a `FusedEfficientNet` that computes the same
function with fewer passes over memory:

- the activation after a convolution runs inside it as a oneDNN post-op (one pass over the output instead
  of two: in bfloat16 about twice as fast as PyTorch's separate SiLU, in float32 about the same), and each
  block's residual sum is accumulated by the projecting convolution into the shortcut;
- the first two stages, whose maps are the largest, run a few images at a time (`CHUNK_BYTES`): their
  tensors then stay small enough for the C allocator to reuse heap memory instead of mapping fresh pages
  for every 50-130 MB map (align-base fp32 at 289 px, batch 8: ~8% faster);
- the weights are laid out once for the input shape in use instead of on every call (`FusedConv`), and the
  tower runs outside any torch function mode (FastPath.autocast's `OneDNNMatmul` would add a Python call
  to each of its operations);
- with `dtype=torch.bfloat16` the tower holds bfloat16 weights and activations end to end: no per-call
  weight casts as under autocast, and the squeeze-excite mean is a matrix product (PyTorch's bfloat16
  mean first copies the whole map to float32).

Only for inference on a CPU with oneDNN (`torch.backends.mkldnn.is_available()`); `prepare_align` falls
back to the plain modules elsewhere. The fused tower keeps no parameters: save a model before preparing it,
and move or cast it before too (the tower's tensors do not follow `.to()`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alignsam.align.modeling.efficientnet import EfficientNet, MBConv, SqueezeExcite
from alignsam.layers import needs_grad

CHUNK_BYTES = 16 << 20
"""Budget for the largest map of the first two stages of one sub-batch of images (see the module docstring)."""

# activation module -> oneDNN post-op name; others run as a separate module after the convolution
_POST_OPS: dict[type[nn.Module], str] = {nn.SiLU: "swish", nn.ReLU: "relu"}


def can_fuse(net: nn.Module) -> bool:
    """True where `fuse_efficientnet` applies: a CPU model on a PyTorch build with oneDNN."""
    params = list(net.parameters())
    return bool(params) and params[0].device.type == "cpu" and torch.backends.mkldnn.is_available()


class FusedConv:
    """One convolution (batch norm already folded in) with its activation as a oneDNN post-op.

    oneDNN runs a convolution on weights in a blocked layout that it chooses for the input's shape; given
    dense weights, it reorders them on every call. With `pack`, the weights are reordered once for the last
    input shape seen (`torch.ops.mkldnn._reorder_convolution_weight`) and kept, beside the dense ones, until a
    call brings another shape: a second copy of the packed weights (40 M of align-base's 62 M image weights)
    for no reorder per call (benchmarks/RESULTS.md has the gain). The layout must be the one for that exact
    shape: weights laid out for one batch size run far slower at another.

    Residual projections (`add_into`) are not packed: their summing post-op can make oneDNN choose another
    layout than the one `_reorder_convolution_weight` returns (align-base's 3840 -> 640 projections at
    batch 1), and the convolution then converts the packed weights back on every call through a slow
    generic reorder.

    Args:
        conv: the convolution; its padding must be numeric (the towers pad asymmetric cases themselves).
        act: the activation that follows it, or None.
        dtype: float32 or bfloat16 (weights and bias are cast once here).
        pack: keep the weights reordered for the last input shape (see above).
    """

    def __init__(self, conv: nn.Conv2d, act: nn.Module | None, dtype: torch.dtype, pack: bool = True) -> None:
        if isinstance(conv.padding, str):
            raise ValueError(f"FusedConv needs numeric padding, got {conv.padding!r}")
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.weight = conv.weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
        self.bias = None if conv.bias is None else conv.bias.detach().to(dtype)
        post_op = _POST_OPS.get(type(act)) if act is not None else None
        self.post_op = post_op or "none"
        self.act = None if post_op is not None or isinstance(act, nn.Identity) else act
        self.pack = pack
        self.packed: tuple[torch.Size, torch.Tensor] | None = None  # (input shape, weights laid out for it)

    def __getstate__(self) -> dict[str, object]:
        # the packed weights are a cache in oneDNN's opaque layout, which cannot be copied or pickled
        return {**self.__dict__, "packed": None}

    def weights_for(self, x: torch.Tensor) -> torch.Tensor:
        """The weights to run `x` with: packed for its shape where `pack` is set, else the dense ones."""
        if not self.pack:
            return self.weight
        packed = self.packed  # one read: another thread may replace it meanwhile
        if packed is None or packed[0] != x.shape:
            geometry = (self.padding, self.stride, self.dilation, self.groups)
            packed = x.shape, torch.ops.mkldnn._reorder_convolution_weight(self.weight, *geometry, list(x.shape))
            self.packed = packed
        return packed[1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.mkldnn._convolution_pointwise(
            x, self.weights_for(x), self.bias, self.padding, self.stride, self.dilation, self.groups,
            self.post_op, [], "",
        )  # fmt: skip
        return y if self.act is None else self.act(y)

    def add_into(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """`out += conv(x)`, accumulated by the convolution itself; returns `out` (no activation)."""
        assert self.act is None and self.post_op == "none", "a residual projection has no activation"
        geometry = (self.padding, self.stride, self.dilation, self.groups)
        return torch.ops.mkldnn._convolution_pointwise_.binary(
            out, x, self.weight, self.bias, *geometry, "add", 1.0, None, [], None
        )


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over the spatial axes of a channels-last `B x C x H x W` map, `B x C`.

    For bfloat16 a matrix product with float32 accumulation (PyTorch's own bfloat16 mean copies the whole
    map to float32 first, a pass over the whole map); float32 takes the plain mean."""
    if x.dtype != torch.bfloat16 or not x.is_contiguous(memory_format=torch.channels_last):
        return x.mean((2, 3))
    b, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view: channels-last is B x HW x C in memory
    weights = torch.full((1, 1, h * w), 1.0 / (h * w), dtype=x.dtype, device=x.device)
    return torch.matmul(weights, rows).view(b, c)


class _SqueezeExcite:
    """The gate on `B x C` vectors: 1x1 convolutions on a 1x1 map are linear layers."""

    def __init__(self, se: SqueezeExcite, dtype: torch.dtype) -> None:
        def linear(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor | None]:
            bias = None if conv.bias is None else conv.bias.detach().to(dtype)
            return conv.weight.detach().flatten(1).to(dtype).contiguous(), bias

        self.reduce, self.expand, self.act = linear(se.conv_reduce), linear(se.conv_expand), se.act

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = self.act(F.linear(spatial_mean(x), *self.reduce))
        gate = torch.sigmoid(F.linear(s, *self.expand))
        return x.mul_(gate[:, :, None, None])


class _Block:
    def __init__(self, block: MBConv, dtype: torch.dtype) -> None:
        for norm in (block.bn1, block.bn2, block.bn3):
            if norm is not None and not isinstance(norm, nn.Identity):
                raise ValueError("fuse_efficientnet needs folded batch norms (fold_batchnorm first)")
        conv_pw = block.conv_pw
        self.expand = None if conv_pw is None else FusedConv(conv_pw, block.act, dtype)
        self.pad = block.pad if block.stride == 2 else None
        self.depthwise = FusedConv(block.conv_dw, block.act, dtype)
        self.se = _SqueezeExcite(block.se, dtype)
        self.residual = block.residual
        self.project = FusedConv(block.conv_pwl, None, dtype, pack=not self.residual)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.expand is not None:
            x = self.expand(x)
        if self.pad is not None:
            x = F.pad(x, self.pad)
        x = self.se(self.depthwise(x))
        # the shortcut is the previous block's output, read by nothing else: accumulate into it
        return self.project.add_into(x, shortcut) if self.residual else self.project(x)


class FusedEfficientNet(nn.Module):
    """An inference-only stand-in for `EfficientNet` (same `forward` and `pool`); see the module docstring.

    `forward` takes float32 pixels in any layout and returns the feature map in the tower's dtype; `pool`
    returns float32 embeddings."""

    def __init__(self, net: EfficientNet, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        stem = net.stem
        if not isinstance(stem.bn, nn.Identity):
            raise ValueError("fuse_efficientnet needs folded batch norms (fold_batchnorm first)")
        self.dtype = dtype
        self.pooling = net.pooling
        self.stem = FusedConv(stem.conv, stem.act, dtype)
        blocks = [block for block in net.blocks if isinstance(block, MBConv)]
        self.fused_blocks = [_Block(block, dtype) for block in blocks]
        # the first two stages end where the second stride-2 block starts; their widest map is at the
        # stem's resolution: the stem's output or the expansion of the first stride-2 block
        strided = [i for i, block in enumerate(blocks) if block.stride == 2]
        self.early = strided[1] if len(strided) > 1 else 0
        upto_first_stride = blocks[: strided[0] + 1] if strided else []
        widths = [stem.conv.out_channels] + [b.conv_dw.in_channels for b in upto_first_stride]
        self.early_width = max(widths)
        self.train(False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.training or needs_grad(pixel_values):
            raise RuntimeError("FusedEfficientNet is for inference only (it has no trainable parameters)")
        # The tower calls its kernels itself: a torch function mode active around it (FastPath.autocast's
        # OneDNNMatmul) would only add a Python call to each of its ~1,000 operations (3-5% of the time).
        with torch._C.DisableTorchFunction():
            return self._forward(pixel_values)

    def _forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = pixel_values.to(self.dtype).contiguous(memory_format=torch.channels_last)
        b, _, h, w = x.shape
        widest = self.early_width * ((h + 1) // 2) * ((w + 1) // 2) * x.element_size()  # one image
        per_call = max(1, CHUNK_BYTES // widest)
        if self.early and b > per_call:
            x = torch.cat([self._run(part, 0, self.early) for part in x.split(per_call)])
            return self._run(x, self.early, len(self.fused_blocks), stem=False)
        return self._run(x, 0, len(self.fused_blocks))

    def _run(self, x: torch.Tensor, start: int, stop: int, stem: bool = True) -> torch.Tensor:
        if stem:
            x = self.stem(F.pad(x, (0, 1, 0, 1)))
        for block in self.fused_blocks[start:stop]:
            x = block(x)
        return x

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.mean((2, 3), dtype=torch.float32) if self.pooling == "mean" else features.amax((2, 3))
        return pooled.float()

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        raise RuntimeError(
            "A model prepared with FastPath.align.fuse holds its image weights in oneDNN's layout and cannot "
            "be saved; save the model before prepare_align, or prepare with FastPath(align=AlignFast(fuse=False))."
        )


def fuse_efficientnet(net: EfficientNet, dtype: torch.dtype = torch.float32) -> FusedEfficientNet:
    """The fused stand-in for a folded `net` (whose own weights are left as they are)."""
    return FusedEfficientNet(net, dtype)
