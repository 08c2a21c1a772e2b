"""Ranking metrics on embeddings: top-k accuracy and image<->text recall@K (the standard protocol).

Retrieval follows the Flickr30K / COCO protocol used by ALIGN, CLIP and CLIP_benchmark: every image has one
or more captions; text -> image R@K is the share of captions whose image ranks in the top K images;
image -> text R@K is the share of images with at least one of their captions in the top K texts. Ranks count
the candidates that score strictly higher, so ties favour the right answer (they do not occur in practice
with float embeddings).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Share of rows whose target class is among the `k` highest logits.

    Args:
        logits: `N x C` scores.
        targets: `N` class indices.
    Returns:
        {"top1": ..., "top5": ...} (k larger than C counts as C).
    """
    ranks = (logits > logits.gather(1, targets[:, None])).sum(1)  # N: classes scoring strictly higher
    return {f"top{k}": round(float((ranks < k).float().mean()), 6) for k in ks}


def recall_at_k(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 2048,
) -> dict[str, float]:
    """Image<->text recall@K in both directions.

    Args:
        image_embeds: `N_img x D`, L2-normalised.
        text_embeds: `N_txt x D`, L2-normalised.
        text_to_image: `N_txt` long, the image each caption describes.
        chunk: captions scored at once (bounds memory at `chunk x N_img` scores).
    Returns:
        {"text_to_image_R@1": ..., ..., "image_to_text_R@10": ..., "text_to_image_median_rank": ...,
         "image_to_text_median_rank": ...}, recalls in [0, 1], ranks 1-based.
    """
    n_img = image_embeds.shape[0]
    t2i_rank = torch.empty(text_embeds.shape[0], dtype=torch.long)  # 0-based rank of each caption's image
    for start in range(0, text_embeds.shape[0], chunk):
        scores = text_embeds[start : start + chunk] @ image_embeds.t()  # c x N_img
        right = scores.gather(1, text_to_image[start : start + chunk, None])  # c x 1
        t2i_rank[start : start + chunk] = (scores > right).sum(1)
    i2t_ranks = []  # per image with captions: 0-based rank of its best-placed own caption
    for start in range(0, n_img, chunk):
        scores = image_embeds[start : start + chunk] @ text_embeds.t()  # c x N_txt
        own = text_to_image[None, :] == torch.arange(start, start + scores.shape[0])[:, None]  # c x N_txt
        best_own = scores.masked_fill(~own, float("-inf")).max(1).values  # c
        ranks = (scores > best_own[:, None]).sum(1)  # texts above the best own caption
        i2t_ranks.append(ranks[own.any(1)])  # an image without captions is no query
    i2t = torch.cat(i2t_ranks)
    out: dict[str, float] = {}
    for k in ks:
        out[f"text_to_image_R@{k}"] = round(float((t2i_rank < k).float().mean()), 6)
    for k in ks:
        out[f"image_to_text_R@{k}"] = round(float((i2t < k).float().mean()), 6)
    out["text_to_image_median_rank"] = float(t2i_rank.float().median() + 1)
    out["image_to_text_median_rank"] = float(i2t.float().median() + 1)
    return out
