"""BERT's [CLS] states on the real tokens only: the fast twin of `alignsam.align.modeling.bert.Bert`.

`PackedBert.first_token` runs every per-token step (projections, feed-forward, LayerNorms) on the real
tokens only, packed into one `T x C` matrix, and spreads them back over the padded `B x L` grid just for
attention, where padding is a masked key. The same numbers as `Bert.first_token` to float32 rounding,
without the work on padding: label prompts padded to their longest are mostly padding (64 prompts padded
to 13 tokens hold 592 real tokens of 832). Inference only (`FastPath.align.pack_text`).
"""

from __future__ import annotations

from typing import cast

import torch

from alignsam.align.modeling.bert import Bert, BertLayer
from alignsam.layers import needs_grad, shallow_copy


class PackedBert(Bert):
    """A `Bert` whose `first_token` skips padding. Made from a built one with `PackedBert.of(bert)`, which
    shares its modules (no copies): its state dict is that model's."""

    @classmethod
    def of(cls, bert: Bert) -> PackedBert:
        return shallow_copy(bert, cls)

    def first_token(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        keep = None if attention_mask is None else attention_mask.bool()
        if (
            keep is None
            or not bool(keep[:, 0].all())  # a text whose first token is padding: nothing to pack around
            or self.training
            or needs_grad(*self.parameters())
        ):
            return super().first_token(input_ids, attention_mask, token_type_ids, position_ids)
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        b, n, c = x.shape
        where = keep.reshape(-1).nonzero().squeeze(1)  # flat grid positions of the real tokens, row by row
        tokens = x.reshape(b * n, c).index_select(0, where)  # T x C
        mask = keep[:, None, None, :]  # B x 1 x 1 x L
        for layer in self.layers:
            tokens = packed_layer(cast(BertLayer, layer), tokens, where, (b, n), mask)
        lengths = keep.sum(1)
        firsts = lengths.cumsum(0) - lengths  # each text's first real token in the packed order
        return tokens.index_select(0, firsts)


def packed_layer(
    layer: BertLayer, tokens: torch.Tensor, where: torch.Tensor, grid: tuple[int, int], mask: torch.Tensor
) -> torch.Tensor:
    """`layer` on packed real tokens (`T x C`), which sit at the flat positions `where` of the `B x L` grid
    (`grid`); padding is spread in as zeros for attention only (masked keys)."""
    b, n = grid
    qkv = layer.attn.qkv(tokens)  # T x 3C
    spread = qkv.new_zeros(b * n, qkv.shape[1]).index_copy_(0, where, qkv).view(b, n, -1)  # B x L x 3C
    attended = layer.attn.attend(spread, mask).reshape(b * n, -1).index_select(0, where)  # T x C
    return layer.residuals(tokens, layer.attn.proj(attended))
