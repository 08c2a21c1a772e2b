"""SAM's fast paths against the plain path on the same weights.

bf16 autocast of the image encoder: the final masks agree with the float32 masks at IoU >= 0.98 (the speed
issue's bound); torch.compile: low-resolution logits within 1e-3 and IoU predictions within 1e-4; oneDNN's
matrix multiplies (on by default): low-resolution logits within 1e-4 and IoU predictions within 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignsam.inference import PLAIN, FastPath
from alignsam.sam import SamModel, SamPredictor
from tests.sam.sam_testing import make_masks_follow_the_image_, randomize_, tiny_config


def _masks(model: SamModel, image: np.ndarray, fast: FastPath):
    predictor = SamPredictor(model, fast=fast)
    predictor.set_image(image)
    out = []
    for prompt in (
        {"point_coords": np.array([[150.0, 120.0]]), "point_labels": np.array([1])},
        {"box": np.array([60.0, 40.0, 300.0, 260.0])},
        {"point_coords": np.array([[100.0, 100.0], [250.0, 200.0]]), "point_labels": np.array([1, 0])},
    ):
        out.append(predictor.predict(**prompt, multimask_output=True))
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _model(config) -> SamModel:
    """Random weights whose masks are regions that follow the photo (random ViTs give pixel noise, whose
    boundaries any rounding would move), with mask logits as steep as a trained SAM's (|logit| ~ 10; with
    flat random logits any rounding flips the boundary pixels)."""
    torch.manual_seed(0)
    model = randomize_(SamModel.from_config(config), seed=0, logit_gain=4.0)
    with torch.no_grad():
        make_masks_follow_the_image_(model)
    return model.eval()


def _check_bf16(model: SamModel, image: np.ndarray) -> None:
    ref = _masks(model, image, PLAIN)
    fast = _masks(model, image, FastPath(precision="bf16", fold_batchnorm=False, channels_last=False))
    ious = [_iou(a, b) for r, f in zip(ref, fast, strict=True) for a, b in zip(r.masks, f.masks, strict=True)]
    assert min(ious) >= 0.98, ious
    assert any(0.02 < r.masks.mean() < 0.98 for r in ref)  # masks with real boundaries, not all or nothing


def test_bf16_masks_match_fp32(sample_photo):
    _check_bf16(_model(tiny_config()), sample_photo[:300, :400])


@pytest.mark.slow
def test_compile_matches_plain(sample_photo):
    model = _model(tiny_config())
    ref = _masks(model, sample_photo[:300, :400], PLAIN)
    fast = _masks(model, sample_photo[:300, :400], FastPath(compile=True, fold_batchnorm=False, channels_last=False))
    for r, f in zip(ref, fast, strict=True):
        assert np.abs(r.low_res_logits - f.low_res_logits).max() <= 1e-3
        assert np.abs(r.iou_predictions - f.iou_predictions).max() <= 1e-4


def test_onednn_matmul_matches_plain(sample_photo):
    """The predictor's default (oneDNN matrix multiplies for the encoder's linear layers) against PLAIN."""
    model = _model(tiny_config())
    ref = _masks(model, sample_photo[:300, :400], PLAIN)
    fast = _masks(model, sample_photo[:300, :400], FastPath(fold_batchnorm=False, channels_last=False))
    assert SamPredictor(model).fast.onednn_matmul  # what users get
    for r, f in zip(ref, fast, strict=True):
        assert np.abs(r.low_res_logits - f.low_res_logits).max() <= 1e-4
        assert np.abs(r.iou_predictions - f.iou_predictions).max() <= 1e-5
