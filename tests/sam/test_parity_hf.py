"""Parity with transformers' `SamModel` on random-initialised directories it saved.

transformers is the oracle: it builds the model from its own configuration, the weights are randomised,
`save_pretrained` writes the directory (with a `preprocessor_config.json`), and we load it with
`SamModel.from_pretrained(directory)`. HF runs through its public path: `SamProcessor` (PIL backend),
`get_image_embeddings`, the model on the embeddings, `post_process_masks`.

Two configurations: the default one (vit_b, 1024 px; slow) and a small custom one with non-default
sizes and epsilons (proves that the directory's configuration, not a preset, decides). Tolerances as for
the official model: IoU 1e-4, low-resolution logits 1e-3, binary masks equal away from |logit| < 1e-3.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from alignsam.sam import SamModel, SamPredictor
from tests.sam.sam_testing import randomize_

IOU_TOL = 1e-4
LOGIT_TOL = 1e-3
MASK_MARGIN = 1e-3

SMALL: dict[str, Any] = {
    "vision_config": {
        "hidden_size": 96,
        "num_hidden_layers": 3,
        "num_attention_heads": 3,
        "mlp_dim": 192,
        "image_size": 512,
        "window_size": 8,
        "global_attn_indexes": [2],
        "output_channels": 128,
        "num_pos_feats": 64,
        "layer_norm_eps": 1e-5,
    },
    "prompt_encoder_config": {"hidden_size": 128, "image_size": 512, "mask_input_channels": 8, "layer_norm_eps": 1e-5},
    "mask_decoder_config": {
        "hidden_size": 128,
        "mlp_dim": 512,
        "num_attention_heads": 4,
        "iou_head_hidden_dim": 64,
        "layer_norm_eps": 1e-5,
    },
}


def _processor(image_size: int) -> Any:
    from transformers import SamImageProcessorPil, SamProcessor

    return SamProcessor(
        image_processor=SamImageProcessorPil(
            size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size}
        )
    )


def _hf_pair(tmp: Path, config_kwargs: dict[str, Any], photo: np.ndarray) -> tuple[Any, Any, Any, SamPredictor]:
    from transformers import SamConfig as HFSamConfig
    from transformers import SamModel as HFSamModel

    torch.manual_seed(0)
    hf = HFSamModel(HFSamConfig(**config_kwargs)).eval()
    randomize_(hf, seed=99, logit_gain=4.0)
    size = hf.config.vision_config.image_size
    processor = _processor(size)
    hf.save_pretrained(tmp)
    processor.image_processor.save_pretrained(tmp)
    ours = SamModel.from_pretrained(tmp)
    pixels = processor(images=photo, return_tensors="pt")
    with torch.no_grad():
        embedding = hf.get_image_embeddings(pixels["pixel_values"])
    predictor = SamPredictor(ours)
    predictor.set_image(photo)
    # The same pixels reach both encoders (PIL bilinear resize, normalisation, bottom/right padding).
    resized = torch.as_tensor(predictor.transform.apply_image(photo)).permute(2, 0, 1)[None]
    assert (ours.preprocess(resized) - pixels["pixel_values"]).abs().max() < 1e-5
    return hf, processor, embedding, predictor


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory: pytest.TempPathFactory, photo: np.ndarray) -> tuple[Any, Any, Any, SamPredictor]:
    return _hf_pair(tmp_path_factory.mktemp("hf_small"), SMALL, photo)


@pytest.fixture(scope="module")
def vit_b_pair(tmp_path_factory: pytest.TempPathFactory, photo: np.ndarray) -> tuple[Any, Any, Any, SamPredictor]:
    return _hf_pair(tmp_path_factory.mktemp("hf_vit_b"), {}, photo)


PROMPTS: dict[str, dict[str, Any]] = {
    "one point": {"point_coords": [[300, 200]], "point_labels": [1]},
    "points +/-": {"point_coords": [[300, 200], [100, 50], [500, 300], [420, 120]], "point_labels": [1, 0, 1, 0]},
    "box": {"box": [100, 80, 450, 320]},
    "box and points": {"box": [100, 80, 450, 320], "point_coords": [[250, 200], [400, 100]], "point_labels": [1, 0]},
    "mask and point": {"point_coords": [[260, 180]], "point_labels": [1], "mask_input": "previous"},
}


def _hf_predict(hf: Any, processor: Any, embedding: Any, photo: np.ndarray, prompt: dict, multimask: bool) -> Any:
    kwargs: dict[str, Any] = {}
    if "point_coords" in prompt:
        kwargs["input_points"] = [[prompt["point_coords"].tolist()]]
        kwargs["input_labels"] = [[prompt["point_labels"].tolist()]]
    if "box" in prompt:
        kwargs["input_boxes"] = [[prompt["box"].tolist()]]
    inputs = processor(images=photo, return_tensors="pt", **kwargs)
    with torch.no_grad():
        out = hf(
            image_embeddings=embedding,
            input_points=inputs.get("input_points"),
            input_labels=inputs.get("input_labels"),
            input_boxes=inputs.get("input_boxes"),
            input_masks=None if "mask_input" not in prompt else torch.as_tensor(prompt["mask_input"])[None],
            multimask_output=multimask,
        )
    full = processor.post_process_masks(
        out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"], binarize=False
    )[0][0]
    return full.numpy(), out.iou_scores[0, 0].numpy(), out.pred_masks[0, 0].numpy()


def _check(pair: tuple[Any, Any, Any, SamPredictor], photo: np.ndarray, name: str, multimask: bool, tag: str) -> None:
    hf, processor, embedding, predictor = pair
    prompt: dict[str, Any] = {k: np.array(v) for k, v in PROMPTS[name].items() if k != "mask_input"}
    if "mask_input" in PROMPTS[name]:
        previous = predictor.predict(np.array([[300, 200]]), np.array([1]))
        prompt["mask_input"] = previous.low_res_logits[np.argmax(previous.iou_predictions)][None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_logits, ref_iou, ref_low = _hf_predict(hf, processor, embedding, photo, prompt, multimask)
    logits, iou, low = predictor.predict(**prompt, multimask_output=multimask, return_logits=True)
    masks = logits > 0  # the boolean path itself is tested in test_predictor.py
    assert logits.shape == ref_logits.shape and low.shape == ref_low.shape
    iou_diff, low_diff = np.abs(iou - ref_iou).max(), np.abs(low - ref_low).max()
    near = np.abs(ref_logits) < MASK_MARGIN
    ref_masks = ref_logits > 0
    print(
        f"\n[hf {tag}] {name:15s} multimask={multimask!s:5s} iou diff {iou_diff:.2g}  low-res logit diff {low_diff:.2g}"
        f"  mask flips {int((masks != ref_masks).sum())} (near-threshold px {int(near.sum())})"
    )
    assert iou_diff < IOU_TOL
    assert low_diff < LOGIT_TOL
    np.testing.assert_array_equal(masks[~near], ref_masks[~near])
    coverage = ref_masks.mean(axis=(1, 2))
    assert ((coverage > 0.01) & (coverage < 0.99)).any(), coverage


def test_small_config_is_read_from_the_directory(small_pair: tuple[Any, Any, Any, SamPredictor]) -> None:
    config = small_pair[3].model.config
    assert config.image_size == 512 and config.image_encoder.embed_dim == 96 and config.image_encoder.depth == 3
    assert config.image_encoder.global_attn_indexes == (2,) and config.image_encoder.window_size == 8
    assert config.mask_decoder.transformer_dim == 128 and config.prompt_encoder.mask_in_chans == 8
    # transformers' epsilons: the config's in the decoder blocks, hard-coded 1e-5 for the final norm.
    assert config.mask_decoder.layer_norm_eps == 1e-5 and config.image_encoder.layer_norm_eps == 1e-5


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("name", list(PROMPTS))
def test_small_hf_config_matches(
    small_pair: tuple[Any, Any, Any, SamPredictor], photo: np.ndarray, name: str, multimask: bool
) -> None:
    _check(small_pair, photo, name, multimask, "small")


@pytest.mark.slow
@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("name", list(PROMPTS))
def test_vit_b_matches(
    vit_b_pair: tuple[Any, Any, Any, SamPredictor], photo: np.ndarray, name: str, multimask: bool
) -> None:
    _check(vit_b_pair, photo, name, multimask, "vit_b")


@pytest.mark.slow
def test_vit_b_embeddings_match(vit_b_pair: tuple[Any, Any, Any, SamPredictor]) -> None:
    _, _, embedding, predictor = vit_b_pair
    diff = (predictor.get_image_embedding() - embedding).abs().max().item()
    print(f"\n[hf vit_b] image embedding max |diff| = {diff:.3g}")
    assert diff < 1e-3
