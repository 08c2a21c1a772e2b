"""ALIGN's contrastive loss: a normalised softmax over in-batch pairs, in both directions.

`logits_per_text[i, j]` scores text i against image j; the matching pairs sit on the diagonal. Each
direction is a cross-entropy with label smoothing (0.1 in the paper); transformers averages the two
directions (`reduction="mean"`), the paper and Kakao's code add them (`reduction="sum"`).

Across processes (`torch.distributed`), the negatives of every pair are the pairs of *all* processes:
`gather_features` concatenates the embeddings of every rank, keeping the autograd graph so that each
rank's embeddings receive the gradient of every rank's loss. `distributed_align_loss` then offers two
ways to score them (open_clip's `--local-loss`):

- naive: every rank builds the full `G x G` logit matrix (G = global batch) and computes the same loss;
- local: each rank scores only its own `B` texts and `B` images against everything (`B x G` twice) and
  averages over its own rows. Memory is linear in G instead of quadratic.

Both give the same parameter gradients once DDP averages them over ranks (tested): with `naive`, every
rank's loss is the global loss L and the gather's backward sums W identical contributions; with `local`,
the rank losses average to L and the gather's backward sums their different contributions.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F

Reduction = Literal["mean", "sum"]


def contrastive_loss(
    logits: torch.Tensor, labels: torch.Tensor | None = None, label_smoothing: float = 0.1
) -> torch.Tensor:
    """Cross-entropy of `N x M` logits whose targets are `labels` (default: the diagonal, `arange(N)`)."""
    if labels is None:
        labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def align_loss(
    logits_per_text: torch.Tensor,
    label_smoothing: float = 0.1,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Text-to-image plus image-to-text loss of a square `N x N` logit matrix."""
    caption_loss = contrastive_loss(logits_per_text, label_smoothing=label_smoothing)
    image_loss = contrastive_loss(logits_per_text.t(), label_smoothing=label_smoothing)
    total = caption_loss + image_loss
    return total / 2.0 if reduction == "mean" else total


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGather(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient of our rows (all-reduce, then slice).

    Our own function rather than `torch.distributed.nn.functional.all_gather`, which is deprecated.
    """

    @staticmethod
    def forward(ctx: Any, features: torch.Tensor) -> torch.Tensor:
        rank, world = _world()
        ctx.rows, ctx.rank = features.shape[0], rank
        parts = [torch.empty_like(features) for _ in range(world)]
        dist.all_gather(parts, features.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every rank's loss depends on our rows
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_features(features: torch.Tensor, *, with_grad: bool = True) -> torch.Tensor:
    """All ranks' `B x D` features concatenated in rank order: `W*B x D` (the input itself on one process).

    with_grad: keep the graph through the gather (each rank's features get the gradients of every rank's
        loss). Without it, the other ranks' rows are constants and only the local rows carry gradients,
        which changes the gradients (open_clip's default without `--gather-with-grad`).
    Every rank must pass the same `B`.
    """
    rank, world = _world()
    if world == 1:
        return features
    if with_grad:
        out: torch.Tensor = _AllGather.apply(features)
        return out
    parts = [torch.empty_like(features) for _ in range(world)]
    dist.all_gather(parts, features.detach().contiguous())
    parts[rank] = features  # our own rows keep their graph
    return torch.cat(parts, dim=0)


def distributed_align_loss(
    text_embeds: torch.Tensor,
    image_embeds: torch.Tensor,
    temperature: torch.Tensor,
    *,
    label_smoothing: float = 0.1,
    reduction: Reduction = "mean",
    local_loss: bool = False,
    gather_with_grad: bool = True,
) -> torch.Tensor:
    """ALIGN's loss over the global batch of all processes (the plain `align_loss` on one process).

    Args:
        text_embeds, image_embeds: this rank's L2-normalised embeddings, `B x D` each, pairs row by row.
            Every rank must hold the same `B` (the trainer's batches are always full).
        temperature: the learnable 0-d temperature; logits are cosine / temperature.
        local_loss: score only this rank's rows against the gathered columns (`B x G`), see the module
            docstring; otherwise build the full `G x G` matrix on every rank.
        gather_with_grad: see `gather_features`.
    Returns:
        A 0-d loss. Averaged over ranks (what DDP's gradient averaging does) it equals the single-process
        loss of the global batch, in both modes.
    """
    rank, world = _world()
    all_text = gather_features(text_embeds, with_grad=gather_with_grad)  # G x D
    all_image = gather_features(image_embeds, with_grad=gather_with_grad)  # G x D
    if not local_loss or world == 1:
        return align_loss(all_text @ all_image.t() / temperature, label_smoothing, reduction)
    b = text_embeds.shape[0]
    labels = torch.arange(b, device=text_embeds.device) + rank * b  # our pairs sit at columns rank*B ...
    text_loss = contrastive_loss(text_embeds @ all_image.t() / temperature, labels, label_smoothing)  # B x G
    image_loss = contrastive_loss(image_embeds @ all_text.t() / temperature, labels, label_smoothing)  # B x G
    total = text_loss + image_loss
    return total / 2.0 if reduction == "mean" else total
