"""Images in: file paths, bytes, PIL images and numpy arrays, whatever their mode, as RGB.

Conversions, all documented behaviour:
- EXIF orientation is applied, so a photo taken sideways comes out the way a viewer shows it (unless the
  caller passes `exif_orientation=False`).
- Grayscale, palette, CMYK and YCbCr become RGB; transparency (RGBA, LA, palette with a transparent
  colour) is composited onto white, so dark logos on transparent backgrounds stay visible.
- 16-bit images (`I;16`, `I`, uint16 arrays) are scaled to 8 bits (x / 257); float arrays are read as
  0..1 when their maximum is at most 1, else as 0..255; boolean arrays as 0/255.
- Images above `max_pixels` (default 179 megapixels, PIL's own limit) are refused with a message that
  says how to allow them.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from alignsam.errors import ImageError, OutputError
from alignsam.io.files import check_output_file, write_atomic

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]  # noqa: UP007 (runtime alias, py3.10)

IMAGE_MEMORY = 4 << 30
"""What one image may cost the mask tools besides the model (docs/tools.md, "Memory on large images")."""
BYTES_PER_PIXEL = 24
"""The measured bound of the mask tools' memory per image pixel (tests/tools/test_memory.py)."""
DEFAULT_MAX_PIXELS = IMAGE_MEMORY // BYTES_PER_PIXEL
"""Larger images are refused before decoding: 178,956,970 pixels (PIL's own decompression-bomb limit too)."""
_PIL_LIMIT_LOCK = threading.Lock()


def load_image(
    image: ImageInput, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, exif_orientation: bool = True
) -> Image.Image:
    """Return `image` as an RGB PIL image (see the module docstring for the conversions).

    Args:
        image: a file path, the bytes of an encoded image, a PIL image, or an array `H x W`,
            `H x W x 1`, `H x W x 3` or `H x W x 4` (uint8, uint16, bool or float).
        max_pixels: refuse larger images; None for no limit.
        exif_orientation: apply the EXIF orientation; False keeps the stored pixels as they are (what
            transformers' processors do with a PIL image they are given).
    """
    if isinstance(image, Image.Image):
        pil = image
        name = "image"
    elif isinstance(image, np.ndarray):
        return Image.fromarray(_array_to_rgb(image, max_pixels))
    elif isinstance(image, bytes | bytearray):
        pil = _open(io.BytesIO(image), "image bytes", max_pixels)
        name = "image bytes"
    elif isinstance(image, str | os.PathLike):
        name = f"'{image}'"
        path = Path(image)
        if not path.is_file():
            raise ImageError(f"Image file {name} does not exist." if not path.exists() else f"{name} is not a file.")
        if path.stat().st_size == 0:
            raise ImageError(f"Image file {name} is empty (0 bytes).")
        pil = _open(path, name, max_pixels)
    else:
        raise ImageError(f"Cannot read an image from a {type(image).__name__}; pass a path, bytes, PIL image or array.")
    _check_size(pil.width, pil.height, max_pixels, name)
    try:
        if exif_orientation:
            pil = ImageOps.exif_transpose(pil) or pil
        return _pil_to_rgb(pil)
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"{name} is corrupt or truncated: {err}") from err


def load_image_array(image: ImageInput, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """`load_image` as an `H x W x 3` uint8 array."""
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, max_pixels)
    return np.asarray(load_image(image, max_pixels=max_pixels))


def _open(src: Path | io.BytesIO, name: str, max_pixels: int | None) -> Image.Image:
    pil_limit = Image.MAX_IMAGE_PIXELS
    lift = pil_limit is not None and (max_pixels is None or max_pixels > 2 * pil_limit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if lift:  # PIL's own bomb check would refuse what the caller allowed
                with _PIL_LIMIT_LOCK:
                    Image.MAX_IMAGE_PIXELS = None
                    try:
                        pil = Image.open(src)
                    finally:
                        Image.MAX_IMAGE_PIXELS = pil_limit
            else:
                pil = Image.open(src)
            _check_size(pil.width, pil.height, max_pixels, name)
            pil.load()
    except Image.DecompressionBombError as err:
        raise ImageError(f"{name} is too large ({err}); resize it first or pass max_pixels=None.") from err
    except UnidentifiedImageError as err:
        raise ImageError(f"{name} is not an image format that can be read.") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{name} is corrupt or truncated: {err}") from err
    return pil


def _check_size(width: int, height: int, max_pixels: int | None, name: str) -> None:
    if width < 1 or height < 1:
        raise ImageError(f"{name} has no pixels ({width}x{height}).")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"{name} is {width}x{height} = {width * height / 1e6:.0f} megapixels, over the limit of "
            f"{max_pixels / 1e6:.0f}; resize it first or pass max_pixels=None to allow it."
        )


def _pil_to_rgb(pil: Image.Image) -> Image.Image:
    mode = pil.mode
    if mode == "RGB":
        return pil
    if mode == "P":
        pil = pil.convert("RGBA" if "transparency" in pil.info else "RGB")
        mode = pil.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = pil.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_array_to_rgb(np.asarray(pil), None))
    return pil.convert("RGB")


def _array_to_rgb(arr: np.ndarray, max_pixels: int | None) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(f"Expected an array H x W or H x W x C with C in (1, 3, 4); got shape {arr.shape}.")
    _check_size(arr.shape[1], arr.shape[0], max_pixels, "array")
    arr = _to_uint8(arr)
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 4:
        alpha = arr[..., 3:].astype(np.float32) / 255.0
        rgb = arr[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError("The image array holds NaN or infinite values.")
        scale = 255.0 if arr.size and float(arr.max()) <= 1.0 else 1.0
        return np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        peak = int(arr.max()) if arr.size else 0
        if peak > 255 or arr.dtype in (np.uint16, np.dtype(">u2"), np.dtype("<u2")):
            return np.clip(np.rint(arr.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
        return np.clip(arr, 0, 255).astype(np.uint8)
    raise ImageError(f"Unsupported image array dtype {arr.dtype}.")


def check_image_output(path: str | os.PathLike[str], *, create_parents: bool = True) -> Path:
    """`path` as a Path if an image can be saved there (writable, a suffix PIL knows); an `OutputError`
    naming it otherwise. For checking before the work (see `check_output_file` for `create_parents`)."""
    out = check_output_file(path, create_parents=create_parents)
    if out.suffix.lower() not in Image.registered_extensions():
        raise OutputError(f"Cannot tell an image format from the name '{out}'; end it in .png, .jpg or .webp.")
    return out


def save_image(image: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Save `image` in the format its suffix names, through `write_atomic` (any earlier file stays whole if
    the write fails); an `OutputError` naming the file if it cannot be written."""
    out = check_image_output(path)
    image_format = Image.registered_extensions()[out.suffix.lower()]
    return write_atomic(out, lambda partial: image.save(partial, format=image_format))
