"""ALIGN's contrastive loss: a normalised softmax over in-batch pairs, in both directions.

`logits_per_text[i, j]` scores text i against image j; the matching pairs sit on the diagonal. Each
direction is a cross-entropy with label smoothing (0.1 in the paper); transformers averages the two
directions (`reduction="mean"`), the paper and Kakao's code add them (`reduction="sum"`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F


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
    reduction: Literal["mean", "sum"] = "mean",
) -> torch.Tensor:
    """Text-to-image plus image-to-text loss of a square `N x N` logit matrix."""
    caption_loss = contrastive_loss(logits_per_text, label_smoothing=label_smoothing)
    image_loss = contrastive_loss(logits_per_text.t(), label_smoothing=label_smoothing)
    total = caption_loss + image_loss
    return total / 2.0 if reduction == "mean" else total
