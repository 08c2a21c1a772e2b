"""`alignsam classify` with an InternImage classifier: its own classes, top-k with probabilities equal to the
model's softmax on the reference preprocessing, every kind of reference (short name through the hub cache,
our folder, an official .pth), the zero-shot options refused, and one-line errors for files that do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alignsam.errors import CheckpointError
from alignsam.internimage import InternImage, InternImageProcessor
from alignsam.internimage.convert import internimage_to_hf
from alignsam.io.weights import save_safetensors
from alignsam.tools.imagenet import ImageClassifier, model_family
from tests.internimage.helpers import random_model, tiny_config
from tests.tools.test_align_commands import run_cli

KINDS = [f"kind {i}" for i in range(10)]


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch):
    monkeypatch.setenv("ALIGNSAM_CACHE", "off")


@pytest.fixture(scope="module")
def tiny() -> InternImage:
    return random_model(tiny_config(image_size=64), seed=4)  # a seed whose top classes differ between images


@pytest.fixture(scope="module")
def tiny_dir(tiny, tmp_path_factory) -> Path:
    """Our folder, with the class names in its config.json."""
    return tiny.save_pretrained(tmp_path_factory.mktemp("tiny-internimage"), labels=KINDS)


def _expected(model: InternImage, path: Path, size: int | None = None) -> torch.Tensor:
    pixels = InternImageProcessor(size or model.config.image_size)([path])
    with torch.no_grad():
        return model(pixels).softmax(-1)[0]


def test_classify_gives_the_models_own_classes(capsys, tiny, tiny_dir, image_folder):
    code, out, _ = run_cli(capsys, "classify", str(image_folder), "--model", str(tiny_dir), "--top-k", "3", "-q")
    assert code == 0
    # the zero-shot layout, unreadable files reported and skipped
    assert set(out) == {"predictions", "errors", "num_images", "num_errors", "labels", "ignored_files", "model"}
    assert out["num_images"] == 6 and out["num_errors"] == 3 and out["labels"] == 10
    assert {Path(e["image"]).name for e in out["errors"]} == {"empty.jpg", "notes.jpg", "truncated.jpg"}
    tops = set()
    for pred in out["predictions"]:
        probs = _expected(tiny, Path(pred["image"]))
        best = probs.topk(3)
        assert pred["labels"] == [KINDS[i] for i in best.indices.tolist()] and pred["label"] == pred["labels"][0]
        assert pred["scores"] == pytest.approx(best.values.tolist(), abs=1e-5)
        tops.add(pred["label"])
    assert len(tops) > 1  # the classes differ between images: the check above can fail


def test_short_name_through_the_hub_cache_gets_imagenet_labels(capsys, monkeypatch, image_folder, tmp_path):
    """`--model internimage-t` is OpenGVLab/internimage_t_1k_224 (Hugging Face layout), read from the cache;
    a 1000-class model without stored names gets ImageNet-1k's."""
    model = random_model(tiny_config(image_size=64, num_classes=1000), seed=2)
    snapshot = tmp_path / "hub" / "models--OpenGVLab--internimage_t_1k_224" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    config = {**model.config.to_dict(), "model_type": "internimage", "core_op": "DCNv3"}
    (snapshot / "config.json").write_text(json.dumps(config))
    (snapshot / "preprocessor_config.json").write_text(json.dumps({"crop_size": 64, "size": 64}))
    save_safetensors(internimage_to_hf(model.state_dict()), snapshot / "model.safetensors")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    photo = image_folder / "photo_0.jpg"
    code, out, _ = run_cli(capsys, "classify", str(photo), "--model", "internimage-t", "--top-k", "2", "-q")
    assert code == 0 and out["labels"] == 1000 and out["model"] == "internimage-t"
    from alignsam.internimage import imagenet_labels

    best = _expected(model, photo).topk(2)
    assert out["predictions"][0]["labels"] == [imagenet_labels()[i] for i in best.indices.tolist()]


def test_official_pth(capsys, tiny, image_folder, tmp_path):
    path = tmp_path / "internimage_tiny.pth"
    torch.save({"model": tiny.state_dict(), "epoch": 1}, path)
    photo = str(image_folder / "photo_1.jpg")
    code, out, _ = run_cli(capsys, "classify", photo, "--model", str(path), "-q")
    assert code == 0 and out["labels"] == 10
    best = _expected(tiny, Path(photo), size=224).argmax()  # no shape tells the image size: 224 by default
    assert out["predictions"][0]["label"] == f"class {int(best)}"  # no names stored: numbered classes


def test_zero_shot_options_are_usage_errors(capsys, tiny_dir, image_folder):
    for extra in (["--labels", "cat", "dog"], ["--templates", "imagenet"]):
        code, out, err = run_cli(capsys, "classify", str(image_folder), "--model", str(tiny_dir), *extra)
        assert code == 2 and out is None
        assert f"{extra[0]}: '{tiny_dir}' is an InternImage classifier" in err and len(err.splitlines()) == 1


def test_checkpoints_that_do_not_fit_fail_in_one_line(capsys, tiny, image_folder, tmp_path):
    photo = str(image_folder / "photo_0.jpg")
    other = tmp_path / "sam.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1)}, other)
    code, _, err = run_cli(capsys, "classify", photo, "--model", str(other))
    assert code == 1 and "Not an InternImage checkpoint" in err and "ALIGN model" in err
    assert len(err.strip().splitlines()) == 1
    full = tmp_path / "full.pth"
    torch.save({"model": tiny.state_dict()}, full)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    code, _, err = run_cli(capsys, "classify", photo, "--model", str(cut))
    assert code == 1 and "truncated" in err and len(err.strip().splitlines()) == 1
    h = tmp_path / "h.pth"
    torch.save({"model": {**tiny.state_dict(), "levels.0.blocks.0.res_post_norm1.0.weight": torch.ones(16)}}, h)
    code, _, err = run_cli(capsys, "classify", photo, "--model", str(h))
    assert code == 1 and "InternImage-H/G" in err and "supported: InternImage-T, -S, -B, -L and -XL" in err


def test_model_family(tiny_dir, tiny_align_dir, tmp_path):
    assert model_family(tiny_dir) == "internimage"
    assert model_family(tiny_align_dir) == "align"
    assert model_family("internimage-xl") == "internimage" and model_family("OpenGVLab/internimage_b_1k_224") == (
        "internimage"
    )
    assert model_family("demo") == "align" and model_family("kakaobrain/align-base") == "align"


def test_python_api(tiny, tiny_dir, tmp_path):
    classifier = ImageClassifier.from_pretrained(tiny_dir, batch_size=2, workers=1)
    assert classifier.labels == KINDS
    images = [Image.fromarray(np.full((40, 50, 3), v, np.uint8)) for v in (10, 120, 240)]
    result = classifier.classify([*images, tmp_path / "missing.jpg"], top_k=10)
    assert [p.image for p in result.predictions] == ["#0", "#1", "#2"] and result.errors[0]["image"].endswith(
        "missing.jpg"
    )
    pixels = classifier.processor(images)
    with torch.no_grad():
        probs = tiny(pixels).softmax(-1)
    assert torch.allclose(result.probabilities, probs, atol=1e-5)
    with pytest.raises(CheckpointError, match="no classification layer"):
        ImageClassifier(InternImage(tiny_config(num_classes=0)), [])
