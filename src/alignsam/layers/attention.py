"""The one attention of the project: `F.scaled_dot_product_attention`, with a plain reference path.

BERT, SAM's image encoder (with its decomposed relative positions passed as an additive mask) and SAM's
two-way transformer all call `attention`. The reference path (`impl="reference"`) spells the computation
out as `softmax(q k^T * scale + mask) v` in float32 and exists only so tests can check the fused path.
A module that attends keeps its choice in an `attn_impl` attribute; `set_attention_impl` switches a
whole model.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

AttentionImpl = Literal["sdpa", "reference"]


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    dropout_p: float = 0.0,
    scale: float | None = None,
    impl: AttentionImpl = "sdpa",
) -> torch.Tensor:
    """Attention over the last two dims.

    Args:
        q: `B x H x Lq x D` queries.
        k: `B x H x Lk x D` keys.
        v: `B x H x Lk x Dv` values.
        mask: broadcastable to `B x H x Lq x Lk`; boolean (True = attend) or additive float.
        dropout_p: dropout on the attention probabilities (pass 0 at inference).
        scale: defaults to `D ** -0.5`.
    Returns:
        `B x H x Lq x Dv`.
    """
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    if impl != "reference":
        raise ValueError(f"unknown attention impl {impl!r}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q.float() @ k.float().transpose(-2, -1)) * scale
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.float()
    probs = scores.softmax(dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return (probs @ v.float()).to(v.dtype)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """`B x L x (H*D)` -> `B x H x L x D`."""
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """`B x H x L x D` -> `B x L x (H*D)`."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def set_attention_impl(model: nn.Module, impl: AttentionImpl) -> nn.Module:
    """Switch every attention module of `model` to `impl`; returns `model`."""
    if impl not in ("sdpa", "reference"):
        raise ValueError(f"unknown attention impl {impl!r}")
    for module in model.modules():
        if hasattr(module, "attn_impl"):
            setattr(module, "attn_impl", impl)  # noqa: B010 (modules declare the attribute themselves)
    return model
