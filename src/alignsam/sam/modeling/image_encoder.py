"""SAM's image encoder: a plain ViT with windowed and global attention and a small convolutional neck.

Adapted from ViTDet as the official model is: most blocks attend inside 14 x 14 windows, a few attend over
the whole 64 x 64 grid, and every attention adds decomposed relative positions (one table per axis). Here
the relative positions are computed as an additive bias and handed to the project's one attention
(`F.scaled_dot_product_attention`) as its mask. The encoder runs channels-last (`B x H x W x C`) like the
original, and returns `B x out_chans x grid x grid`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alignsam.errors import InputError
from alignsam.layers import AttentionImpl, LayerNorm2d, attention, needs_grad
from alignsam.sam.modeling.common import MLPBlock
from alignsam.sam.modeling.config import ImageEncoderConfig


class ImageEncoderViT(nn.Module):
    """`B x in_chans x image_size x image_size` normalised, padded images -> `B x out_chans x grid x grid`."""

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        self.config = config
        grid = config.grid_size
        self.patch_embed = PatchEmbed(config.patch_size, config.in_chans, config.embed_dim)
        # Absolute positions at the pre-training resolution, added channels-last.
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, config.embed_dim)) if config.use_abs_pos else None
        self.blocks = nn.ModuleList(
            Block(config, window_size=config.block_window_size(i), grid_size=grid) for i in range(config.depth)
        )
        self.neck = Neck(config.embed_dim, config.out_chans, config.neck_layer_norm_eps)

    @property
    def img_size(self) -> int:
        """Side of the square input (the official attribute name, read by `ResizeLongestSide` users)."""
        return self.config.image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if x.ndim != 4 or x.shape[1] != self.config.in_chans or x.shape[-2:] != (size, size):
            raise InputError(
                f"The image encoder expects B x {self.config.in_chans} x {size} x {size} preprocessed images "
                f"(see SamModel.preprocess), got {tuple(x.shape)}."
            )
        x = self.patch_embed(x)  # B x grid x grid x D
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))  # B x out_chans x grid x grid


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens, channels-last: `B x C x H x W` -> `B x H/p x W/p x D`."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Block(nn.Module):
    """Pre-norm transformer block; attends inside windows when `window_size > 0`, else globally."""

    def __init__(self, config: ImageEncoderConfig, *, window_size: int, grid_size: int) -> None:
        super().__init__()
        self.window_size = window_size
        attn_size = window_size if window_size > 0 else grid_size
        self.norm1 = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.attn = Attention(
            config.embed_dim,
            config.num_heads,
            qkv_bias=config.qkv_bias,
            rel_pos_size=attn_size if config.use_rel_pos else None,
        )
        self.norm2 = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.mlp = MLPBlock(config.embed_dim, config.mlp_dim, config.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            # The original pads the normalised grid with zeros to whole windows and projects every token.
            # A zero token's q, k and v are the projection's bias, and the padded outputs are cut away, so
            # the projections run on the real tokens only (vit_b at 1024: 4,096 of 4,900) and the padding
            # is filled with that bias.
            h, w = x.shape[1], x.shape[2]
            qkv, padded_hw = window_partition(self.attn.qkv(x), self.window_size, fill=self.attn.qkv.bias)
            x = window_unpartition(self.attn.attend(qkv), self.window_size, padded_hw, (h, w))
            x = self.attn.proj(x)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Attention(nn.Module):
    """Multi-head self-attention over a `B x H x W x C` grid with decomposed relative positions."""

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, rel_pos_size: int | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h: nn.Parameter | None = None
        self.rel_pos_w: nn.Parameter | None = None
        if rel_pos_size is not None:
            # One embedding per relative offset -(S-1)..(S-1) along each axis.
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_pos_size - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_pos_size - 1, head_dim))
        self.attn_impl: AttentionImpl = "sdpa"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.attend(self.qkv(x)))

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Attention from projected `B x H x W x 3C` queries, keys and values to `B x H x W x C` (before `proj`)."""
        b, h, w, _ = qkv.shape
        # B x HW x 3C -> 3 x B x heads x HW x head_dim
        qkv = qkv.reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.rel_pos_h is not None and self.rel_pos_w is not None:
            x = rel_pos_attention(q, k, v, self.rel_pos_h, self.rel_pos_w, (h, w), impl=self.attn_impl)
        else:
            x = attention(q, k, v, impl=self.attn_impl)  # B x heads x HW x head_dim
        return x.transpose(1, 2).reshape(b, h, w, -1)  # B x H x W x C


def window_partition(
    x: torch.Tensor, window_size: int, fill: torch.Tensor | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """`B x H x W x C` -> `(B * nWindows) x ws x ws x C`, padding H and W up to multiples of ws with zeros,
    or with the vector `fill` (`C`).

    Returns the windows and the padded (H, W).
    """
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if (pad_h > 0 or pad_w > 0) and fill is not None:
        padded = fill.to(x.dtype).expand(b, h + pad_h, w + pad_w, c).clone()
        padded[:, :h, :w] = x
        x = padded
    elif pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of `window_partition`: `(B * nWindows) x ws x ws x C` -> `B x H x W x C` without padding."""
    hp, wp = padded_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window_size) * (wp // window_size))
    x = windows.view(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :].contiguous()
    return x


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position embeddings for every (query, key) pair along one axis: `q_size x k_size x C`.

    The table is linearly resized when its length is not `2 * max(q_size, k_size) - 1`.
    """
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        table = rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1)  # 1 x C x L
        resized = F.interpolate(table, size=max_rel_dist, mode="linear")
        rel_pos = resized.reshape(-1, max_rel_dist).permute(1, 0)
    # Scale the coordinates of the shorter side when query and key lengths differ.
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


def rel_pos_terms(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two factors of MViTv2's decomposed relative positions: `<q, Rh[qy, ky]>` as
    `B x heads x qh x qw x kh` and `<q, Rw[qx, kx]>` as `B x heads x qh x qw x kw` (both contiguous).

    Args:
        q: `B x heads x (qh * qw) x C` queries (before the attention scale, as in the original).
        rel_pos_h: `Lh x C` table for the height axis; rel_pos_w: `Lw x C` for the width axis.
    """
    qh, qw = q_size
    kh, kw = k_size
    rh = get_rel_pos(qh, kh, rel_pos_h)  # qh x kh x C
    rw = get_rel_pos(qw, kw, rel_pos_w)  # qw x kw x C
    b, n, _, c = q.shape
    r_q = q.reshape(b, n, qh, qw, c)
    # einsum returns permuted layouts, and a broadcast sum of them follows that layout: the bias came out
    # permuted and was copied once more to be reshaped (a quarter of vit_b's encoder time at 1024).
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh).contiguous()
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw).contiguous()
    return rel_h, rel_w


def decomposed_rel_pos(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> torch.Tensor:
    """The additive attention bias of the decomposed relative positions (arguments as `rel_pos_terms`).

    Returns:
        `B x heads x (qh * qw) x (kh * kw)`: `bias[q, k] = <q, Rh[qy, ky]> + <q, Rw[qx, kx]>`.
    """
    rel_h, rel_w = rel_pos_terms(q, rel_pos_h, rel_pos_w, q_size, k_size)
    b, n = q.shape[:2]
    bias = rel_h[..., :, None] + rel_w[..., None, :]  # B x heads x qh x qw x kh x kw
    return bias.view(b, n, q_size[0] * q_size[1], k_size[0] * k_size[1])


BIAS_CHUNK_BYTES = 96 * 2**20
"""Largest slice of the relative-position bias built at once at inference (the whole bias of one global
block of vit_b at 1024 is 805 MB in float32)."""


def rel_pos_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    size: tuple[int, int],
    *,
    impl: AttentionImpl = "sdpa",
) -> torch.Tensor:
    """Self-attention over an `H x W` grid with decomposed relative positions: `B x heads x HW x D` each.

    Training (and the reference path) builds the whole bias, as the original does. Without gradients the
    queries are taken a few grid rows at a time, each slice of the bias written into one reused buffer.
    Attention rows are independent, so the result is the same up to float rounding (the kernel blocks the
    rows differently), while the bias never exists whole: for vit_b at 1024, 0.7 GB less peak memory and
    no fresh pages to fault in for each global block.
    """
    h, w = size
    b, n = q.shape[:2]
    rows = max(1, BIAS_CHUNK_BYTES // (b * n * w * h * w * q.element_size()))
    if needs_grad(q, k, v, rel_pos_h, rel_pos_w) or impl != "sdpa" or rows >= h:
        return attention(q, k, v, decomposed_rel_pos(q, rel_pos_h, rel_pos_w, size, size), impl=impl)
    rel_h, rel_w = rel_pos_terms(q, rel_pos_h, rel_pos_w, size, size)
    out = q.new_empty(b, n, h * w, v.shape[-1])
    buffer = rel_h.new_empty(b, n, rows, w, h, w)
    for y0 in range(0, h, rows):
        y1 = min(y0 + rows, h)
        bias = buffer[:, :, : y1 - y0]
        torch.add(rel_h[:, :, y0:y1, :, :, None], rel_w[:, :, y0:y1, :, None, :], out=bias)
        span = slice(y0 * w, y1 * w)
        out[:, :, span] = attention(q[:, :, span], k, v, bias.view(b, n, (y1 - y0) * w, h * w), impl=impl)
    return out


class Neck(nn.Module):
    """1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d: `B x D x g x g` -> `B x out_chans x g x g`."""

    def __init__(self, embed_dim: int, out_chans: int, eps: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False)
        self.norm1 = LayerNorm2d(out_chans, eps=eps)
        self.conv2 = nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False)
        self.norm2 = LayerNorm2d(out_chans, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.conv2(self.norm1(self.conv1(x))))
