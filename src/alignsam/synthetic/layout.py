"""Where objects go: drawing identities, sizes, colours and positions for one scene, without rendering.

Placement works on bounding circles (centre + extent), which is cheap and keeps the rules simple:
- every object lies wholly inside the image;
- objects of the same colour keep a gap between their bounding circles, so they never merge into one blob;
- objects of different colours may overlap, by at most `2 * max_occlusion * min(extents)` between their
  bounding circles, which keeps the hidden share of the lower one near `max_occlusion` (the renderer
  checks the exact visible area afterwards and drops any object hidden more than that).
An object that finds no free spot after `_TRIES` attempts (the last half with the smallest size) is left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from alignsam.errors import InputError
from alignsam.synthetic.config import SceneConfig
from alignsam.synthetic.vocab import COLOURS, SHAPES, SIZES, position_of

__all__ = ["Placement", "sample_layout"]

_TRIES = 50


@dataclass(frozen=True)
class Placement:
    """One object before rendering: what it is and where it goes.

    `center` is (x, y) in pixels (continuous, pixel edges at integers), `extent` the radius of its bounding
    circle in pixels, `rotation` in degrees, `rgb` its exact colour, `position` the region word of its centre.
    """

    shape: str
    colour: str
    size: str
    position: str
    center: tuple[float, float]
    extent: float
    rotation: float
    rgb: tuple[int, int, int]

    @property
    def label(self) -> str:
        """The class name, "<colour> <shape>"."""
        return f"{self.colour} {self.shape}"


def _fits(candidate: Placement, placed: Sequence[Placement], config: SceneConfig) -> bool:
    gap = max(1.5, 0.02 * config.image_size)
    for other in placed:
        distance = math.dist(candidate.center, other.center)
        if candidate.colour == other.colour:
            needed = candidate.extent + other.extent + gap
        else:
            needed = candidate.extent + other.extent - 2 * config.max_occlusion * min(candidate.extent, other.extent)
        if distance < needed:
            return False
    return True


def _jittered(colour: str, jitter: int, rng: np.random.Generator) -> tuple[int, int, int]:
    offset = rng.integers(-jitter, jitter + 1, 3)
    r, g, b = (int(v) for v in np.clip(np.asarray(COLOURS[colour]) + offset, 0, 255))
    return r, g, b


def _pick(options: Sequence[str], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]  # rng.choice would build an array on every call


def _identities(config: SceneConfig, rng: np.random.Generator) -> list[tuple[str, str]]:
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    chosen: list[tuple[str, str]] = []
    for _ in range(count):
        if chosen and rng.random() < config.repeat:
            chosen.append(chosen[int(rng.integers(len(chosen)))])
        else:
            chosen.append((_pick(config.shapes, rng), _pick(config.colours, rng)))
    return chosen


def _check_identities(objects: Sequence[tuple[str, str]], config: SceneConfig) -> list[tuple[str, str]]:
    out = []
    for item in objects:
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise InputError(f"objects must be (shape, colour) pairs, got {item!r}.")
        shape, colour = item
        if shape not in config.shapes or colour not in config.colours:
            raise InputError(
                f"object ({shape!r}, {colour!r}) is outside the configured vocabulary; "
                f"shapes: {', '.join(config.shapes)}; colours: {', '.join(config.colours)}."
            )
        out.append((shape, colour))
    if not out:
        raise InputError("objects is empty; give at least one (shape, colour) pair or None for a random scene.")
    return out


def sample_layout(
    config: SceneConfig, rng: np.random.Generator, objects: Sequence[tuple[str, str]] | None = None
) -> list[Placement]:
    """Draw a scene's objects, bottom (drawn first) to top.

    Args:
        config: the scene configuration.
        rng: the scene's layout stream; the result depends only on it and `config`.
        objects: (shape, colour) pairs to place instead of random ones (e.g. one per class).
    """
    identities = _identities(config, rng) if objects is None else _check_identities(objects, config)
    side = config.image_size
    smallest = min(config.sizes, key=lambda s: SIZES[s][0])
    placed: list[Placement] = []
    for shape, colour in identities:
        rgb = _jittered(colour, config.colour_jitter, rng)
        for attempt in range(_TRIES):
            # After half the tries, fall back to the smallest size: crowded scenes stay crowded.
            size = _pick(config.sizes, rng) if attempt < _TRIES // 2 else smallest
            low, high = SIZES[size]
            extent = rng.uniform(low, high) * side
            margin = extent + 1.0
            x, y = rng.uniform(margin, side - margin, 2)
            turns = SHAPES[shape].points is not None  # a circle has no rotation to draw
            rotation = rng.uniform(-config.max_rotation, config.max_rotation) if turns else 0.0
            candidate = Placement(
                shape=shape,
                colour=colour,
                size=size,
                position=position_of(x, y, side),
                center=(float(x), float(y)),
                extent=float(extent),
                rotation=float(rotation),
                rgb=rgb,
            )
            if _fits(candidate, placed, config):
                placed.append(candidate)
                break
    return placed
