"""SAM's training loss (paper, section 3 and appendix A).

Masks: focal loss and dice loss, weighted 20:1. IoU head: mean-squared error between its prediction and
the IoU the predicted mask actually has with the object. With several output masks (the three of an
ambiguous single click), only the mask with the lowest mask loss is back-propagated, so each output can
specialise on one interpretation; the IoU head learns all of them.

Targets are coverages in [0, 1] (see `alignsam.train.sam.prepare`); both losses are written for soft
targets and equal the usual ones on binary targets.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from alignsam.train.sam.config import LossConfig


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Focal loss of `... x L x L` logits against targets in [0, 1], averaged over the pixels: `...`."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """`1 - (2 |P∩T| + s) / (|P| + |T| + s)` with P the sigmoid of `... x L x L` logits: `...`."""
    p = torch.sigmoid(logits).flatten(-2)
    t = targets.flatten(-2)
    return 1 - (2 * (p * t).sum(-1) + smooth) / (p.sum(-1) + t.sum(-1) + smooth)


@torch.no_grad()
def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of the masks `logits > 0` with `targets >= 0.5`, for `... x L x L`: `...` (1 when both are empty)."""
    pred, gt = logits > 0, targets >= 0.5
    inter = (pred & gt).flatten(-2).sum(-1).float()
    union = (pred | gt).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


@dataclasses.dataclass
class LossOutput:
    """`total` (the scalar to back-propagate) and, per prompt, detached parts for logging and for the next
    round: `chosen` (`P`, the output mask that was trained), `iou` (`P`, its actual IoU), `focal`, `dice`,
    `iou_mse` (`P`)."""

    total: torch.Tensor
    chosen: torch.Tensor
    iou: torch.Tensor
    focal: torch.Tensor
    dice: torch.Tensor
    iou_mse: torch.Tensor


def sam_loss(
    logits: torch.Tensor, iou_predictions: torch.Tensor, targets: torch.Tensor, config: LossConfig
) -> LossOutput:
    """The loss of P prompts with M output masks each.

    Args:
        logits: `P x M x L x L` low-resolution mask logits; iou_predictions: `P x M`.
        targets: `P x L x L` coverage targets in [0, 1].
    Returns:
        `LossOutput`; `total` is averaged over the prompts.
    """
    logits = logits.float()
    if config.binary_targets:
        targets = (targets >= 0.5).float()
    expanded = targets[:, None].expand_as(logits)
    focal = sigmoid_focal_loss(logits, expanded, config.focal_alpha, config.focal_gamma)  # P x M
    dice = dice_loss(logits, expanded)  # P x M
    mask_loss = config.focal_weight * focal + config.dice_weight * dice
    chosen = mask_loss.detach().argmin(dim=1)  # P: the output that explains the object best
    pick = chosen[:, None]
    actual = mask_iou(logits.detach(), expanded)  # P x M
    iou_mse = F.mse_loss(iou_predictions.float(), actual, reduction="none").mean(dim=1)  # P
    total = mask_loss.gather(1, pick)[:, 0] + config.iou_weight * iou_mse
    return LossOutput(
        total=total.mean(),
        chosen=chosen,
        iou=actual.gather(1, pick)[:, 0],
        focal=focal.detach().gather(1, pick)[:, 0],
        dice=dice.detach().gather(1, pick)[:, 0],
        iou_mse=iou_mse.detach(),
    )
