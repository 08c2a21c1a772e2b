"""The scene configuration: one frozen, validated dataclass, saved as JSON beside every data set written."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

from alignsam.errors import ConfigError
from alignsam.synthetic.vocab import BACKGROUNDS, COLOURS, DEFAULT_COLOURS, DEFAULT_SHAPES, SHAPES, SIZES

__all__ = ["NOISE_KINDS", "NoiseKind", "SceneConfig"]

NoiseKind = Literal["none", "wrong", "truncated", "unrelated"]
"""What happened to a scene's caption: `none` (clean), `wrong` (describes another scene), `truncated`
(cut before its last content word), `unrelated` (alt-text junk: file names, "click here to enlarge", dates)."""

NOISE_KINDS: tuple[NoiseKind, ...] = ("wrong", "truncated", "unrelated")
"""The noisy kinds, in the order used everywhere (counts, reports)."""

MIN_SIZE, MAX_SIZE = 32, 1024


@dataclass(frozen=True)
class SceneConfig:
    """Everything a scene depends on besides the seed and its index.

    Args:
        image_size: side of the square RGB image, in pixels (32..1024). Shapes get hard to tell apart
            below about 64 px, where small objects are a few pixels wide.
        min_objects, max_objects: the number of objects per scene is drawn uniformly from this range.
            Objects that cannot be placed within the occlusion limit are left out, so a crowded scene
            may hold fewer than drawn.
        shapes, colours, sizes, backgrounds: the vocabularies, names from `vocab.SHAPES`, `vocab.COLOURS`,
            `vocab.SIZES` and `vocab.BACKGROUNDS`. Classes for zero-shot classification are
            "<colour> <shape>" over these.
        repeat: chance that each object after the first copies the shape and colour of one already drawn,
            which gives counts in captions ("two red circles").
        max_rotation: objects are turned by a uniform angle in [-max_rotation, max_rotation] degrees.
        max_occlusion: the largest share of an object's area that objects drawn over it may hide.
            Objects of the same colour never touch, so every object stays separable by colour.
        colour_jitter: each object's RGB is its colour's base plus a uniform offset in +-colour_jitter.
        supersample: edges are anti-aliased by drawing at `supersample` times the size (1 = hard edges,
            where the image equals the object colour exactly on every mask pixel).
        noise: the share of scenes whose emitted caption is noisy (0..1).
        noise_kinds: the noisy kinds to draw from, uniformly (list one twice to weight it double).
    """

    image_size: int = 128
    min_objects: int = 1
    max_objects: int = 4
    shapes: tuple[str, ...] = DEFAULT_SHAPES
    colours: tuple[str, ...] = DEFAULT_COLOURS
    sizes: tuple[str, ...] = tuple(SIZES)
    backgrounds: tuple[str, ...] = BACKGROUNDS
    repeat: float = 0.25
    max_rotation: float = 30.0
    max_occlusion: float = 0.25
    colour_jitter: int = 12
    supersample: int = 2
    noise: float = 0.0
    noise_kinds: tuple[NoiseKind, ...] = NOISE_KINDS

    def __post_init__(self) -> None:
        # Lists from JSON or the command line become tuples, so configs compare and hash by value.
        for name in ("shapes", "colours", "sizes", "backgrounds", "noise_kinds"):
            value = getattr(self, name)
            if isinstance(value, str) or not hasattr(value, "__iter__"):
                raise ConfigError(f"SceneConfig.{name} must be a list of names, got {value!r}.")
            object.__setattr__(self, name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        for name in ("image_size", "min_objects", "max_objects", "colour_jitter", "supersample"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an integer, got {value!r}.")
        need(
            MIN_SIZE <= self.image_size <= MAX_SIZE,
            f"image_size={self.image_size} is out of range; use {MIN_SIZE}..{MAX_SIZE} pixels.",
        )
        need(self.min_objects >= 1, f"min_objects={self.min_objects}; a scene needs at least 1 object.")
        need(
            self.min_objects <= self.max_objects <= 12,
            f"max_objects={self.max_objects} must be between min_objects={self.min_objects} and 12.",
        )
        for name, known in (("shapes", SHAPES), ("colours", COLOURS), ("sizes", SIZES), ("backgrounds", BACKGROUNDS)):
            values = getattr(self, name)
            need(len(values) > 0, f"{name} is empty; give at least one of: {', '.join(known)}.")
            unknown = [v for v in values if v not in known]
            need(not unknown, f"unknown {name} {unknown}; choose from: {', '.join(known)}.")
            need(len(set(values)) == len(values), f"{name} lists a name twice: {list(values)}.")
        kinds = get_args(NoiseKind)[1:]
        unknown_kinds = [k for k in self.noise_kinds if k not in kinds]
        need(not unknown_kinds, f"unknown noise_kinds {unknown_kinds}; choose from: {', '.join(kinds)}.")
        need(
            0.0 <= self.noise <= 1.0 and (self.noise == 0.0 or len(self.noise_kinds) > 0),
            f"noise={self.noise} must be a share in 0..1, with at least one noise kind when above 0.",
        )
        need(0.0 <= self.repeat <= 1.0, f"repeat={self.repeat} must be a probability in 0..1.")
        need(0.0 <= self.max_rotation <= 180.0, f"max_rotation={self.max_rotation} must be 0..180 degrees.")
        need(0.0 <= self.max_occlusion < 1.0, f"max_occlusion={self.max_occlusion} must be in 0..1 (exclusive).")
        need(0 <= self.colour_jitter <= 40, f"colour_jitter={self.colour_jitter} must be 0..40 (RGB levels).")
        need(1 <= self.supersample <= 4, f"supersample={self.supersample} must be 1..4.")

    @property
    def classes(self) -> tuple[str, ...]:
        """The "<colour> <shape>" class names, colour-major: red circle, red square, ..., white crescent."""
        return tuple(f"{c} {s}" for c in self.colours for s in self.shapes)

    def replace(self, **changes: Any) -> SceneConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SceneConfig:
        """The inverse of `to_dict`; unknown keys are an error that names them."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ConfigError(f"unknown SceneConfig fields {unknown}; known fields: {', '.join(sorted(fields))}.")
        return cls(**values)
