"""Reading images, weight files and model references."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from alignsam.errors import CheckpointError, ImageError, ModelNotFoundError
from alignsam.io import (
    build_on_meta,
    load_image,
    load_image_array,
    load_state_dict,
    load_weights_into,
    resolve_file,
    save_safetensors,
)
from alignsam.io.hub import looks_like_hub_id, resolve_first

# --- images ---------------------------------------------------------------------------------------------


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_rgb_path_and_array_agree(tmp_path, sample_photo):
    path = _save(Image.fromarray(sample_photo), tmp_path / "a.png")
    assert np.array_equal(load_image_array(path), sample_photo)
    assert np.array_equal(load_image_array(sample_photo), sample_photo)
    assert np.array_equal(np.asarray(load_image(path.read_bytes())), sample_photo)


def test_modes_become_rgb(tmp_path, sample_photo):
    rgb = Image.fromarray(sample_photo)
    gray = rgb.convert("L")
    cases = {
        "gray.png": gray,
        "palette.png": rgb.convert("P"),
        "cmyk.jpg": rgb.convert("CMYK"),
        "rgba.png": rgb.convert("RGBA"),
        "la.png": gray.convert("LA"),
    }
    for name, img in cases.items():
        out = load_image(_save(img, tmp_path / name))
        assert out.mode == "RGB" and out.size == rgb.size, name
    g = load_image_array(tmp_path / "gray.png")
    assert np.array_equal(g[..., 0], np.asarray(gray)) and np.array_equal(g[..., 0], g[..., 2])


def test_transparency_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    rgba[0, 0] = (10, 20, 30, 255)  # one opaque pixel
    out = load_image_array(rgba)
    assert tuple(out[0, 0]) == (10, 20, 30)
    assert (out[1:, 1:] == 255).all()
    pal = Image.new("P", (3, 3), 0)
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.info["transparency"] = 0
    buf = io.BytesIO()
    pal.save(buf, format="PNG", transparency=0)
    out = load_image_array(buf.getvalue())
    assert tuple(out[1, 1]) == (200, 100, 50) and tuple(out[0, 0]) == (255, 255, 255)


def test_sixteen_bit(tmp_path):
    arr16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    path = tmp_path / "16.png"
    Image.fromarray(arr16).save(path)
    out = load_image_array(path)
    expect = np.rint(arr16 / 257.0).astype(np.uint8)
    assert np.array_equal(out[..., 0], expect)
    assert np.array_equal(load_image_array(arr16)[..., 1], expect)


def test_float_and_bool_arrays():
    f = np.full((2, 2, 3), 0.5, np.float32)
    assert (load_image_array(f) == 128).all()
    b = np.eye(3, dtype=bool)
    assert load_image_array(b)[0, 0, 0] == 255 and load_image_array(b)[0, 1, 0] == 0
    with pytest.raises(ImageError, match="NaN"):
        load_image_array(np.full((2, 2), np.nan))


def test_exif_rotation(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif)
    assert load_image(path).size == (20, 40)


def test_bad_images(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(empty)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image at all")
    with pytest.raises(ImageError, match="not an image"):
        load_image(text)
    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(truncated)
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="shape"):
        load_image_array(np.zeros((3, 4, 5, 6), np.uint8))
    with pytest.raises(ImageError, match="Cannot read"):
        load_image(12345)  # type: ignore[arg-type]


def test_size_limit(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(path)
    with pytest.raises(ImageError, match="megapixels"):
        load_image(path, max_pixels=50_000)
    assert load_image(path, max_pixels=None).size == (300, 200)


# --- weights --------------------------------------------------------------------------------------------


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)


def test_load_into_meta_model(tmp_path):
    ref = Tiny()
    save_safetensors(ref.state_dict(), tmp_path / "w.safetensors")
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        model = build_on_meta(Tiny)
        assert model.lin.weight.is_meta
        load_weights_into(model, load_state_dict(tmp_path / name))
        assert torch.equal(model.lin.weight, ref.lin.weight)
        assert torch.equal(model.bn.num_batches_tracked, ref.bn.num_batches_tracked)


def test_key_errors_name_keys(tmp_path):
    sd = Tiny().state_dict()
    missing = {k: v for k, v in sd.items() if k != "lin.bias"}
    with pytest.raises(CheckpointError, match=r"1 missing: lin\.bias"):
        load_weights_into(build_on_meta(Tiny), missing)
    extra = {**sd, "head.weight": torch.zeros(1), "embeddings.position_ids": torch.arange(3)}
    with pytest.raises(CheckpointError, match=r"unexpected: embeddings\.position_ids, head\.weight"):
        load_weights_into(build_on_meta(Tiny), extra)
    with pytest.raises(CheckpointError, match=r"unexpected: head\.weight"):
        load_weights_into(build_on_meta(Tiny), extra, ignore_unexpected=[r"position_ids$"])
    bad = {**sd, "lin.weight": torch.zeros(5, 5)}
    with pytest.raises(CheckpointError, match=r"wrong shape: lin\.weight \(5, 5\) \(model \(2, 3\)\)"):
        load_weights_into(build_on_meta(Tiny), bad)


def test_checkpoint_files_bad_and_wrapped(tmp_path):
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_state_dict(tmp_path / "empty.bin")
    (tmp_path / "junk.pth").write_bytes(b"\x00junk" * 10)
    with pytest.raises(CheckpointError, match=r"junk\.pth' is not a PyTorch weights file"):
        load_state_dict(tmp_path / "junk.pth")
    (tmp_path / "config.pth").write_text('{"model_type": "sam"}')  # a JSON file passed as the checkpoint
    with pytest.raises(CheckpointError, match=r"neither torch\.save's zip archive nor a pickle"):
        load_state_dict(tmp_path / "config.pth")
    torch.save(Tiny().state_dict(), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])  # an interrupted download
    with pytest.raises(CheckpointError, match="could not be read as a PyTorch weights file") as caught:
        load_state_dict(tmp_path / "cut.pth")
    assert "\n" not in str(caught.value) and "weights_only=False" not in str(caught.value)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00junk" * 10)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_state_dict(tmp_path / "junk.safetensors")
    sd = Tiny().state_dict()
    torch.save({"model": sd, "epoch": 3}, tmp_path / "wrapped.pth")
    assert set(load_state_dict(tmp_path / "wrapped.pth")) == set(sd)


def test_pickled_code_is_refused(tmp_path):
    torch.save({"w": torch.zeros(1), "obj": Tiny()}, tmp_path / "code.pth")
    with pytest.raises(CheckpointError, match="refused"):
        load_state_dict(tmp_path / "code.pth")


# --- model references -----------------------------------------------------------------------------------


def test_hub_id_shapes():
    assert looks_like_hub_id("kakaobrain/align-base")
    assert looks_like_hub_id("gpt2")
    assert not looks_like_hub_id("./models/x")
    assert not looks_like_hub_id("sam_vit_b_01ec64.pth")
    assert not looks_like_hub_id("/abs/path")


def test_local_resolution(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    assert resolve_first(tmp_path, ["model.safetensors", "pytorch_model.bin"]) == tmp_path / "model.safetensors"
    assert resolve_file(tmp_path, "config.json", required=False) is None
    with pytest.raises(ModelNotFoundError, match="holds none"):
        resolve_file(tmp_path, "config.json")
    with pytest.raises(ModelNotFoundError, match="No such file"):
        resolve_file(tmp_path / "nope", "config.json")


def test_offline_and_uncached_is_one_clear_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError) as info:
        resolve_file("someone/not-cached-model", "config.json", cache_dir=tmp_path)
    msg = str(info.value)
    assert "someone/not-cached-model" in msg and "hf download" in msg and "local folder" in msg
    assert msg.count(". ") == 0  # one sentence


def test_recommended_settings_read_folders_and_the_hub_cache_never_the_network(tmp_path, monkeypatch):
    import json

    from alignsam.io import hub, resolve

    (tmp_path / "regions.json").write_text(json.dumps({"context": 3.0, "other": 1}))
    (tmp_path / "x.pth").write_bytes(b"")

    def settings(ref):
        return resolve.recommended(ref, "align", "regions.json", {"context"})

    assert settings(tmp_path) == {"context": 3.0}
    assert resolve.recommended(tmp_path, "align", "amg.json", {"context"}) == {}  # no such file: nothing
    assert settings(tmp_path / "x.pth") == {}  # a weights file given directly has no folder of settings
    assert settings(tmp_path / "missing" / "x.pth") == {}  # does not resolve: the loader reports it
    assert settings("demo") == {
        "context": 3.0,
    }  # the bundled demo ALIGN's own file

    def no_network(*args, **kwargs):
        raise AssertionError("an optional settings file must not be downloaded")

    monkeypatch.setattr(hub, "_download", no_network)
    monkeypatch.setattr(hub, "_hub_unreachable_reason", lambda: None)  # as if the hub were reachable
    cached = {("org/model", "regions.json"): tmp_path / "regions.json"}
    monkeypatch.setattr(resolve, "from_cache", lambda repo, name, revision, cache_dir: cached.get((repo, name)))
    assert settings("org/model") == {"context": 3.0}
    assert settings("org/other") == {}


def test_output_files_are_checked_early_and_written_whole(tmp_path, monkeypatch):
    from alignsam.errors import OutputError
    from alignsam.io.files import check_output_file, write_text_atomic

    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path)
    nested = tmp_path / "a" / "b" / "result.json"
    assert check_output_file(nested) == nested and nested.parent.is_dir() and not nested.exists()
    blocker = tmp_path / "plain.txt"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="Cannot create the folder"):
        check_output_file(blocker / "result.json")  # its parent would be a file
    write_text_atomic(nested, "old")

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("alignsam.io.files.os.replace", fail)
    with pytest.raises(OutputError, match="No space left"):
        write_text_atomic(nested, "new")
    assert nested.read_text() == "old" and sorted(p.name for p in nested.parent.iterdir()) == ["result.json"]


def test_rle_bbox_equals_the_masks_extent():
    from alignsam.io.rle import encode_uncompressed_rle, rle_bbox

    rng = np.random.default_rng(3)
    cases = [np.zeros((7, 9), bool), np.ones((5, 4), bool)]
    for _ in range(200):
        mask = np.zeros(tuple(rng.integers(1, 12, 2)), bool)
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, mask.shape[0]), rng.integers(0, mask.shape[1])
            mask[y : y + rng.integers(1, 6), x : x + rng.integers(1, 6)] = True
        cases.append(mask)
    for mask in cases:
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        want = [0, 0, 0, 0] if cols.size == 0 else [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
        assert rle_bbox(encode_uncompressed_rle(mask)) == [int(v) for v in want], mask
