"""The onnxruntime backend: `SamPredictor` and `Encoder` give what the PyTorch backend gives, the exports are
cached by the weights' fingerprint, and the service and the command line take `--backend onnxruntime`.

Tolerances: masks' logits (full size, after the predictor's post-processing in PyTorch) and IoU predictions
within 1e-4; ALIGN embeddings within 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from alignsam.errors import InputError
from alignsam.export import runtime
from alignsam.fast import FastPath
from alignsam.sam import SamModel, SamPredictor
from alignsam.synthetic import SceneGenerator
from alignsam.tools import Encoder
from tests.export.conftest import landscape

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def predictors(demo_sam: SamModel, held_out: SceneGenerator) -> tuple[SamPredictor, SamPredictor]:
    ours, theirs = SamPredictor(demo_sam), SamPredictor(demo_sam, backend="onnxruntime")
    images = [held_out[5].image, landscape(held_out[6].image)]
    for predictor in (ours, theirs):
        predictor.set_images(images)
    return ours, theirs


PROMPTS = {
    "one click": {"point_coords": [[60, 50]], "point_labels": [1]},
    "clicks": {"point_coords": [[60, 50], [20, 100], [90, 30]], "point_labels": [1, 0, 1], "multimask_output": False},
    "box": {"box": [10, 20, 90, 110]},
    "box and click": {"box": [10, 20, 90, 110], "point_coords": [[50, 60]], "point_labels": [0]},
    "mask": {"mask_input": "previous"},
    "click and mask": {"point_coords": [[60, 50]], "point_labels": [1], "mask_input": "previous"},
    "three boxes": {"box": [[10, 20, 90, 110], [0, 0, 40, 40], [50, 50, 120, 120]], "multimask_output": False},
}


@pytest.mark.parametrize("name", list(PROMPTS))
def test_predictor_on_onnxruntime_gives_the_same_masks(
    name: str, predictors: tuple[SamPredictor, SamPredictor]
) -> None:
    ours, theirs = predictors
    prompt = dict(PROMPTS[name])
    if prompt.get("mask_input") == "previous":
        previous = ours.predict(point_coords=np.array([[40, 40]]), point_labels=np.array([1]), multimask_output=False)
        prompt["mask_input"] = previous.low_res_logits
    for image_index in (0, 1):
        expected = ours.predict(**prompt, return_logits=True, image_index=image_index)
        got = theirs.predict(**prompt, return_logits=True, image_index=image_index)
        assert got.masks.shape == expected.masks.shape
        assert np.abs(got.iou_predictions - expected.iou_predictions).max() <= TOLERANCE
        assert np.abs(got.low_res_logits - expected.low_res_logits).max() <= TOLERANCE
        assert np.abs(got.masks - expected.masks).max() <= TOLERANCE
        assert np.mean((got.masks > 0) != (expected.masks > 0)) <= 1e-4
    assert expected.masks.std() > 1.0  # real logits, not a constant both sides agree on


def test_predict_batch_on_onnxruntime(predictors: tuple[SamPredictor, SamPredictor]) -> None:
    """Prompts on two images in one call: one decoder run per image's prompt set."""
    ours, theirs = predictors
    prompts = [{"point_coords": np.array([[60, 50]]), "point_labels": np.array([1])}] * 2
    for expected, got in zip(ours.predict_batch(prompts), theirs.predict_batch(prompts), strict=True):
        assert expected is not None and got is not None
        assert np.array_equal(expected.masks, got.masks)
        assert np.abs(expected.iou_predictions - got.iou_predictions).max() <= TOLERANCE


def test_encoder_on_onnxruntime_gives_the_same_embeddings(held_out: SceneGenerator) -> None:
    ours, theirs = Encoder.from_pretrained("demo"), Encoder.from_pretrained("demo", backend="onnxruntime")
    assert isinstance(theirs.towers, runtime.OnnxAlignTowers) and theirs.towers is not theirs.model
    texts = ["a red circle", "two blue stars", "a green square on a striped background", "a dog"] * 3
    expected = ours.encode_texts(texts)
    assert float((theirs.encode_texts(texts) - expected).abs().max()) <= TOLERANCE
    images = [held_out[i].image for i in range(5)]
    got = theirs.encode_images(images).embeds
    assert float((got - ours.encode_images(images).embeds).abs().max()) <= TOLERANCE
    cos = got @ got.T
    assert float(cos[~torch.eye(5, dtype=torch.bool)].min()) < 0.8  # images the model tells apart
    assert float((theirs.classifier(["red circle", "blue star"]) - ours.classifier(["red circle", "blue star"]))
                 .abs().max()) <= TOLERANCE  # fmt: skip


def test_exports_are_cached_by_fingerprint(
    demo_sam: SamModel, onnx_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SamPredictor(demo_sam, backend="onnxruntime")  # exported once (here or by an earlier test)
    files = sorted(onnx_cache.glob("onnx/sam-decoder-*/sam-decoder.onnx"))
    assert files

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(runtime, "to_onnx", no_export)
    SamPredictor(demo_sam, backend="onnxruntime")  # from the cache
    changed = SamModel.from_config(demo_sam.config)
    changed.load_state_dict(demo_sam.state_dict())
    with torch.no_grad():
        changed.mask_decoder.iou_token.weight.add_(1e-3)  # a fine-tuning step
    before = runtime.fingerprint(demo_sam.mask_decoder)
    assert runtime.fingerprint(changed.mask_decoder) != before
    with pytest.raises(AssertionError, match="exported again"):
        SamPredictor(changed, backend="onnxruntime")


def test_backend_errors(demo_sam: SamModel) -> None:
    with pytest.raises(InputError, match="backend must be one of"):
        SamPredictor(demo_sam, backend="tensorrt")
    with pytest.raises(InputError, match="bf16"):
        Encoder.from_pretrained("demo", backend="onnxruntime", fast=FastPath(precision="bf16"))


def same_annotations(expected: list[dict], got: list[dict]) -> None:
    """SA-1B records of the same masks: areas within 2 pixels, predicted IoUs within the tolerance."""
    assert len(expected) == len(got) > 0 and any(a["area"] > 0 for a in expected)
    for a, b in zip(expected, got, strict=True):
        assert abs(a["area"] - b["area"]) <= 2 and abs(a["predicted_iou"] - b["predicted_iou"]) <= TOLERANCE


def test_service_segments_on_onnxruntime(held_out: SceneGenerator) -> None:
    import base64
    import io

    from PIL import Image

    from alignsam.serve.config import ServeConfig
    from alignsam.serve.service import Service

    buffer = io.BytesIO()
    Image.fromarray(held_out[7].image).save(buffer, format="PNG")
    body = {"image": base64.b64encode(buffer.getvalue()).decode(), "points": [[60, 50]], "boxes": [[10, 10, 90, 90]]}
    results = {}
    for backend in ("torch", "onnxruntime"):
        service = Service(config=ServeConfig(model="demo", sam_model="demo", backend=backend))
        assert service.health()["backend"] == backend
        results[backend] = service.handle("/segment", body)
    same_annotations(results["torch"]["annotations"], results["onnxruntime"]["annotations"])


def test_segment_command_on_onnxruntime(
    held_out: SceneGenerator, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import json

    from PIL import Image

    from alignsam.cli import main

    image = tmp_path / "scene.png"
    Image.fromarray(held_out[8].image).save(image)
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        assert main(["segment", str(image), "--sam-model", "demo", "--point", "60,50", "--backend", backend]) == 0
        outputs[backend] = json.loads(capsys.readouterr().out)
    same_annotations(outputs["torch"]["annotations"], outputs["onnxruntime"]["annotations"])
