"""What a synthetic scene can contain: shapes (as outlines), colours, sizes, regions and background textures.

Each word here is a ground-truth label, so the words were chosen to stay unambiguous in the pictures:
- Shapes differ in outline even when small and rotated. A regular hexagon or pentagon is only a few pixels
  away from a circle at 20 px, so the defaults use a crescent instead; both polygons are still available.
  The diamond is an elongated rhombus (width 0.6 x height), so a square turned by 45 degrees is no diamond.
- Colours are saturated and far apart in RGB, and backgrounds are muted greys (see `backgrounds.py`), so
  a colour name never describes the background and "white" stays white against it. Grey and black are
  not offered for the same reason.

Outlines are unit polygons centred on the origin with the farthest vertex at distance 1 (x right, y down,
as in image coordinates); a circle is drawn as an ellipse instead. Each object is scaled so that its
*extent* (the radius of its bounding circle) is the radius sampled for its size word.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "DEFAULT_COLOURS",
    "DEFAULT_SHAPES",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "Shape",
    "position_of",
]


@dataclass(frozen=True)
class Shape:
    """A shape's outline: `points` is `P x 2` (x, y) on the unit circle's scale, or None for a true circle.

    `area` and `perimeter` are those of the unit outline (at extent 1), used to check occlusion limits.
    """

    name: str
    points: np.ndarray | None
    area: float
    perimeter: float

    def outline(self, center: tuple[float, float], extent: float, rotation_deg: float) -> np.ndarray:
        """The polygon at `center` with bounding radius `extent`, turned by `rotation_deg`: `P x 2`."""
        if self.points is None:
            raise ValueError(f"{self.name} is drawn as an ellipse, not a polygon")
        t = math.radians(rotation_deg)
        rot = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
        return self.points @ rot * extent + np.asarray(center)


def _normalised(points: np.ndarray) -> np.ndarray:
    """Centre a polygon on its bounding box and scale it so the farthest vertex lies at distance 1."""
    points = points - (points.min(0) + points.max(0)) / 2
    return points / np.sqrt((points**2).sum(1)).max()


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _polygon_perimeter(points: np.ndarray) -> float:
    return float(np.sqrt(((points - np.roll(points, -1, axis=0)) ** 2).sum(1)).sum())


def _regular(n: int, phase_deg: float) -> np.ndarray:
    t = np.radians(phase_deg) + np.arange(n) * 2 * np.pi / n
    return np.stack([np.cos(t), np.sin(t)], 1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    t = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _cross(half_width: float = 0.32) -> np.ndarray:
    w, h = half_width, 1.0
    return np.array(
        [[-w, -h], [w, -h], [w, -w], [h, -w], [h, w], [w, w], [w, h], [-w, h], [-w, w], [-h, w], [-h, -w], [-w, -w]]
    )


def _heart(n: int = 48) -> np.ndarray:
    # The classic parametric heart; y is negated because image y points down.
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y], 1)


def _crescent(n: int = 24, inner_radius: float = 0.85, offset: float = 0.55) -> np.ndarray:
    # The unit disc minus a disc of radius `inner_radius` centred at (offset, 0): horns point right.
    xi = (1 - inner_radius**2 + offset**2) / (2 * offset)  # x of the two circle intersections
    yi = math.sqrt(1 - xi**2)
    outer_from = math.atan2(yi, xi)
    outer = np.linspace(outer_from, 2 * np.pi - outer_from, n)  # the left (outer) arc, through angle pi
    inner_at = math.atan2(yi, xi - offset)
    inner = np.linspace(2 * np.pi - inner_at, inner_at, n)[1:-1]  # back along the inner arc
    return np.concatenate(
        [
            np.stack([np.cos(outer), np.sin(outer)], 1),
            np.stack([offset + inner_radius * np.cos(inner), inner_radius * np.sin(inner)], 1),
        ]
    )


def _make(name: str, points: np.ndarray | None) -> Shape:
    if points is None:
        return Shape(name, None, math.pi, 2 * math.pi)
    points = _normalised(points)
    return Shape(name, points, _polygon_area(points), _polygon_perimeter(points))


SHAPES: dict[str, Shape] = {
    shape.name: shape
    for shape in (
        _make("circle", None),
        _make("square", _regular(4, 45)),
        _make("triangle", _regular(3, -90)),
        _make("star", _star()),
        _make("diamond", np.array([[0.0, -1.0], [0.6, 0.0], [0.0, 1.0], [-0.6, 0.0]])),
        _make("cross", _cross()),
        _make("heart", _heart()),
        _make("crescent", _crescent()),
        _make("hexagon", _regular(6, 0)),
        _make("pentagon", _regular(5, -90)),
    )
}
"""Every shape the generator can draw, by name."""

DEFAULT_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross", "heart", "crescent")

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (245, 225, 35),
    "green": (35, 175, 60),
    "blue": (40, 90, 235),
    "purple": (145, 55, 205),
    "pink": (250, 135, 200),
    "white": (245, 245, 245),
    "cyan": (40, 215, 230),
    "brown": (150, 90, 40),
}
"""Every colour name with its base RGB; each object gets the base plus a small random jitter."""

DEFAULT_COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white")

SIZES: dict[str, tuple[float, float]] = {
    "small": (0.06, 0.09),
    "medium": (0.10, 0.14),
    "large": (0.15, 0.20),
}
"""Size word -> range of the object's extent (bounding radius) as a fraction of the image side."""

POSITIONS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "centre",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
"""The nine regions of a 3 x 3 grid, row by row; an object's region is the cell holding its centre."""

BACKGROUNDS: tuple[str, ...] = ("plain", "noise", "stripes", "gradient", "checkerboard")
"""Background texture kinds (all muted greys, see `backgrounds.py`)."""


def position_of(x: float, y: float, size: int) -> str:
    """The region word (one of `POSITIONS`) for a centre at pixel coordinates (x, y) in a `size` square."""
    col = min(int(3 * x / size), 2)
    row = min(int(3 * y / size), 2)
    return POSITIONS[3 * max(row, 0) + max(col, 0)]
