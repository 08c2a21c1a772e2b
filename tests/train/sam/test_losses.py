"""The loss: focal and dice against naive formulas, the 20:1:1 weighting, the best-of-three rule."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignsam.train.sam.config import LossConfig
from alignsam.train.sam.losses import dice_loss, mask_iou, sam_loss, sigmoid_focal_loss


def _naive_focal(x: torch.Tensor, t: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """torchvision.ops.sigmoid_focal_loss, written out per element and averaged over the pixels."""
    p = 1 / (1 + torch.exp(-x.double()))
    t = t.double()
    ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    a_t = alpha * t + (1 - alpha) * (1 - t)
    return (a_t * ce * (1 - p_t) ** gamma).flatten(-2).mean(-1)


def test_focal_and_dice_match_naive_formulas() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 2, 8, 8) * 3
    t = (torch.rand(3, 2, 8, 8) > 0.6).float()
    torch.testing.assert_close(sigmoid_focal_loss(x, t, 0.25, 2.0).double(), _naive_focal(x, t, 0.25, 2.0))
    p = torch.sigmoid(x)
    naive_dice = 1 - (2 * (p * t).sum((-1, -2)) + 1) / (p.sum((-1, -2)) + t.sum((-1, -2)) + 1)
    torch.testing.assert_close(dice_loss(x, t), naive_dice)
    # soft targets: at the optimum of a 0.5 target the focal gradient vanishes at logit 0
    zero = torch.zeros(1, 1, 2, 2, requires_grad=True)
    sigmoid_focal_loss(zero, torch.full((1, 1, 2, 2), 0.5), -1, 2.0).sum().backward()
    assert zero.grad is not None and float(zero.grad.abs().max()) < 1e-7


def test_sam_loss_weights_and_best_of_three() -> None:
    target = torch.zeros(2, 8, 8)
    target[:, 2:6, 2:6] = 1.0
    good = torch.where(target > 0, 8.0, -8.0)
    logits = torch.stack([-good, good, torch.zeros_like(good)], dim=1)  # P x 3 x L x L: the middle one is right
    logits.requires_grad_(True)
    ious = torch.tensor([[0.1, 0.9, 0.5], [0.0, 1.0, 0.0]])
    config = LossConfig()
    out = sam_loss(logits, ious, target, config)
    assert out.chosen.tolist() == [1, 1]
    assert out.iou.tolist() == [1.0, 1.0]
    actual = mask_iou(logits.detach(), target[:, None].expand_as(logits))  # P x 3
    expected_mse = ((ious - actual) ** 2).mean(1)
    torch.testing.assert_close(out.iou_mse, expected_mse)
    focal = sigmoid_focal_loss(good, target, 0.25, 2.0)
    dice = dice_loss(good, target)
    expected = (20 * focal + dice + expected_mse).mean()
    torch.testing.assert_close(out.total, expected)
    # only the chosen mask gets a gradient from the mask loss
    out.total.backward()
    assert logits.grad is not None
    assert float(logits.grad[:, 0].abs().sum()) == 0 and float(logits.grad[:, 2].abs().sum()) == 0
    assert float(logits.grad[:, 1].abs().sum()) > 0


def test_mask_iou_of_empty_and_disjoint_masks() -> None:
    t = torch.zeros(3, 4, 4)
    t[1:, :2] = 1
    x = torch.full((3, 4, 4), -1.0)
    x[2, 2:] = 1.0
    assert mask_iou(x, t).tolist() == [1.0, 0.0, 0.0]
    assert F.mse_loss(mask_iou(x, t), torch.tensor([1.0, 0.0, 0.0])) == 0


def test_binary_targets_threshold_the_coverage() -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 8, 8) * 4
    ious = torch.rand(2, 3)
    soft = torch.rand(2, 8, 8)
    binary = sam_loss(logits, ious, soft, LossConfig(binary_targets=True))
    thresholded = sam_loss(logits, ious, (soft >= 0.5).float(), LossConfig())
    torch.testing.assert_close(binary.total, thresholded.total)
    assert not torch.allclose(sam_loss(logits, ious, soft, LossConfig()).total, binary.total)
