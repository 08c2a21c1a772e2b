"""BERT, as ALIGN's text tower: post-LayerNorm encoder with absolute positions and exact GELU.

Attention goes through the project's one `attention` helper (`F.scaled_dot_product_attention`), with the
query, key and value projections fused into one matrix multiply. Padding is a boolean key mask, so a batch
padded to its longest text gives the same [CLS] state as one padded to 64 tokens.

`Bert.first_token` returns the [CLS] states alone; its fast twin, `alignsam.align.fast.bert.PackedBert`,
computes them on the real tokens only.
"""

from __future__ import annotations

import torch
from torch import nn

from alignsam.align.modeling.config import AlignTextConfig
from alignsam.layers import attention, get_activation, merge_heads


class BertEmbeddings(nn.Module):
    """word + position + token type, then LayerNorm and dropout."""

    def __init__(self, cfg: AlignTextConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        length = input_ids.shape[1]
        if position_ids is None:
            position_ids = torch.arange(length, device=input_ids.device)[None]  # 1 x L
        if token_type_ids is None:
            x = self.word(input_ids) + self.token_type.weight[0]  # all segment 0, no ids materialised
        else:
            x = self.word(input_ids) + self.token_type(token_type_ids)
        x = x + self.position(position_ids)
        return self.dropout(self.norm(x))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention with a fused QKV projection and an output projection."""

    def __init__(self, cfg: AlignTextConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.attn_dropout = cfg.attention_probs_dropout_prob
        self.attn_impl = "sdpa"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.proj(self.attend(self.qkv(x), mask))  # B x L x C

    def attend(self, qkv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Attention from projected `B x L x 3C` queries, keys and values to `B x L x C` (before `proj`)."""
        b, n, c3 = qkv.shape
        # B x L x 3C -> 3 x B x H x L x D
        qkv = qkv.view(b, n, 3, self.num_heads, c3 // (3 * self.num_heads)).permute(2, 0, 3, 1, 4)
        out = attention(
            qkv[0],
            qkv[1],
            qkv[2],
            mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
            impl=self.attn_impl,  # type: ignore[arg-type]
        )
        return merge_heads(out)


class BertMLP(nn.Module):
    def __init__(self, cfg: AlignTextConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = get_activation(cfg.hidden_act)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class BertLayer(nn.Module):
    """Post-LN block: x = norm1(x + attn(x)); x = norm2(x + mlp(x))."""

    def __init__(self, cfg: AlignTextConfig) -> None:
        super().__init__()
        self.attn = BertSelfAttention(cfg)
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = BertMLP(cfg)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.residuals(x, self.attn(x, mask))

    def residuals(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Everything after attention, per token: both residual sums, the feed-forward and the norms."""
        x = self.norm1(x + self.dropout(attended))
        return self.norm2(x + self.dropout(self.mlp(x)))


class BertPooler(nn.Module):
    """tanh(dense([CLS])). Kept for checkpoint compatibility; ALIGN's embedding reads [CLS] directly."""

    def __init__(self, cfg: AlignTextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class Bert(nn.Module):
    """The encoder. `forward` returns the last hidden states, `B x L x C`."""

    def __init__(self, cfg: AlignTextConfig) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.layers = nn.ModuleList([BertLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.pooler = BertPooler(cfg)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            input_ids: `B x L` token ids.
            attention_mask: `B x L`, 1 for tokens and 0 for padding (None: no padding).
            token_type_ids: `B x L` segment ids (None: all 0).
            position_ids: `B x L` or `1 x L` (None: 0 .. L-1).
        """
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # B x 1 x 1 x L
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def first_token(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The last hidden state of each text's first token ([CLS]), `B x C`; arguments as `forward`."""
        return self(input_ids, attention_mask, token_type_ids, position_ids)[:, 0]
