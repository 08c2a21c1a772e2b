"""Parity with the official segment-anything package on the same random vit_b weights.

The official model is built by its own `sam_model_registry["vit_b"]`, given random weights of sensible
scale, saved as a `.pth` and loaded here through our `sam_model_registry["vit_b"](checkpoint=...)`. Both
predictors embed the same photograph once (module fixture); every prompt then goes through the public
`SamPredictor.predict` of each implementation.

Tolerances (the issue's): IoU predictions within 1e-4, low-resolution logits within 1e-3 absolute, binary
masks identical except where the official full-size logit is within 1e-3 of the threshold 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import alignsam
from alignsam.sam import SamPredictor, sam_vit_b
from tests.sam.sam_testing import randomize_

IOU_TOL = 1e-4
LOGIT_TOL = 1e-3
MASK_MARGIN = 1e-3
EMBED_TOL = 1e-3

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(official: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    torch.manual_seed(0)
    sam = official.sam_model_registry["vit_b"]()
    randomize_(sam, seed=1234, logit_gain=4.0)
    path = tmp_path_factory.mktemp("official") / "sam_vit_b_random.pth"
    torch.save(sam.state_dict(), path)
    return sam, path


@pytest.fixture(scope="module")
def predictors(official: Any, checkpoint: Any, photo: np.ndarray) -> tuple[Any, SamPredictor]:
    sam, path = checkpoint
    ours = alignsam.sam_model_registry["vit_b"](checkpoint=path)
    reference = official.SamPredictor(sam)
    reference.set_image(photo)
    predictor = SamPredictor(ours)
    predictor.set_image(photo)
    return reference, predictor


def test_registry_checkpoint_is_vit_b_and_from_pretrained_agrees(checkpoint: Any) -> None:
    _, path = checkpoint
    model = alignsam.SamModel.from_pretrained(path)  # architecture read from the tensor shapes
    assert model.config == sam_vit_b()
    assert not model.training


def test_image_embeddings_agree(predictors: tuple[Any, SamPredictor]) -> None:
    reference, predictor = predictors
    expected, got = reference.get_image_embedding(), predictor.get_image_embedding()
    assert got.shape == expected.shape == (1, 256, 64, 64)
    diff = (got - expected).abs().max().item()
    print(f"\n[official vit_b] image embedding max |diff| = {diff:.3g} (scale {expected.abs().max().item():.3g})")
    assert diff < EMBED_TOL


def _previous_logits(reference: Any) -> np.ndarray:
    _, scores, logits = reference.predict(np.array([[300, 200]]), np.array([1]), multimask_output=True)
    return logits[np.argmax(scores)][None]


PROMPTS: dict[str, dict[str, Any]] = {
    "one point": {"point_coords": [[300, 200]], "point_labels": [1]},
    "points +/-": {"point_coords": [[300, 200], [100, 50], [500, 300], [420, 120]], "point_labels": [1, 0, 1, 0]},
    "box": {"box": [100, 80, 450, 320]},
    "box and points": {"box": [100, 80, 450, 320], "point_coords": [[250, 200], [400, 100]], "point_labels": [1, 0]},
    "mask and point": {"point_coords": [[260, 180]], "point_labels": [1], "mask_input": "previous"},
    "mask only": {"mask_input": "previous"},
}


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("name", list(PROMPTS))
def test_predict_matches_official(predictors: tuple[Any, SamPredictor], name: str, multimask: bool) -> None:
    reference, predictor = predictors
    prompt: dict[str, Any] = {k: np.array(v) for k, v in PROMPTS[name].items() if k != "mask_input"}
    if "mask_input" in PROMPTS[name]:
        prompt["mask_input"] = _previous_logits(reference)
    ref_logits, ref_iou, ref_low = reference.predict(**prompt, multimask_output=multimask, return_logits=True)
    ref_masks = ref_logits > 0  # what the official predict returns without return_logits
    logits, iou, low = predictor.predict(**prompt, multimask_output=multimask, return_logits=True)
    masks = logits > 0  # the boolean path itself is tested in test_predictor.py

    n = 3 if multimask else 1
    assert masks.shape == ref_masks.shape == (n, 400, 600)
    assert low.shape == (n, 256, 256) and iou.shape == (n,)
    iou_diff = np.abs(iou - ref_iou).max()
    low_diff = np.abs(low - ref_low).max()
    near = np.abs(ref_logits) < MASK_MARGIN
    flips = int((masks != ref_masks).sum())
    print(
        f"\n[official vit_b] {name:15s} multimask={multimask!s:5s} iou diff {iou_diff:.2g}  low-res logit diff "
        f"{low_diff:.2g}  full logit diff {np.abs(logits - ref_logits).max():.2g}  mask flips {flips} "
        f"(near-threshold px {int(near.sum())})"
    )
    assert iou_diff < IOU_TOL
    assert low_diff < LOGIT_TOL
    np.testing.assert_array_equal(masks[~near], ref_masks[~near])
    # The comparison is only meaningful for masks that are neither empty nor full.
    coverage = ref_masks.mean(axis=(1, 2))
    assert ((coverage > 0.01) & (coverage < 0.99)).any(), coverage
    assert ref_low.std() > 0.5


def test_prompts_give_different_masks(predictors: tuple[Any, SamPredictor]) -> None:
    """Guards the parity tests against degenerate weights whose masks ignore the prompt."""
    _, predictor = predictors
    a = predictor.predict(np.array([[300, 200]]), np.array([1]), multimask_output=False).masks
    b = predictor.predict(box=np.array([20, 20, 120, 100]), multimask_output=False).masks
    assert (a != b).mean() > 0.01
