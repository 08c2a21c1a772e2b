"""Clean captions: varied wording that always names every object by colour and shape.

A caption is built in three steps, each drawn from the scene's caption stream:
1. **Groups.** Objects of the same colour and shape form one group, named with a count ("two red circles").
   Each group phrase may carry a size word ("a small red circle") when its objects share one, and a region
   ("... in the top left corner") when they share one.
2. **Body.** Groups are listed in a random or left-to-right order ("a, b and c", "a, b, c", "a with b"),
   or, for two single objects far enough apart, joined by their spatial relation ("a red circle to the left
   of a blue star", "... above ...").
   Directions count only when the centres are more than 15% of the image apart along that axis; closer
   pairs are "next to" each other.
3. **Frame.** One of many frames ("a photo of {x}", "there are {x}", "three shapes: {x}", terse alt-text
   style without articles, ...), an optional background mention ("on a striped background"), and random
   capitalisation and final full stop.
Synonyms (disc, rhombus, plus sign, moon, violet, big, tiny, ...) replace the canonical word now and then;
the canonical words stay the most frequent, so zero-shot prompts such as "a photo of a red circle" read
like the training text. Because every object is named, captions of multi-object scenes are discriminative:
retrieving a scene among 1,000 from its caption is learnable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

__all__ = ["CONTENT_WORDS", "Describable", "caption_variants", "clean_caption"]


class Describable(Protocol):
    """What a caption needs to know about an object (a `Placement` or a rendered `SceneObject`)."""

    @property
    def shape(self) -> str: ...
    @property
    def colour(self) -> str: ...
    @property
    def size(self) -> str: ...
    @property
    def position(self) -> str: ...
    @property
    def center(self) -> tuple[float, float]: ...


# Canonical word first; the others are synonyms drawn with probability SYNONYM.
SHAPE_WORDS: dict[str, tuple[tuple[str, str], ...]] = {
    "circle": (("circle", "circles"), ("disc", "discs"), ("round dot", "round dots")),
    "square": (("square", "squares"), ("square block", "square blocks")),
    "triangle": (("triangle", "triangles"), ("triangular shape", "triangular shapes")),
    "star": (("star", "stars"), ("five-pointed star", "five-pointed stars")),
    "diamond": (("diamond", "diamonds"), ("rhombus", "rhombuses"), ("lozenge", "lozenges")),
    "cross": (("cross", "crosses"), ("plus sign", "plus signs")),
    "heart": (("heart", "hearts"), ("heart shape", "heart shapes")),
    "crescent": (("crescent", "crescents"), ("crescent moon", "crescent moons"), ("moon", "moons")),
    "hexagon": (("hexagon", "hexagons"),),
    "pentagon": (("pentagon", "pentagons"),),
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "bright red"),
    "orange": ("orange",),
    "yellow": ("yellow",),
    "green": ("green",),
    "blue": ("blue",),
    "purple": ("purple", "violet"),
    "pink": ("pink",),
    "white": ("white",),
    "cyan": ("cyan", "turquoise"),
    "brown": ("brown",),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "medium": ("medium", "medium-sized", "mid-sized"),
    "large": ("large", "big", "huge"),
}
POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "top left": ("in the top left corner", "at the top left", "in the upper left"),
    "top": ("at the top", "near the top", "in the upper part"),
    "top right": ("in the top right corner", "at the top right", "in the upper right"),
    "left": ("on the left", "at the left", "on the left side"),
    "centre": ("in the centre", "in the center", "in the middle"),
    "right": ("on the right", "at the right", "on the right side"),
    "bottom left": ("in the bottom left corner", "at the bottom left", "in the lower left"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part"),
    "bottom right": ("in the bottom right corner", "at the bottom right", "in the lower right"),
}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "solid", "flat", "dark"),
    "noise": ("noisy", "mottled", "textured", "blotchy"),
    "stripes": ("striped", "stripy", "lined"),
    "gradient": ("gradient", "shaded", "graduated"),
    "checkerboard": ("checkerboard", "checkered", "chequered"),
}
RELATIONS: dict[str, tuple[str, ...]] = {
    "left": ("to the left of", "left of"),
    "right": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
    "near": ("next to", "beside", "near"),
}
COUNT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COUNT_WORDS += ("ten", "eleven", "twelve")

# Frames around the body `{x}`; `{be}` agrees with the first group, `{n}` is the object count in words.
FRAMES: tuple[str, ...] = (
    "{x}",
    "{x}",
    "{x}",
    "a picture of {x}",
    "an image of {x}",
    "a photo of {x}",
    "a photograph of {x}",
    "an illustration of {x}",
    "a drawing of {x}",
    "a rendering of {x}",
    "clip art of {x}",
    "a simple graphic with {x}",
    "an image showing {x}",
    "this picture shows {x}",
    "there {be} {x}",
    "{x} in the picture",
    "{n}: {x}",
    "geometric shapes: {x}",
)

SYNONYM = 0.15  # chance of a synonym for a shape, colour or size word
SIZE_MENTION = 0.3  # chance a group phrase names its size
POSITION_MENTION = 0.25  # chance a group phrase names its region
BACKGROUND_MENTION = 0.25  # chance the caption names the background texture
RELATION = 0.4  # chance two single objects are joined by their relation (when it is clear)
TERSE = 0.15  # chance of alt-text style without articles ("red circle, blue star")
SPATIAL_ORDER = 0.3  # chance groups are listed left to right instead of randomly
CLEAR_RELATION = 0.15  # centres this far apart (share of the image side) along an axis make a relation clear

CONTENT_WORDS: frozenset[str] = frozenset(
    word
    for table in (COLOUR_WORDS, {k: tuple(w for pair in v for w in pair) for k, v in SHAPE_WORDS.items()})
    for words in table.values()
    for phrase in words
    for word in phrase.split()
    if word not in ("bright", "shape", "shapes", "round")
)
"""Words that name a colour or a shape: a truncated caption is cut before the last of them."""


def _pick(options: Sequence[str], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _word(options: Sequence[str], rng: np.random.Generator) -> str:
    """The canonical word (first), or a synonym with probability SYNONYM."""
    if len(options) > 1 and rng.random() < SYNONYM:
        return options[1 + int(rng.integers(len(options) - 1))]
    return options[0]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _count(n: int, rng: np.random.Generator) -> str:
    return str(n) if rng.random() < 0.1 or n >= len(COUNT_WORDS) else COUNT_WORDS[n]


def _group_phrase(group: Sequence[Describable], rng: np.random.Generator, terse: bool) -> str:
    """ "a small red circle", "two blue stars on the left", "red circle" (terse)."""
    first = group[0]
    words = []
    if len({o.size for o in group}) == 1 and rng.random() < SIZE_MENTION:
        words.append(_word(SIZE_WORDS[first.size], rng))
    words.append(_word(COLOUR_WORDS[first.colour], rng))
    singular, plural = SHAPE_WORDS[first.shape][0]
    if rng.random() < SYNONYM and len(SHAPE_WORDS[first.shape]) > 1:
        singular, plural = SHAPE_WORDS[first.shape][1 + int(rng.integers(len(SHAPE_WORDS[first.shape]) - 1))]
    words.append(singular if len(group) == 1 else plural)
    if len(group) > 1:
        words.insert(0, _count(len(group), rng))
    elif not terse:
        words.insert(0, "one" if rng.random() < 0.05 else _article(words[0]))
    if len({o.position for o in group}) == 1 and rng.random() < POSITION_MENTION:
        words.append(_pick(POSITION_PHRASES[first.position], rng))
    return " ".join(words)


def _relation(a: Describable, b: Describable, image_size: int) -> str:
    """How `a` stands to `b`: "left", "right", "above", "below", or "near" when no direction is clear."""
    dx, dy = b.center[0] - a.center[0], b.center[1] - a.center[1]
    clear = CLEAR_RELATION * image_size
    if abs(dx) >= abs(dy) and abs(dx) > clear:
        return "left" if dx > 0 else "right"
    if abs(dy) > clear:
        return "above" if dy > 0 else "below"
    return "near"


def _join(phrases: Sequence[str], rng: np.random.Generator, terse: bool) -> str:
    if len(phrases) == 1:
        return phrases[0]
    if terse:
        return _pick((", ", " and ", " & ", " + "), rng).join(phrases)
    if len(phrases) == 2:
        return _pick(("{} and {}", "{} and {}", "{} with {}", "{}, {}"), rng).format(*phrases)
    head = ", ".join(phrases[:-1])
    return head + _pick((" and ", ", and ", ", "), rng) + phrases[-1]


def _groups(objects: Sequence[Describable], rng: np.random.Generator) -> list[list[Describable]]:
    groups: dict[tuple[str, str], list[Describable]] = {}
    for obj in objects:
        groups.setdefault((obj.colour, obj.shape), []).append(obj)
    ordered = list(groups.values())
    if rng.random() < SPATIAL_ORDER:
        ordered.sort(key=lambda g: min(o.center[0] for o in g))
    else:
        ordered = [ordered[i] for i in rng.permutation(len(ordered))]
    return ordered


def _background_phrase(background: str, rng: np.random.Generator) -> str:
    adjective = _pick(BACKGROUND_WORDS[background], rng)
    noun = _pick(("background", "backdrop"), rng)
    return _pick(("on a {} {}", "against a {} {}", "with a {} {}"), rng).format(adjective, noun)


def clean_caption(objects: Sequence[Describable], background: str, image_size: int, rng: np.random.Generator) -> str:
    """A caption that names every object in `objects` by colour and shape.

    Args:
        objects: the scene's objects (at least one).
        background: the background kind, mentioned now and then.
        image_size: the image side in pixels (relations need a clear distance).
        rng: the caption stream; the wording depends only on it and the arguments.
    """
    if not objects:
        raise ValueError("a caption needs at least one object")
    terse = rng.random() < TERSE
    groups = _groups(objects, rng)
    relation = None
    if len(groups) == 2 and all(len(g) == 1 for g in groups) and not terse and rng.random() < RELATION:
        relation = _relation(groups[0][0], groups[1][0], image_size)
    phrases = [_group_phrase(g, rng, terse) for g in groups]
    if relation is not None:
        body = f"{phrases[0]} {_pick(RELATIONS[relation], rng)} {phrases[1]}"
    else:
        body = _join(phrases, rng, terse)

    if terse:
        caption = body
    else:
        frame = _pick(FRAMES, rng)
        be = "are" if len(groups[0]) > 1 else "is"
        total = len(objects)
        count = f"{_count(total, rng)} {_pick(('shape', 'object'), rng)}{'s' if total > 1 else ''}"
        caption = frame.format(x=body, be=be, n=count)
    if rng.random() < BACKGROUND_MENTION:
        caption += (" " if rng.random() < 0.7 else ", ") + _background_phrase(background, rng)
    if rng.random() < 0.25:
        caption = caption[0].upper() + caption[1:]
    if rng.random() < 0.3:
        caption += "."
    return caption


def caption_variants(
    objects: Sequence[Describable], background: str, image_size: int, n: int, rng: np.random.Generator
) -> list[str]:
    """`n` clean captions of one scene, all different when the vocabulary allows (retrieval sets want 5)."""
    captions: list[str] = []
    for _ in range(20 * n):
        caption = clean_caption(objects, background, image_size, rng)
        if caption not in captions:
            captions.append(caption)
            if len(captions) == n:
                break
    while len(captions) < n:  # a tiny vocabulary: repeat rather than fail
        captions.append(clean_caption(objects, background, image_size, rng))
    return captions
