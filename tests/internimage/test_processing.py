"""InternImage's evaluation preprocessing (short side to the image size, centre crop, ImageNet
normalisation) and its class names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alignsam.errors import CheckpointError, ImageError, InputError
from alignsam.internimage import InternImageProcessor, imagenet_labels, internimage_l, labels_for, read_labels

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _photo(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(width * 1000 + height)
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) * 127 / (width + height)], -1)
    noisy = smooth + rng.normal(0, 20, smooth.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


@pytest.mark.parametrize(
    ("size", "resized", "box"),
    [
        # torchvision's Resize(224): the short side to 224, the long side int(224 * long / short)
        ((300, 200), (336, 224), (56, 0)),
        # CenterCrop's offset int(round(115 / 2)) = 58 (Python rounds half to even), not 115 // 2 = 57
        ((303, 200), (339, 224), (58, 0)),
        ((200, 301), (224, 337), (0, 56)),
        ((100, 50), (448, 224), (112, 0)),  # small images are enlarged
        ((224, 224), (224, 224), (0, 0)),  # already the size: not resampled
    ],
)
def test_short_side_resize_and_centre_crop(size, resized, box) -> None:
    image = _photo(*size)
    out = InternImageProcessor(224).preprocess(image)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    scaled = image if resized == size else image.resize(resized, Image.Resampling.BICUBIC)
    left, top = box
    crop = np.asarray(scaled)[top : top + 224, left : left + 224].astype(np.float32) / 255
    expected = ((crop - MEAN) / STD).transpose(2, 0, 1)
    assert np.abs(out - expected).max() < 1e-6


def test_batches_inputs_of_every_kind(tmp_path: Path) -> None:
    image = _photo(320, 240)
    path = tmp_path / "photo.png"
    image.save(path)
    processor = InternImageProcessor.for_config(internimage_l())
    assert processor.image_size == 384
    batch = processor([path, image, np.asarray(image), path.read_bytes()])
    assert isinstance(batch, torch.Tensor) and batch.shape == (4, 3, 384, 384) and batch.dtype == torch.float32
    assert torch.equal(batch[0], batch[1]) and torch.equal(batch[1], batch[2]) and torch.equal(batch[2], batch[3])
    assert processor(image).shape == (1, 3, 384, 384)
    # a mid-grey image lands near zero after the ImageNet normalisation
    grey = processor(Image.new("RGB", (50, 50), (124, 116, 104)))
    assert grey.abs().max() < 0.01


def test_bad_inputs_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="No images"):
        InternImageProcessor()([])
    with pytest.raises(InputError, match="image_size"):
        InternImageProcessor(0)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(ImageError):
        InternImageProcessor()(broken)


def test_imagenet_labels() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels[:3] == ["tench", "goldfish", "great white shark"] and labels[-1] == "toilet tissue"
    assert labels[207] == "golden retriever" and labels[281] == "tabby"
    assert labels_for(None, 1000) == labels
    assert labels_for(None, 3) == ["class 0", "class 1", "class 2"]


def test_labels_stored_with_a_checkpoint(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "internimage", "id2label": {"1": "dog", "0": "cat"}}))
    assert read_labels(hf) == ["cat", "dog"]
    (hf / "weights.pth").write_bytes(b"")
    assert read_labels(hf / "weights.pth") == ["cat", "dog"]  # a weights file: its folder's config
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "labels.txt").write_text("red\n\ngreen\nblue\n")
    assert labels_for(plain, 3) == ["red", "green", "blue"]
    assert read_labels(tmp_path / "nothing-here") is None  # a missing folder is not a label source
    with pytest.raises(CheckpointError, match="stores 3 class names for a model with 1000"):
        labels_for(plain, 1000)
    (hf / "config.json").write_text(json.dumps({"id2label": {"0": "cat", "2": "dog"}}))
    with pytest.raises(CheckpointError, match="does not number its classes"):
        read_labels(hf)
