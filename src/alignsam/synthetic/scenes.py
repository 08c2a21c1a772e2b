"""Scenes: a deterministic, random-access generator of rendered images with exact masks and captions.

`SceneGenerator(config, seed)[i]` depends only on (config, seed, i): every scene draws from its own random
streams, seeded by `(seed, i, stream)`, so data sets are map-style, reproducible and splittable (by seed,
or by disjoint index ranges of one seed). Separate streams for layout, background, caption, noise and
metadata mean that, for instance, changing the noise share leaves every image untouched.

Rendering, per scene:
1. the background texture at the output size (`backgrounds.py`);
2. a label map at `supersample` times the size: each object's outline filled with its index, bottom to top,
   by PIL's polygon and ellipse rasteriser (fast C code), so later objects hide earlier ones;
3. per-pixel coverage of each object = its share of the `s x s` sub-pixels of that pixel (counted only on
   edge pixels, where labels differ); the image is the coverage-weighted blend of the object colours and
   the background (box-filter anti-aliasing);
4. each pixel's mask owner = the object (or background) with the largest coverage (ties: see `_coverage`).
   Masks are therefore binary, disjoint, and exactly the visible part of each object; where an object
   covers a pixel fully, the pixel has exactly the object's colour.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
from PIL import Image, ImageDraw

from alignsam.errors import InputError
from alignsam.synthetic.backgrounds import render_background
from alignsam.synthetic.captions import caption_variants, clean_caption
from alignsam.synthetic.config import NoiseKind, SceneConfig
from alignsam.synthetic.layout import Placement, sample_layout
from alignsam.synthetic.noise import noisy_caption
from alignsam.synthetic.vocab import SHAPES

__all__ = ["Scene", "SceneGenerator", "SceneObject", "SceneRange"]

# Random streams of a scene: np.random.default_rng((seed, index, stream)).
LAYOUT, BACKGROUND, CAPTION, NOISE, METADATA, VARIANTS, WRITER = range(7)
MAX_INDEX = 2**63 - 1


@dataclass(frozen=True, eq=False)
class SceneObject:
    """One rendered object.

    Attributes:
        shape, colour, size, position: its words ("star", "red", "small", "top left").
        rgb: its exact colour (the colour's base plus jitter).
        center: (x, y) of its outline's centre, in pixels; `extent` its bounding radius; `rotation` in degrees.
        bbox: (x0, y0, x1, y1) of its mask in pixel-edge coordinates: the mask lies in columns x0..x1-1 and
            rows y0..y1-1, so x1 - x0 is COCO's width.
        area: the number of mask pixels.
        mask: `H x W` bool, the pixels where it is visible (after occlusion by the objects above it).
    """

    shape: str
    colour: str
    size: str
    position: str
    rgb: tuple[int, int, int]
    center: tuple[float, float]
    extent: float
    rotation: float
    bbox: tuple[int, int, int, int]
    area: int
    mask: np.ndarray = field(repr=False)

    @property
    def label(self) -> str:
        """The class name, "<colour> <shape>"."""
        return f"{self.colour} {self.shape}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ground truth without the mask (writers add it as COCO RLE)."""
        return {
            "shape": self.shape,
            "colour": self.colour,
            "size": self.size,
            "position": self.position,
            "label": self.label,
            "rgb": list(self.rgb),
            "center": [round(self.center[0], 2), round(self.center[1], 2)],
            "extent": round(self.extent, 2),
            "rotation": round(self.rotation, 2),
            "bbox": list(self.bbox),
            "area": self.area,
        }


@dataclass(frozen=True, eq=False)
class Scene:
    """One scene: the image, its objects (bottom to top) and its captions.

    Attributes:
        index, seed: where it comes from (`SceneGenerator(config, seed)[index]`).
        image: `H x W x 3` uint8 RGB.
        objects: the visible objects, in drawing order (later ones lie on top).
        background: the texture kind ("plain", "noise", "stripes", "gradient", "checkerboard").
        clean_caption: a caption that names every object.
        caption: the caption a web crawl would give: `clean_caption`, or a noisy one.
        noise: how `caption` relates to the image ("none", "wrong", "truncated", "unrelated").
    """

    index: int
    seed: int
    image: np.ndarray = field(repr=False)
    objects: tuple[SceneObject, ...]
    background: str
    clean_caption: str
    caption: str
    noise: NoiseKind

    @property
    def masks(self) -> np.ndarray:
        """`N x H x W` bool, one visible mask per object (disjoint)."""
        h, w = self.image.shape[:2]
        if not self.objects:
            return np.zeros((0, h, w), dtype=bool)
        return np.stack([o.mask for o in self.objects])

    @property
    def boxes(self) -> np.ndarray:
        """`N x 4` int64 XYXY boxes in pixel-edge coordinates (see `SceneObject.bbox`)."""
        return np.array([o.bbox for o in self.objects], dtype=np.int64).reshape(-1, 4)

    @property
    def labels(self) -> list[str]:
        """The "<colour> <shape>" class of each object."""
        return [o.label for o in self.objects]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ground truth (no image, no masks)."""
        return {
            "seed": self.seed,
            "index": self.index,
            "background": self.background,
            "clean_caption": self.clean_caption,
            "caption": self.caption,
            "noise": self.noise,
            "objects": [o.to_dict() for o in self.objects],
        }


def _rasterise(placements: Sequence[Placement], height: int, width: int, supersample: int) -> np.ndarray:
    """The label map, `height*s x width*s` uint8: 0 background, k where the k-th object is on top."""
    s = supersample
    big = Image.new("L", (width * s, height * s), 0)
    draw = ImageDraw.Draw(big)
    for k, p in enumerate(placements, start=1):
        shape = SHAPES[p.shape]
        # PIL truncates coordinates to integers and fills pixels inclusively (a shape grows by half a pixel),
        # and centres its pixel (i, j) on integer coordinates where ours sit on half-integers. So: shift by
        # -0.5, round ourselves, and draw the outline half a (drawing) pixel smaller. Areas then come out
        # within about 1% of the exact ones, without a shift.
        center = (p.center[0] * s - 0.5, p.center[1] * s - 0.5)
        extent = p.extent * s - 0.5
        if shape.points is None:
            box = np.rint([center[0] - extent, center[1] - extent, center[0] + extent, center[1] + extent])
            draw.ellipse(box.tolist(), fill=k)
        else:
            outline = np.rint(shape.outline(center, extent, p.rotation))
            draw.polygon(outline.ravel().tolist(), fill=k)  # flat x0, y0, x1, y1, ...
    return np.asarray(big)


@dataclass(frozen=True)
class _Coverage:
    """Per-pixel coverage of a label map, stored sparsely: most pixels are covered by a single label.

    `owner` (`H x W` uint8) is the label of pure pixels and the mask owner of mixed ones; `mixed` holds the
    (rows, cols) of the mixed (edge) pixels and `counts` (`M x (N + 1)`) their sub-pixels per label.
    """

    owner: np.ndarray
    mixed: tuple[np.ndarray, np.ndarray]
    counts: np.ndarray


def _coverage(placements: Sequence[Placement], height: int, width: int, supersample: int) -> _Coverage:
    """Coverage of each object (and the background) in a `height x width` image, drawn at `supersample` x."""
    s, n = supersample, len(placements)
    labels = _rasterise(placements, height, width, s)
    # The s*s strided views of the label map, each H x W: view (dy, dx) holds sub-pixel (dy, dx) of every pixel.
    views = [labels[dy::s, dx::s] for dy in range(s) for dx in range(s)]
    owner = views[0].copy()
    mixed = np.zeros(owner.shape, dtype=bool)
    for view in views[1:]:
        mixed |= view != owner
    rows, cols = np.nonzero(mixed)
    # Only edge pixels are mixed, so the per-label counting runs on M x s*s values, not the whole map.
    sub = np.stack([view[rows, cols] for view in views], axis=1)  # M x s*s
    counts = (sub[:, :, None] == np.arange(n + 1, dtype=np.uint8)).sum(axis=1)  # M x (N + 1)
    # The owner is the label with most sub-pixels. Ties (exactly half covered: common when s is even) go to
    # the label at the pixel's centre, which favours neither side of an edge, so masks keep their true area
    # and place; the centre is the middle sub-pixel when s is odd, else a sample drawn at 1x.
    if s % 2:
        centre = views[(s // 2) * s + s // 2][rows, cols]
    else:
        centre = _rasterise(placements, height, width, 1)[rows, cols]
    order = np.arange(n, -1, -1)
    top_tied = order[np.argmax(counts[:, order], axis=1)]  # argmax takes the first maximum: top object first
    centre_tied = counts[np.arange(len(centre)), centre] == counts.max(axis=1)
    owner[rows, cols] = np.where(centre_tied, centre, top_tied)
    return _Coverage(owner, (rows, cols), counts)


def _composite(background: np.ndarray, coverage: _Coverage, rgbs: np.ndarray, supersample: int) -> np.ndarray:
    """The image `H x W x 3` uint8: each pixel the coverage-weighted blend of background and object colours.

    Args:
        background: `H x W x 3` uint8.
        coverage: from `_coverage`.
        rgbs: `N x 3` uint8 object colours.
    """
    image = background.copy()
    pure_object = coverage.owner > 0
    pure_object[coverage.mixed] = False
    image[pure_object] = rgbs[coverage.owner[pure_object] - 1]  # fully covered: exactly the object's colour
    if len(coverage.counts):
        alpha = coverage.counts.astype(np.float32) / supersample**2  # M x (N + 1)
        blend = alpha[:, :1] * background[coverage.mixed].astype(np.float32) + alpha[:, 1:] @ rgbs.astype(np.float32)
        image[coverage.mixed] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    return image


def _own_area(p: Placement, config: SceneConfig) -> int:
    """The mask area of `p` drawn alone, counted as its scene mask is (rendered on a small canvas around it)."""
    size, s = config.image_size, config.supersample
    x0, y0 = max(0, math.floor(p.center[0] - p.extent) - 1), max(0, math.floor(p.center[1] - p.extent) - 1)
    x1 = min(size, math.ceil(p.center[0] + p.extent) + 1)
    y1 = min(size, math.ceil(p.center[1] + p.extent) + 1)
    # An integer shift keeps the sub-pixel grid, so the count equals a full-image render's.
    local = dataclasses.replace(p, center=(p.center[0] - x0, p.center[1] - y0))
    return int((_coverage([local], y1 - y0, x1 - x0, s).owner == 1).sum())


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    cols = np.flatnonzero(mask.any(0))
    rows = np.flatnonzero(mask.any(1))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng((seed, index, stream))


class SceneGenerator:
    """Scenes by index: `generator[i]` depends only on (config, seed, i).

    Args:
        config: the scene configuration (default `SceneConfig()`: 128 px, 1-4 objects, no noise).
        seed: a non-negative integer. Train and held-out sets use different seeds, or disjoint index
            ranges of one seed (`generator.range(0, 50_000)` and `generator.range(50_000, 51_000)`).

    Example:
        >>> gen = SceneGenerator(SceneConfig(image_size=128, noise=0.3), seed=0)
        >>> scene = gen[7]
        >>> scene.image.shape, scene.masks.shape[1:], scene.caption  # doctest: +SKIP
        ((128, 128, 3), (128, 128), 'a photo of a red circle and two blue stars')
    """

    def __init__(self, config: SceneConfig | None = None, seed: int = 0) -> None:
        if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or not 0 <= seed <= MAX_INDEX:
            raise InputError(f"seed must be an integer in 0..2**63-1, got {seed!r}.")
        self.config = config if config is not None else SceneConfig()
        self.seed = int(seed)

    def __repr__(self) -> str:
        return f"SceneGenerator(seed={self.seed}, config={self.config})"

    def __getitem__(self, index: int) -> Scene:
        return self.scene(index)

    def __iter__(self) -> Iterator[Scene]:
        # Without this, Python would iterate by __getitem__ forever.
        raise TypeError("a SceneGenerator has no end; iterate over generator.range(start, stop) instead")

    def _check_index(self, index: int) -> int:
        if not isinstance(index, int | np.integer) or isinstance(index, bool) or not 0 <= index <= MAX_INDEX:
            raise InputError(f"scene index must be an integer in 0..2**63-1, got {index!r}.")
        return int(index)

    def layout(self, index: int, objects: Sequence[tuple[str, str]] | None = None) -> list[Placement]:
        """The scene's objects before rendering and occlusion checks (cheap: no pixels)."""
        return sample_layout(self.config, _rng(self.seed, self._check_index(index), LAYOUT), objects)

    def scene(self, index: int, *, objects: Sequence[tuple[str, str]] | None = None) -> Scene:
        """Render scene `index`.

        Args:
            index: 0..2**63-1.
            objects: optional (shape, colour) pairs to draw instead of random ones, e.g. `[("star", "red")]`
                for a class-balanced classification set; the rest (sizes, places, background, captions)
                still comes from (config, seed, index).
        """
        index = self._check_index(index)
        cfg = self.config
        size, s = cfg.image_size, cfg.supersample
        placements = self.layout(index, objects)
        background_rng = _rng(self.seed, index, BACKGROUND)
        background_kind = cfg.backgrounds[int(background_rng.integers(len(cfg.backgrounds)))]
        background = render_background(background_kind, size, background_rng)

        coverage = _coverage(placements, size, size, s)
        kept = self._visible_enough(placements, coverage.owner)
        if len(kept) < len(placements):  # rare: an object hidden beyond the limit is left out, the rest redrawn
            placements = [placements[k] for k in kept]
            coverage = _coverage(placements, size, size, s)
        owners = coverage.owner
        rgbs = np.array([p.rgb for p in placements], dtype=np.uint8).reshape(-1, 3)
        image = _composite(background, coverage, rgbs, s)

        objects_out = []
        for k, p in enumerate(placements, start=1):
            mask = owners == k
            objects_out.append(
                SceneObject(
                    shape=p.shape,
                    colour=p.colour,
                    size=p.size,
                    position=p.position,
                    rgb=p.rgb,
                    center=p.center,
                    extent=p.extent,
                    rotation=p.rotation,
                    bbox=_bbox(mask),
                    area=int(mask.sum()),
                    mask=mask,
                )
            )
        clean = clean_caption(objects_out, background_kind, size, _rng(self.seed, index, CAPTION))
        noise, caption = noisy_caption(clean, objects_out, cfg, _rng(self.seed, index, NOISE))
        return Scene(
            index=index,
            seed=self.seed,
            image=image,
            objects=tuple(objects_out),
            background=background_kind,
            clean_caption=clean,
            caption=caption,
            noise=noise,
        )

    def _visible_enough(self, placements: Sequence[Placement], owners: np.ndarray) -> list[int]:
        """Indices of the objects within the occlusion limit: visible area >= (1 - max_occlusion) x own area."""
        visible = np.bincount(owners.ravel(), minlength=len(placements) + 1)[1:]
        need = 1 - self.config.max_occlusion
        keep = []
        for k, p in enumerate(placements):
            if visible[k] == 0:
                continue
            if not any(math.dist(p.center, q.center) < p.extent + q.extent for q in placements[k + 1 :]):
                keep.append(k)  # only objects drawn later can hide this one, and none reaches it
                continue
            shape = SHAPES[p.shape]
            # A pixel joins a mask when at least half of it is covered, so the own mask area is at most the
            # outline grown by a half pixel diagonal: a bound that settles most cases without drawing.
            bound = shape.area * p.extent**2 + 0.75 * shape.perimeter * p.extent + 2
            if visible[k] >= need * bound or visible[k] >= need * _own_area(p, self.config):
                keep.append(k)
        return keep

    def clean_captions(self, scene: Scene, n: int) -> list[str]:
        """`n` different clean captions of `scene` (for retrieval sets: several captions per image).

        Deterministic: they depend on (config, seed, scene.index). The first is not `scene.clean_caption`.
        """
        if n < 1:
            raise InputError(f"n={n}: ask for at least one caption.")
        rng = _rng(scene.seed, scene.index, VARIANTS)
        return caption_variants(scene.objects, scene.background, self.config.image_size, n, rng)

    def rng(self, index: int, stream: int) -> np.random.Generator:
        """A random stream of scene `index` for other per-scene draws (metadata, writers): `stream` >= METADATA."""
        if stream < METADATA:
            raise InputError(f"stream {stream} belongs to the scene itself; use METADATA ({METADATA}) or above.")
        return _rng(self.seed, self._check_index(index), stream)

    def range(self, start: int, stop: int) -> SceneRange:
        """The scenes `start..stop-1` as a sequence (len, indexing, iteration): a map-style data set."""
        return SceneRange(self, start, stop)


class SceneRange(Sequence[Scene]):
    """Scenes `start..stop-1` of a generator, as a read-only sequence (wrap it in a torch Dataset as is)."""

    def __init__(self, generator: SceneGenerator, start: int, stop: int) -> None:
        if not (0 <= start <= stop <= MAX_INDEX):
            raise InputError(f"range({start}, {stop}) is invalid: need 0 <= start <= stop.")
        self.generator, self.start, self.stop = generator, int(start), int(stop)

    def __len__(self) -> int:
        return self.stop - self.start

    @overload
    def __getitem__(self, item: int) -> Scene: ...
    @overload
    def __getitem__(self, item: slice) -> SceneRange: ...
    def __getitem__(self, item: int | slice) -> Scene | SceneRange:
        if isinstance(item, slice):
            start, stop, step = item.indices(len(self))
            if step != 1:
                raise InputError("a SceneRange slice must have step 1.")
            return SceneRange(self.generator, self.start + start, self.start + max(start, stop))
        n = len(self)
        if not -n <= item < n:
            raise IndexError(f"scene {item} is outside this range of {n} scenes")
        return self.generator.scene(self.start + (item % n))

    def __iter__(self) -> Iterator[Scene]:
        for index in range(self.start, self.stop):
            yield self.generator.scene(index)

    def __repr__(self) -> str:
        return f"SceneRange({self.start}, {self.stop}, seed={self.generator.seed})"
