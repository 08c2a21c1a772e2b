"""Malformed inputs for the fuzz suite: images, texts, prompts, options, checkpoints and configs.

Every generator is deterministic for a seed and small enough to write in a second. Each item is a pair
(name, payload) whose name says what is wrong with it; the tests check that every one ends in a result or in
one `AlignSamError` line naming the problem.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# --- images -----------------------------------------------------------------------------------------------


def _png(image: Image.Image, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def _encode(image: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares `width x height` with one row of data (a decompression-bomb probe)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def images(seed: int = 0) -> list[tuple[str, bytes]]:
    """Image files, as (file name, bytes): broken ones and odd but valid ones."""
    rng = np.random.default_rng(seed)
    photo = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    good_png, good_jpg = _png(photo), _encode(photo, "JPEG", quality=90)
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    sixteen = Image.fromarray((rng.integers(0, 65535, (20, 30))).astype(np.uint16))
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "green", "blue")]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    return [
        ("empty.png", b""),
        ("truncated.png", good_png[: len(good_png) // 2]),
        ("truncated.jpg", good_jpg[: len(good_jpg) // 3]),
        ("header_only.png", good_png[:33]),
        ("random.png", rng.integers(0, 256, 2048, dtype=np.uint8).tobytes()),
        ("random.jpg", b"\xff\xd8\xff" + rng.integers(0, 256, 2048, dtype=np.uint8).tobytes()),
        ("text.png", b"this is not an image\n" * 10),
        ("huge_declared.png", _png_declaring(200_000, 200_000)),
        ("zero_width.png", _png_declaring(0, 10)),
        ("png_named.jpg", good_png),
        ("jpg_named.png", good_jpg),
        ("one_pixel.png", _png(Image.new("RGB", (1, 1), "white"))),
        ("thin_row.png", _png(Image.new("RGB", (3000, 1), "gray"))),
        ("thin_column.png", _png(Image.new("RGB", (1, 3000), "gray"))),
        ("sixteen_bit.png", _png(sixteen)),
        ("cmyk.jpg", _encode(photo.convert("CMYK"), "JPEG")),
        ("palette_alpha.png", _png(palette)),
        ("gray_alpha.png", _png(photo.convert("LA"))),
        ("rgba.png", _png(photo.convert("RGBA"))),
        ("animated.gif", gif.getvalue()),
        ("bitmap.bmp", _encode(photo, "BMP")),
        ("float.tiff", _encode(Image.fromarray(rng.random((12, 10)).astype(np.float32)), "TIFF")),
        ("one_bit.png", _png(photo.convert("1"))),
        ("good.png", good_png),
    ]


def write_images(folder: Path, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, data in images(seed):
        (folder / name).write_bytes(data)
        out.append(folder / name)
    return out


def mutate(data: bytes, rng: np.random.Generator, edits: int = 8) -> bytes:
    """`data` with a few bytes flipped, cut or duplicated (a damaged download)."""
    buf = bytearray(data)
    for _ in range(edits):
        if not buf:
            break
        i = int(rng.integers(0, len(buf)))
        op = int(rng.integers(0, 3))
        if op == 0:
            buf[i] = int(rng.integers(0, 256))
        elif op == 1:
            del buf[i : i + int(rng.integers(1, 64))]
        else:
            buf[i:i] = buf[i : i + int(rng.integers(1, 64))]
    return bytes(buf)


# --- texts ------------------------------------------------------------------------------------------------


def texts(huge_mb: float = 2.0) -> list[tuple[str, str]]:
    return [
        ("empty", ""),
        ("whitespace", " \t\n" * 100),
        ("control", "".join(chr(c) for c in range(32)) * 10),
        ("nul", "a\x00b\x00c"),
        ("lone_surrogate", "cat \ud800 dog \udfff"),
        ("surrogate_escape", os.fsdecode(b"\xff\xfe caption")),
        ("rtl_and_marks", "\u202eabc\u200f\u0301\u0301\u0301 ok"),
        ("emoji_zwj", "👩‍👩‍👧‍👦" * 500),
        ("one_long_word", "x" * 100_000),
        ("huge", "a caption of many words. " * int(huge_mb * 2**20 / 25)),
        ("cjk", "東京タワーの夜景" * 2000),
        ("specials", "[CLS] [SEP] [PAD] [MASK] [UNK] ##ing"),
    ]


# --- prompts ----------------------------------------------------------------------------------------------

NAN, INF = math.nan, math.inf


def prompts(width: int = 64, height: int = 48) -> list[tuple[str, dict[str, Any]]]:
    """Keyword arguments for `SamPredictor.predict`."""
    pt = np.array([[10.0, 10.0]])
    return [
        ("nan_point", {"point_coords": np.array([[NAN, 1.0]]), "point_labels": np.array([1])}),
        ("inf_point", {"point_coords": np.array([[INF, 1.0]]), "point_labels": np.array([1])}),
        ("huge_point", {"point_coords": np.array([[1e30, 1e30]]), "point_labels": np.array([1])}),
        ("negative_point", {"point_coords": np.array([[-5.0, -5.0]]), "point_labels": np.array([1])}),
        ("label_7", {"point_coords": pt, "point_labels": np.array([7])}),
        ("labels_missing", {"point_coords": pt}),
        ("labels_mismatch", {"point_coords": pt, "point_labels": np.array([1, 0])}),
        ("point_3d", {"point_coords": np.zeros((1, 1, 1, 2)), "point_labels": np.array([1])}),
        ("point_one_number", {"point_coords": np.array([[1.0]]), "point_labels": np.array([1])}),
        ("point_strings", {"point_coords": [["a", "b"]], "point_labels": [1]}),
        ("empty_points", {"point_coords": np.zeros((0, 2)), "point_labels": np.zeros(0)}),
        ("nan_box", {"box": np.array([NAN, 0, 4, 4])}),
        ("inverted_box", {"box": np.array([40.0, 40.0, 2.0, 2.0])}),
        ("box_five", {"box": np.array([0, 0, 4, 4, 5])}),
        ("huge_box", {"box": np.array([-1e12, -1e12, 1e12, 1e12])}),
        ("mask_wrong_shape", {"mask_input": np.zeros((1, 7, 7), np.float32)}),
        ("mask_nan", {"mask_input": np.full((1, 32, 32), NAN, np.float32)}),
        ("nothing", {}),
        ("good", {"point_coords": np.array([[width / 2, height / 2]]), "point_labels": np.array([1])}),
    ]


# --- options (command lines) -------------------------------------------------------------------------------


def options(image: str, folder: str) -> list[tuple[str, list[str]]]:
    """Command lines with one bad option each (the demo models; nothing is downloaded)."""
    sam, align = ["--sam-model", "demo"], ["--model", "demo"]
    return [
        ("point_nan", ["segment", image, *sam, "--point", "5,5,nan"]),
        ("box_words", ["segment", image, *sam, "--box", "a,b,c,d"]),
        ("context_inf", ["find", folder, *sam, *align, "--text", "x", "--context", "inf"]),
        ("threads_huge", ["masks", image, *sam, "--threads", "100000"]),
        ("batch_zero", ["classify", image, *align, "--labels", "cat", "--batch-size", "0"]),
        ("device_bogus", ["classify", image, *align, "--labels", "cat", "--device", "bogus"]),
        ("template_fields", ["classify", image, *align, "--labels", "cat", "--templates", "a {} {1}"]),
        ("points_per_side_huge", ["masks", image, *sam, "--points-per-side", "100000"]),
        ("port_huge", ["serve", "--port", "70000"]),
        ("missing_image", ["masks", folder + "/does-not-exist.png", *sam]),
        ("model_missing", ["classify", image, "--model", folder + "/no-model", "--labels", "cat"]),
    ]


# --- checkpoints ------------------------------------------------------------------------------------------


class _Payload:
    """A pickle that runs `os.system` when loaded: the loader must refuse it, never run it."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (os.system, (f"touch {self.sentinel}",))


def checkpoints(folder: Path, sentinel: Path) -> list[Path]:
    """Broken weight files; loading any of them must not create `sentinel`."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.safetensors"
    save_file({"w": torch.ones(4, 4)}, good)
    data = good.read_bytes()
    files: dict[str, bytes] = {
        "truncated.safetensors": data[: len(data) // 2],
        "header_only.safetensors": data[:8],
        "huge_header.safetensors": struct.pack("<Q", 2**62) + b"{}",
        "bad_header_json.safetensors": struct.pack("<Q", 5) + b"{nope" + b"\x00" * 16,
        "offsets_past_end.safetensors": _safetensors_header(
            {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}
        ),
        "random.pth": os.urandom(4096),
        "empty.bin": b"",
        "zip_garbage.pth": b"PK\x03\x04" + os.urandom(256),
    }
    for name, body in files.items():
        (folder / name).write_bytes(body)
    with open(folder / "reduce.pth", "wb") as f:
        pickle.dump({"state_dict": {"w": _Payload(sentinel)}}, f, protocol=2)
    torch.save({"w": _Payload(sentinel)}, folder / "reduce_zip.pth")
    return sorted(p for p in folder.iterdir() if p.name != "good.safetensors")


def _safetensors_header(header: dict[str, Any]) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text


# --- configs ----------------------------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(config: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        node[last] = value

    return apply


CONFIG_EDITS: dict[str, dict[str, Callable[[dict[str, Any]], None]]] = {
    "align": {
        "image_size_0": _set("vision_config.image_size", 0),
        "layers_1e7": _set("text_config.num_hidden_layers", 10**7),
        "hidden_1e6": _set("text_config.hidden_size", 10**6),
        "heads_string": _set("text_config.num_attention_heads", "4"),
        "heads_float": _set("text_config.num_attention_heads", 4.5),
        "vision_list": _set("vision_config", [1, 2]),
        "depth_coefficient_1e308": _set("vision_config.depth_coefficient", 1e308),
        "kernel_sizes_string": _set("vision_config.kernel_sizes", "abc"),
        "repeats_1e9": _set("vision_config.num_block_repeats", [1, 1, 1, 10**9, 1, 1, 1]),
        "model_type_int": _set("model_type", 3),
    },
    "sam": {
        "image_size_0": _set("image_encoder.image_size", 0),
        "depth_1e7": _set("image_encoder.depth", 10**7),
        "embed_dim_1e6": _set("image_encoder.embed_dim", 10**6),
        "image_size_1e6": _set("image_encoder.image_size", 2**20),
        "heads_string": _set("image_encoder.num_heads", "4"),
        "pixel_mean_string": _set("pixel_mean", "abc"),
        "global_attn_string": _set("image_encoder.global_attn_indexes", "x"),
        "encoder_null": _set("image_encoder", None),
        "qkv_bias_string": _set("image_encoder.qkv_bias", "yes"),
    },
    "internimage": {
        "depths_1e7": _set("depths", [1, 1, 10**7, 1]),
        "channels_1e6": _set("channels", 10**6),
        "image_size_0": _set("image_size", 0),
        "groups_string": _set("groups", "abc"),
    },
}
"""Per model family: edits of a real `config.json` that make it malformed."""

WHOLE_FILE_EDITS: dict[str, Callable[[Path], None]] = {
    "nested_deep": lambda d: (d / "config.json").write_text('{"a":' + "[" * 100_000 + "]" * 100_000 + "}"),
    "not_json": lambda d: (d / "config.json").write_text("{model_type: align"),
    "binary": lambda d: (d / "config.json").write_bytes(os.urandom(512)),
    "a_list": lambda d: (d / "config.json").write_text("[1, 2, 3]"),
    "int32_weights": lambda d: _int32_weights(d / "model.safetensors"),
    "weights_truncated": lambda d: _truncate(d / "model.safetensors"),
}
"""Edits of a whole model folder, for every family."""


def _int32_weights(path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    save_file({k: v.to(torch.int32) if v.is_floating_point() else v for k, v in tensors.items()}, path)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def config_variants(sources: dict[str, Path], out: Path) -> Iterator[tuple[str, str, Path]]:
    """(family, case, folder) for each malformed copy of each family's model folder in `sources`."""
    import shutil

    for family, source in sources.items():
        edits: dict[str, Callable[[Path], None]] = {}
        for case, edit in CONFIG_EDITS.get(family, {}).items():

            def apply(d: Path, edit: Callable[[dict[str, Any]], None] = edit) -> None:
                config = json.loads((d / "config.json").read_text())
                edit(config)
                (d / "config.json").write_text(json.dumps(config))

            edits[case] = apply
        edits.update(WHOLE_FILE_EDITS)
        for case, apply_edit in edits.items():
            folder = out / f"{family}-{case}"
            shutil.copytree(source, folder)
            apply_edit(folder)
            yield family, case, folder
