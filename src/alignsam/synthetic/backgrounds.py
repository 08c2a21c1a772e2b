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


def render_background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A background texture as float32 RGB, `size x size x 3`, every value in [LOW, HIGH].

    Args:
        kind: one of `vocab.BACKGROUNDS`.
        size: the image side in pixels.
        rng: the scene's background stream (the texture depends on nothing else).
    """
    base = _base_colour(rng)
    y, x = _grid(size)
    img: np.ndarray
    if kind == "plain":
        img = np.broadcast_to(base, (size, size, 3)).astype(np.float32)
    elif kind == "noise":
        field = _smooth_noise(size, int(rng.integers(3, 10)), rng)
        amplitude = rng.uniform(10, 22)
        grain = rng.standard_normal((size, size, 1), dtype=np.float32) * 3  # a little sensor-like grain
        img = base + (field[:, :, None] * amplitude + grain)
    elif kind == "stripes":
        period = rng.uniform(0.05, 0.2) * size
        angle = rng.uniform(0, math.pi)
        phase = (x * math.cos(angle) + y * math.sin(angle)) / period
        wave = np.sin(2 * np.pi * phase) if rng.random() < 0.5 else np.sign(np.sin(2 * np.pi * phase))
        img = base + (wave * rng.uniform(8, 18))[:, :, None]
    elif kind == "gradient":
        other = _base_colour(rng)
        angle = rng.uniform(0, 2 * math.pi)
        t = (x - size / 2) * math.cos(angle) + (y - size / 2) * math.sin(angle)
        t = (t / (size * math.sqrt(2)) + 0.5)[:, :, None]  # 0..1 across the diagonal
        img = base * (1 - t) + other * t
    elif kind == "checkerboard":
        cell = rng.uniform(0.06, 0.2) * size
        parity = ((np.floor(x / cell) + np.floor(y / cell)) % 2) * 2 - 1  # -1 / +1
        img = base + (parity * rng.uniform(8, 16))[:, :, None]
    else:
        raise ValueError(f"unknown background kind {kind!r}")
    return np.clip(img, LOW, HIGH).astype(np.float32, copy=False)
