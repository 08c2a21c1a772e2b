"""Muted background textures: plain, smooth noise, stripes, gradients and checkerboards.

Every texture is a low-saturation grey between `LOW` and `HIGH` with a small colour tint. Why so muted:
the object colours (saturated, or white) must stay the only coloured things in a scene, so a colour word
in a caption always names an object, and the edges between an object and the background stay visible for
segmentation. Textures still matter: they keep a model from learning "anything not flat is an object".
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

__all__ = ["HIGH", "LOW", "render_background"]

LOW, HIGH = 20.0, 160.0
"""Every background pixel lies in [LOW, HIGH] on each channel (object colours are far brighter or more saturated)."""


def _base_colour(rng: np.random.Generator) -> np.ndarray:
    grey = rng.uniform(55, 120)
    return (grey + rng.uniform(-10, 10, 3)).astype(np.float32)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: y as `H x 1`, x as `1 x W` (broadcast, never materialised)."""
    c = np.arange(size, dtype=np.float32) + 0.5
    return c[:, None], c[None, :]


def _smooth_noise(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Value noise in about [-1, 1]: a `cells x cells` random grid upsampled bicubically to `size x size`."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32) / 1.5
    return np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.Resampling.BICUBIC))


def _through_palette(index: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """`H x W` uint8 indices mapped through a `256 x 3` float palette: `H x W x 3` uint8 in [LOW, HIGH].

    PIL's palette conversion does the per-pixel work in C, several times faster than numpy's 3-channel
    arithmetic, which matters at 512 px and above.
    """
    colours = np.rint(np.clip(palette, LOW, HIGH)).astype(np.uint8)
    image = Image.fromarray(index, mode="L")
    image.putpalette(colours.tobytes())
    return np.asarray(image.convert("RGB"))


def render_background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A background texture as uint8 RGB, `size x size x 3`, every value in [LOW, HIGH].

    Args:
        kind: one of `vocab.BACKGROUNDS`.
        size: the image side in pixels.
        rng: the scene's background stream (the texture depends on nothing else).
    """
    base = _base_colour(rng)
    y, x = _grid(size)
    # Every texture is one `H x W` field: an offset from the base colour in grey levels (a palette of
    # base - 128 .. base + 127), or for gradients a 0..255 position between two colours.
    levels = np.arange(256, dtype=np.float32)[:, None]
    palette = base + (levels - 128)
    if kind == "plain":
        field = np.zeros((size, size), dtype=np.float32)
    elif kind == "noise":
        smooth = _smooth_noise(size, int(rng.integers(3, 10)), rng)
        amplitude = rng.uniform(10, 22)
        grain = rng.integers(-5, 6, (size, size), dtype=np.int8)  # a little sensor-like grain
        field = smooth * np.float32(amplitude) + grain
    elif kind == "stripes":
        period = rng.uniform(0.05, 0.2) * size
        angle = rng.uniform(0, math.pi)
        wave = np.sin((x * math.cos(angle) + y * math.sin(angle)) * np.float32(2 * np.pi / period))
        if rng.random() < 0.5:
            wave = np.sign(wave)  # hard-edged stripes
        field = wave * np.float32(rng.uniform(8, 18))
    elif kind == "gradient":
        other = _base_colour(rng)
        angle = rng.uniform(0, 2 * math.pi)
        t = (x - size / 2) * math.cos(angle) + (y - size / 2) * math.sin(angle)
        field = (t / np.float32(size * math.sqrt(2)) + np.float32(0.5)) * 255 - 128  # across the diagonal
        palette = base + (other - base) * (levels / 255)
    elif kind == "checkerboard":
        cell = rng.uniform(0.06, 0.2) * size
        parity = (np.floor(y / cell).astype(np.int16) ^ np.floor(x / cell).astype(np.int16)) & 1
        field = (parity * 2 - 1) * np.float32(rng.uniform(8, 16))  # -1 / +1 times the contrast
    else:
        raise ValueError(f"unknown background kind {kind!r}")
    index = np.clip(np.rint(field) + 128, 0, 255).astype(np.uint8)
    return _through_palette(index, palette)
