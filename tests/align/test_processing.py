"""Processor parity with transformers' AlignProcessor (PIL backend), in both checkpoint layouts.

input_ids, attention_mask and token_type_ids must be identical; pixel_values within 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from alignsam import AlignProcessor
from alignsam.align import AlignImageProcessor, AlignTokenizer
from alignsam.errors import ImageError, InputError

from .conftest import pil_rgb, write_hub_processor

AWKWARD = [
    "",
    "Café crème brûlée à la carte — naïve façade",
    "東京タワーの夜景と富士山",
    "데이터 과학 및 機械学習",
    "I ❤️ my 🐶 and 🐱!!! 🎉🎉",
    "see https://example.com/path?q=1&r=two#frag or www.test.org",
    "!!!???...,,,;;;:::---___***",
    "   leading and trailing   whitespace\t\n",
    "UPPER lower MiXeD CaSe",
    "[CLS] [SEP] [MASK] [PAD] literal specials",
    "tab\tseparated\tvalues and a zero-width\u200bspace and\u00a0nbsp",
    "word " * 80,  # longer than 64 tokens
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopic",
    "12345 3.14159 1,000,000 $100 50% #hashtag @mention",
]


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory):
    return write_hub_processor(tmp_path_factory.mktemp("hub"))


@pytest.fixture(scope="module")
def hf_processor(hub_dir):
    from transformers import AlignProcessor as HFAlignProcessor
    from transformers import BertTokenizer, EfficientNetImageProcessorPil

    image_processor = EfficientNetImageProcessorPil.from_pretrained(hub_dir)
    return HFAlignProcessor(image_processor=image_processor, tokenizer=BertTokenizer.from_pretrained(hub_dir))


@pytest.fixture(scope="module")
def v5_dir(hf_processor, tmp_path_factory):
    """The layout transformers 5 writes: processor_config.json, tokenizer.json, tokenizer_config.json."""
    out = tmp_path_factory.mktemp("v5")
    hf_processor.save_pretrained(out)
    assert (out / "processor_config.json").exists() and (out / "tokenizer.json").exists()
    assert not (out / "vocab.txt").exists() and not (out / "preprocessor_config.json").exists()
    return out


@pytest.mark.parametrize("layout", ["hub", "v5"])
@pytest.mark.parametrize("padding", ["max_length", "longest"])
def test_text_matches_transformers(hub_dir, v5_dir, hf_processor, layout, padding):
    ours = AlignProcessor.from_pretrained(hub_dir if layout == "hub" else v5_dir)
    a = ours(text=AWKWARD, padding=padding, return_tensors="pt")
    b = hf_processor(text=AWKWARD, padding=padding, truncation=True, max_length=64, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(a[key], b[key]), key
    assert a["input_ids"].shape[1] == 64  # the long text was truncated to 64 tokens, [SEP] kept
    assert a["input_ids"][AWKWARD.index("word " * 80), -1].item() == 102


def test_text_default_is_transformers_default(hub_dir, hf_processor):
    """Without arguments both pad to 64 (transformers' ALIGN default); only we also truncate."""
    short = AWKWARD[:11]
    a = AlignProcessor.from_pretrained(hub_dir)(text=short)
    b = hf_processor(text=short, return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"]) and a["input_ids"].shape == (11, 64)


@pytest.mark.parametrize("layout", ["hub", "v5"])
def test_images_match_transformers(hub_dir, v5_dir, hf_processor, photos, layout):
    ours = AlignProcessor.from_pretrained(hub_dir if layout == "hub" else v5_dir)
    pil = [pil_rgb(p) for p in photos]
    a = ours(images=pil, return_tensors="pt")["pixel_values"]
    b = hf_processor(images=pil, return_tensors="pt")["pixel_values"]
    assert a.shape == b.shape == (4, 3, 289, 289)
    assert (a - b).abs().max().item() <= 1e-5
    assert a.min() >= -1 and a.max() <= 1
    # file paths and numpy arrays give the same pixels as PIL images
    assert torch.equal(ours(images=[np.asarray(p) for p in pil])["pixel_values"], a)


def test_image_files_and_modes(tmp_path, photos):
    proc = AlignImageProcessor()
    rgb = Image.fromarray(photos[0])
    rgb.save(tmp_path / "a.png")
    rgb.convert("L").save(tmp_path / "gray.png")
    rgb.convert("RGBA").save(tmp_path / "rgba.png")
    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg")
    rgb.convert("P").save(tmp_path / "pal.png")
    Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257).save(tmp_path / "16bit.png")
    out = proc([tmp_path / n for n in ("a.png", "gray.png", "rgba.png", "cmyk.jpg", "pal.png", "16bit.png")])
    pixels = out["pixel_values"]
    assert pixels.shape == (6, 3, 289, 289) and torch.isfinite(pixels).all()
    assert torch.equal(pixels[0], proc(rgb)["pixel_values"][0])
    assert torch.equal(pixels[2], pixels[0])  # opaque RGBA is the RGB image
    assert torch.equal(pixels[1], pixels[5])  # 16-bit gray scaled to 8 bits is the 8-bit gray image


def test_exif_rotated_photo_is_upright(tmp_path):
    img = Image.new("RGB", (400, 200), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 200, 200))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise: blue half ends up on top
    img.save(tmp_path / "r.jpg", exif=exif)
    px = AlignImageProcessor()(tmp_path / "r.jpg")["pixel_values"][0]
    top, bottom = px[:, :100].mean((1, 2)), px[:, -100:].mean((1, 2))
    assert top[2] > top[0] and bottom[0] > bottom[2]


def test_bad_inputs(tmp_path, hub_dir):
    proc = AlignProcessor.from_pretrained(hub_dir)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "doc.png").write_text("hello")
    good = tmp_path / "good.jpg"
    Image.new("RGB", (50, 50)).save(good)
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:120])
    with pytest.raises(ImageError, match="empty"):
        proc(images=tmp_path / "empty.jpg")
    with pytest.raises(ImageError, match="not an image"):
        proc(images=str(tmp_path / "doc.png"))
    with pytest.raises(ImageError, match="corrupt or truncated"):
        proc(images=[good, tmp_path / "cut.jpg"])
    with pytest.raises(InputError, match="empty"):
        proc(text=[])
    with pytest.raises(InputError, match="empty"):
        proc(images=[])
    with pytest.raises(InputError, match="Pass text, images"):
        proc()
    with pytest.raises(InputError, match="strings"):
        proc(text=["ok", None])  # type: ignore[list-item]


def test_tokenizer_round_trip(tmp_path, hub_dir):
    tok = AlignTokenizer.from_pretrained(hub_dir)
    tok.save_pretrained(tmp_path / "t")
    again = AlignTokenizer.from_pretrained(tmp_path / "t")
    a = tok(AWKWARD, padding="longest")
    b = again(AWKWARD, padding="longest")
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert tok.decode(tok("a photo of a cat")["input_ids"][0].tolist()) == "a photo of a cat"
    assert len(tok) == 30522
