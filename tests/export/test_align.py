"""ALIGN's exported towers on ONNX Runtime against our PyTorch model, and a caller without alignsam.

The bundled demo ALIGN is trained, so its embeddings of different inputs are far apart (random EfficientNets
give nearly the same vector for every image, and any export would look exact); each test checks the spread
of the cosines (measured: lowest cosine -0.21 between images, -0.15 between texts). Tolerance: normalised
and raw embeddings within 1e-4 (measured: 1.3e-7 images, 1e-7 texts).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from alignsam.align import AlignModel, AlignProcessor
from alignsam.synthetic import SceneConfig, SceneGenerator
from tests.export.conftest import ort_session

TOLERANCE = 1e-4
TEXTS = [
    "a red circle",
    "two blue stars and a green square on a striped background",
    "a photo of a dog",
    "yellow triangle",
    "a small purple hexagon next to a large orange circle, seen from above on a plain background",
]


@pytest.fixture(scope="module")
def demo_align() -> tuple[AlignModel, AlignProcessor]:
    return AlignModel.from_pretrained("demo"), AlignProcessor.from_pretrained("demo")


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    scenes = SceneGenerator(SceneConfig(image_size=96), seed=4)
    return [scenes[i].image for i in range(6)]


def spread(embeds: np.ndarray) -> float:
    """The smallest cosine between two different rows: far below 1 for inputs the model tells apart."""
    normed = embeds / np.linalg.norm(embeds, axis=1, keepdims=True)
    cos = normed @ normed.T
    return float(cos[~np.eye(len(cos), dtype=bool)].min())


def test_image_tower_matches_pytorch(
    demo_align: tuple[AlignModel, AlignProcessor], images: list[np.ndarray], exported: Callable[..., Path]
) -> None:
    model, processor = demo_align
    session = ort_session(exported("align-image", model, processor=processor))
    pixels = processor(images=images, return_tensors="np")["pixel_values"]
    for batch in (pixels[:1], pixels):
        normed, raw = session.run(["image_embeds", "image_features"], {"pixel_values": batch})
        with torch.no_grad():
            expected_raw = model.get_image_features(torch.from_numpy(batch)).numpy()
            expected = model.encode_image(torch.from_numpy(batch), normalize=True).numpy()
        assert np.abs(normed - expected).max() <= TOLERANCE
        assert np.abs(raw - expected_raw).max() <= TOLERANCE * max(1.0, float(np.abs(expected_raw).max()))
    assert spread(expected) < 0.8, spread(expected)
    assert np.allclose(np.linalg.norm(normed, axis=1), 1.0, atol=1e-5)


def test_text_tower_matches_pytorch(
    demo_align: tuple[AlignModel, AlignProcessor], exported: Callable[..., Path]
) -> None:
    model, processor = demo_align
    session = ort_session(exported("align-text", model, processor=processor))
    for padding in ("longest", "max_length"):  # dynamic sequence length: 20-odd tokens, or 64
        tokens = processor.tokenizer(TEXTS, padding=padding, return_tensors="np")
        normed, raw = session.run(["text_embeds", "text_features"], dict(tokens))
        with torch.no_grad():
            ids, mask = torch.from_numpy(tokens["input_ids"]), torch.from_numpy(tokens["attention_mask"])
            expected = model.encode_text(ids, mask, normalize=True).numpy()
            expected_raw = model.get_text_features(ids, mask).numpy()
        assert np.abs(normed - expected).max() <= TOLERANCE
        assert np.abs(raw - expected_raw).max() <= TOLERANCE * max(1.0, float(np.abs(expected_raw).max()))
    assert spread(expected) < 0.5, spread(expected)
    (one,) = session.run(["text_embeds"], {k: v[:1] for k, v in tokens.items()})  # batch of one
    assert np.abs(one - expected[:1]).max() <= TOLERANCE


# ---------------------------------------------------------------------------------------------------------
# A caller with numpy, PIL, tokenizers and onnxruntime only: the files beside the models are enough.


def _pixels(image: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
    from PIL import Image

    size, crop = settings["size"], settings["crop_size"]
    pil = Image.fromarray(image).resize((size["width"], size["height"]), resample=settings["resample"])
    arr = np.asarray(pil)
    top, left = (arr.shape[0] - crop["height"]) // 2, (arr.shape[1] - crop["width"]) // 2
    arr = arr[top : top + crop["height"], left : left + crop["width"]].astype(np.float32)
    arr = arr * np.float32(settings["rescale_factor"]) - np.float32(1.0 if settings["rescale_offset"] else 0.0)
    return arr.transpose(2, 0, 1)


def _tokens(folder: Path, texts: list[str], description: dict[str, Any]) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    text = description["models"]["align-text.onnx"]["preprocessing"]
    tokenizer = Tokenizer.from_file(str(folder / text["tokenizer"]))
    tokenizer.enable_truncation(text["max_length"])
    ids = [e.ids for e in tokenizer.encode_batch(texts)]
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), text["pad_token_id"], np.int64)
    mask = np.zeros_like(input_ids)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}


def test_a_caller_without_alignsam_gets_the_same_embeddings(images: list[np.ndarray], tmp_path: Path) -> None:
    from alignsam.export import to_onnx
    from alignsam.tools import Encoder

    to_onnx("align-image", "demo", tmp_path)
    to_onnx("align-text", "demo", tmp_path)  # the same folder: alignsam_onnx.json describes both models
    description = json.loads((tmp_path / "alignsam_onnx.json").read_text())
    assert set(description["models"]) == {"align-image.onnx", "align-text.onnx"}
    settings = json.loads((tmp_path / "preprocessor_config.json").read_text())

    pixels = np.stack([_pixels(image, settings) for image in images])
    (image_embeds,) = ort_session(tmp_path / "align-image.onnx").run(["image_embeds"], {"pixel_values": pixels})
    (text_embeds,) = ort_session(tmp_path / "align-text.onnx").run(
        ["text_embeds"], _tokens(tmp_path, TEXTS, description)
    )

    encoder = Encoder.from_pretrained("demo")
    assert np.abs(image_embeds - encoder.encode_images(images).embeds.numpy()).max() <= TOLERANCE
    assert np.abs(text_embeds - encoder.encode_texts(TEXTS).numpy()).max() <= TOLERANCE
    assert spread(image_embeds) < 0.8 and spread(text_embeds) < 0.5
