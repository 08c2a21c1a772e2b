"""SAM's two-way transformer: prompt tokens and image tokens attend to each other in turn.

Each block runs (1) self-attention over the tokens, (2) tokens -> image cross-attention, (3) an MLP on the
tokens and (4) image -> tokens cross-attention, each followed by a LayerNorm. A final tokens -> image
attention closes the stack. Cross-attentions project to half the width (`attention_downsample_rate`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from alignsam.layers import AttentionImpl, attention, merge_heads, split_heads
from alignsam.sam.modeling.common import MLPBlock
from alignsam.sam.modeling.config import MaskDecoderConfig

CrossAttention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""`(q, k, v) -> out`, as `Attention.forward`."""


class TwoWayTransformer(nn.Module):
    """Tokens `B x T x C` and an image `B x C x h x w` in; updated tokens and image tokens `B x hw x C` out."""

    def __init__(self, config: MaskDecoderConfig) -> None:
        super().__init__()
        dim, rate = config.transformer_dim, config.attention_downsample_rate
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(config, skip_first_layer_pe=(i == 0)) for i in range(config.depth)
        )
        self.final_attn_token_to_image = Attention(dim, config.num_heads, downsample_rate=rate)
        self.norm_final_attn = nn.LayerNorm(dim, eps=config.final_layer_norm_eps)

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            image_embedding: `B x C x h x w` image to attend to.
            image_pe: `B x C x h x w` positional encoding of the image.
            point_embedding: `B x T x C` tokens; they also serve as the tokens' positional encoding.
        Returns:
            the tokens `B x T x C` and the image tokens `B x hw x C`.
        """
        keys = image_embedding.flatten(2).permute(0, 2, 1)  # B x hw x C
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, query_pe=point_embedding, key_pe=key_pe)
        q = queries + point_embedding
        k = keys + key_pe
        queries = queries + self.final_attn_token_to_image(q, k, keys)
        return self.norm_final_attn(queries), keys


class TwoWayAttentionBlock(nn.Module):
    """Self-attention, tokens -> image, MLP, image -> tokens; post-norm after each."""

    def __init__(self, config: MaskDecoderConfig, *, skip_first_layer_pe: bool = False) -> None:
        super().__init__()
        dim, heads, rate, eps = (
            config.transformer_dim,
            config.num_heads,
            config.attention_downsample_rate,
            config.layer_norm_eps,
        )
        self.self_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.cross_attn_token_to_image = Attention(dim, heads, downsample_rate=rate)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLPBlock(dim, config.mlp_dim, config.mlp_act)
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.norm4 = nn.LayerNorm(dim, eps=eps)
        self.cross_attn_image_to_token = Attention(dim, heads, downsample_rate=rate)
        # The first block sees the raw prompt tokens, which already hold their positions: no PE, no residual.
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, *, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_with(
            self.cross_attn_token_to_image, self.cross_attn_image_to_token, queries, keys,
            query_pe=query_pe, key_pe=key_pe,
        )  # fmt: skip

    def forward_with(
        self,
        token_to_image: CrossAttention,
        image_to_token: CrossAttention,
        queries: torch.Tensor,
        keys: torch.Tensor,
        *,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The block with its two cross-attentions given as `(q, k, v) -> out` callables (`forward` passes the
        block's own modules; `alignsam.sam.fast.mask_decoder` computes the same attentions another way)."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        k = keys + key_pe  # the same for both cross-attentions: keys change only at the end of the block
        queries = self.norm2(queries + token_to_image(queries + query_pe, k, keys))

        queries = self.norm3(queries + self.mlp(queries))

        keys = self.norm4(keys + image_to_token(k, queries + query_pe, queries))
        return queries, keys


class Attention(nn.Module):
    """Multi-head attention whose projections may shrink the width by `downsample_rate`."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        internal_dim = embedding_dim // downsample_rate
        self.q_proj = nn.Linear(embedding_dim, internal_dim)
        self.k_proj = nn.Linear(embedding_dim, internal_dim)
        self.v_proj = nn.Linear(embedding_dim, internal_dim)
        self.out_proj = nn.Linear(internal_dim, embedding_dim)
        self.attn_impl: AttentionImpl = "sdpa"

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """`B x Lq x C`, `B x Lk x C`, `B x Lk x C` -> `B x Lq x C`."""
        q = split_heads(self.q_proj(q), self.num_heads)  # B x heads x Lq x d
        k = split_heads(self.k_proj(k), self.num_heads)
        v = split_heads(self.v_proj(v), self.num_heads)
        out = attention(q, k, v, impl=self.attn_impl)
        return self.out_proj(merge_heads(out))
