"""SAM's mask decoder for a batch of prompts on one image, with the image-side work done once.

The plain decoder (`MaskDecoder`, as the official one) copies the image embedding for every prompt set and
runs the two-way transformer on each copy: ten `hw x C` by `C x C/2` projections a prompt set (2.7 GFLOP
for vit_b), although each set has only a handful of tokens. This path computes the same function
(`FastPath.sam.prompt_batch`; `PromptBatchDecoder` stands in for the plain decoder) with fewer multiplies:

- the first block's image side is the same for every prompt set (one image, no mask prompt), so its
  keys, values and image queries are projected once and the sets' tokens attend to them together;
- elsewhere each cross-attention is reassociated around the few tokens. Tokens -> image: the scores are
  `(q W_k) x^T` (the key bias adds a constant to each row, which the softmax ignores) and the output is
  `(softmax x) W_v^T + b_v`. Image -> tokens: the scores are `x (W_q^T k^T) + b_q k^T` and the output
  projection is folded into the values, `softmax (v W_o^T) + b_o`. The transformer then does ~0.8
  instead of 2.7 GFLOP a prompt set;
- the upscaling's 2 x 2, stride-2 transposed convolutions run as linear layers on the image tokens as
  they are (no transpose to a feature map), the hypernetworks' products per pixel;
- prompt sets go through a few at a time (`CHUNK_BYTES`), so that large intermediates reuse heap memory.

The results equal the plain decoder's to float32 rounding (different sums, in a different order; tests:
logits within 1e-4, IoU predictions within 1e-5); benchmarks/RESULTS.md has the speed.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from alignsam.layers import needs_grad, shallow_copy
from alignsam.sam.modeling.mask_decoder import MaskDecoder, check_image_batch
from alignsam.sam.modeling.transformer import Attention, TwoWayAttentionBlock

CHUNK_BYTES = 8 << 20
"""Prompt sets decoded together: as many as keep one `hw x C` float tensor of theirs within this (2 for vit_b),
so that the decoder's large intermediates are reused heap memory rather than fresh pages each time."""


class PromptBatchDecoder(MaskDecoder):
    """A `MaskDecoder` that decodes with `decode_prompt_batch` for inference (the plain path while training or
    under autograd). Made from a built decoder with `PromptBatchDecoder.of(decoder)`, sharing its modules."""

    @classmethod
    def of(cls, decoder: MaskDecoder) -> PromptBatchDecoder:
        return shallow_copy(decoder, cls)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        args = (image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, multimask_output)
        if self.training or needs_grad(*args[:4], *self.parameters()):
            return super().forward(*args)
        return decode_prompt_batch(self, *args)


def decode_prompt_batch(
    decoder: MaskDecoder,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
    multimask_output: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What `decoder(...)` returns (mask logits `B x M x 4h x 4w`, IoUs `B x M`), for inference."""
    b = sparse_prompt_embeddings.shape[0]
    check_image_batch(image_embeddings, b)
    dense = dense_prompt_embeddings.expand(b, -1, -1, -1)
    shared = image_embeddings.shape[0] == 1 and (dense.shape[0] == 1 or dense.stride(0) == 0)
    # no mask prompt on one image: one image side for every set
    shared_src = (image_embeddings + dense[:1]).flatten(2).transpose(1, 2) if shared else None
    key_pe = image_pe.flatten(2).transpose(1, 2)
    memo: dict[nn.Module, torch.Tensor] = {}  # projections of the shared image side, made once
    masks, ious = [], []
    step = max(1, CHUNK_BYTES // max(1, image_pe[0].numel() * image_pe.element_size()))
    for start in range(0, b, step):
        end = min(b, start + step)
        src = shared_src
        if src is None:
            embeddings = image_embeddings if image_embeddings.shape[0] == 1 else image_embeddings[start:end]
            src = (embeddings + dense[start:end]).flatten(2).transpose(1, 2)
        out = _decode(
            decoder, src, key_pe, sparse_prompt_embeddings[start:end], image_pe.shape[-2:], memo if shared else None
        )
        masks.append(out[0])
        ious.append(out[1])
    mask_slice = slice(1, None) if multimask_output else slice(0, 1)
    return torch.cat(masks)[:, mask_slice], torch.cat(ious)[:, mask_slice]


def _decode(
    decoder: MaskDecoder, keys: torch.Tensor, key_pe: torch.Tensor, sparse: torch.Tensor, size: torch.Size,
    memo: dict[nn.Module, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """`MaskDecoder.predict_masks` for a few prompt sets; `keys`: their image tokens, `B x hw x C`, or
    `1 x hw x C` shared by all, with `memo` holding the projections of it that earlier chunks made."""
    tokens = decoder.prompt_tokens(sparse)
    queries = tokens
    transformer = decoder.transformer
    shared = memo  # the image side is shared until the first block has mixed each set's tokens into it
    for layer in transformer.layers:
        assert isinstance(layer, TwoWayAttentionBlock)
        token_to_image = functools.partial(_token_to_image, layer.cross_attn_token_to_image, memo=shared)
        image_to_token = functools.partial(_image_to_token, layer.cross_attn_image_to_token, memo=shared)
        queries, keys = layer.forward_with(
            token_to_image, image_to_token, queries, keys, query_pe=tokens, key_pe=key_pe
        )
        shared = None  # after a block each prompt set has its own image tokens
    attn_out = _token_to_image(transformer.final_attn_token_to_image, queries + tokens, keys + key_pe, keys, shared)
    hs = transformer.norm_final_attn(queries + attn_out)
    return _mask_heads(decoder, hs, keys.expand(len(tokens), -1, -1), size)


def _mask_heads(
    decoder: MaskDecoder, hs: torch.Tensor, keys: torch.Tensor, size: torch.Size
) -> tuple[torch.Tensor, torch.Tensor]:
    """`MaskDecoder.heads` on the image tokens as they are (`B x hw x C`, no transpose to a map).

    A stride-2, 2 x 2 transposed convolution maps each cell to its own 2 x 2 block: a linear layer to
    `4 x C'` features per cell. Both upscaling steps run so, with the LayerNorm over each output pixel's
    channels; the hypernetworks' products are taken per pixel and the pixels put in place at the end.
    """
    up = decoder.output_upscaling
    b = keys.shape[0]
    h, w = size
    x = F.linear(keys, *_as_linear(up.conv1))  # B x hw x (2 x 2 x C/4)
    x = x.view(b, h * w, 4, -1)
    x = up.act(F.layer_norm(x, x.shape[-1:], up.norm.weight, up.norm.bias, up.norm.eps))
    x = up.act(F.linear(x, *_as_linear(up.conv2)))  # B x hw x 4 x (2 x 2 x C/8)
    hyper_in, iou_predictions = decoder.token_heads(hs)  # B x (M+1) x C/8, B x (M+1)
    masks = torch.bmm(x.reshape(b, h * w * 16, -1), hyper_in.transpose(1, 2))  # B x (hw 16) x (M+1)
    masks = masks.view(b, h, w, 2, 2, 2, 2, -1).permute(0, 7, 1, 3, 5, 2, 4, 6).reshape(b, -1, 4 * h, 4 * w)
    return masks, iou_predictions


def _as_linear(conv: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A stride-2, 2 x 2 transposed convolution as a linear layer to `(dy, dx, channel)` features."""
    weight = conv.weight.permute(2, 3, 1, 0).reshape(-1, conv.in_channels)  # (2 x 2 x out) x in
    return weight, None if conv.bias is None else conv.bias.repeat(4)


def _per_head(attn: Attention, proj: torch.nn.Linear) -> tuple[int, int, torch.Tensor]:
    """Heads, head width and `proj`'s weight as `heads x d x C`."""
    h = attn.num_heads
    d = proj.out_features // h
    return h, d, proj.weight.view(h, d, proj.in_features)


def _once(memo: dict[nn.Module, torch.Tensor], proj: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`proj(x)` for an input shared by every chunk of prompt sets (computed by the first chunk)."""
    if proj not in memo:
        memo[proj] = proj(x)
    return memo[proj]


def _token_to_image(
    attn: Attention, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor,
    memo: dict[nn.Module, torch.Tensor] | None,
) -> torch.Tensor:  # fmt: skip
    """`attn(q_in, k_in, v_in)` for few tokens `B x T x C` attending to image tokens `1 or B x hw x C`."""
    b, t, _ = q_in.shape
    h, d, w_k = _per_head(attn, attn.k_proj)
    q = attn.q_proj(q_in).view(b, t, h, d)
    if memo is not None:  # shared image: project it once; every set's tokens are queries of one attention
        k = _once(memo, attn.k_proj, k_in).view(1, -1, h, d).transpose(1, 2)
        v = _once(memo, attn.v_proj, v_in).view(1, -1, h, d).transpose(1, 2)
        queries = q.permute(2, 0, 1, 3).reshape(1, h, b * t, d)
        out = F.scaled_dot_product_attention(queries, k, v).view(h, b, t, d).permute(1, 2, 0, 3)
        return attn.out_proj(out.reshape(b, t, h * d))
    _, _, w_v = _per_head(attn, attn.v_proj)
    g = torch.einsum("bthd,hdc->bhtc", q * d**-0.5, w_k).reshape(b, h * t, -1)  # scores = g x^T
    probs = torch.bmm(g, k_in.transpose(1, 2)).softmax(-1)  # B x (h t) x hw
    mixed = torch.bmm(probs, v_in).view(b, h, t, -1)  # softmax-weighted image tokens
    out = torch.einsum("bhtc,hdc->bthd", mixed, w_v).reshape(b, t, h * d) + attn.v_proj.bias
    return attn.out_proj(out)


def _image_to_token(
    attn: Attention, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor,
    memo: dict[nn.Module, torch.Tensor] | None,
) -> torch.Tensor:  # fmt: skip
    """`attn(q_in, k_in, v_in)` for image tokens `1 or B x hw x C` attending to few tokens `B x T x C`."""
    b, t, c = k_in.shape
    h, d, w_q = _per_head(attn, attn.q_proj)
    k = attn.k_proj(k_in).view(b, t, h, d) * d**-0.5
    v = attn.v_proj(v_in).view(b, t, h, d)
    if memo is not None:  # shared image: its queries once, then each set's few keys
        q = _once(memo, attn.q_proj, q_in).view(-1, h, d)
        scores = torch.einsum("bthd,nhd->bhtn", k, q)
    else:
        e = torch.einsum("bthd,hdc->bhtc", k, w_q).reshape(b, h * t, c)  # scores = e x^T + k b_q
        bias = torch.einsum("bthd,hd->bht", k, attn.q_proj.bias.view(h, d)).reshape(b, h * t, 1)
        scores = torch.baddbmm(bias, e, q_in.transpose(1, 2)).view(b, h, t, -1)
    probs = scores.softmax(2).view(b, h * t, -1)  # B x (h t) x hw: over each head's tokens
    w_o = attn.out_proj.weight.view(c, h, d)
    values = torch.einsum("bthd,chd->bhtc", v, w_o).reshape(b, h * t, c)  # the output projection folded in
    return torch.baddbmm(attn.out_proj.bias, probs.transpose(1, 2), values)
