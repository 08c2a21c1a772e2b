"""Noisy captions, the kinds web alt-text is full of (ALIGN's premise: scale makes up for this noise).

- `wrong`: a clean caption of a different scene (another layout drawn from the same distribution, whose
  colour-and-shape content differs from this scene's).
- `truncated`: the clean caption cut before its last colour or shape word, so part of the scene is lost,
  sometimes with a trailing ellipsis as CMS-truncated alt-text has.
- `unrelated`: alt-text junk that says nothing about the picture: camera file names (`IMG_2034.JPG`),
  "click here to enlarge", "stock photo 123456", dates, "product image 3 of 7", ...

Whether a scene is noisy is decided by a uniform draw `u < noise` taken first from the scene's noise
stream, so for the same seed the scenes noisy at 30% are also noisy at 60%, and the images never change
with the noise share: a sweep over noise shares compares like with like.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from alignsam.synthetic.captions import CONTENT_WORDS, Describable, clean_caption
from alignsam.synthetic.config import NoiseKind, SceneConfig
from alignsam.synthetic.layout import sample_layout

__all__ = ["junk_caption", "noisy_caption", "truncate_caption"]

_MONTHS: tuple[str, ...] = ("January", "February", "March", "April", "May", "June", "July", "August")
_MONTHS += ("September", "October", "November", "December")
_WORDS = ("sale", "new", "home", "gallery", "summer", "holiday", "product", "banner", "header", "final", "copy")

# Each template's `{}` fields are filled by `_fill` with random digits, words or dates.
_JUNK: tuple[str, ...] = (
    "IMG_{d4}.JPG",
    "IMG_{year}{mm}{dd}_{d6}.jpg",
    "DSC{d5}.JPG",
    "DSC_{d4}.jpg",
    "P{d7}.JPG",
    "image{n}.png",
    "image ({n}).jpg",
    "photo_{d4}.jpeg",
    "Screenshot {year}-{mm}-{dd} at {hh}.{mi}.{ss}.png",
    "untitled-{n}.png",
    "{hex8}.jpg",
    "{word}_{n}_final.jpg",
    "click here to enlarge",
    "click to enlarge",
    "view larger image",
    "no image available",
    "image not found",
    "thumbnail",
    "placeholder",
    "loading...",
    "stock photo {d6}",
    "Stock Photo - {d7}",
    "royalty free stock image {d5}",
    "download free vector {n}",
    "product image {n} of {m}",
    "picture {n} of {m}",
    "slide {n}",
    "page {n}",
    "{word}",
    "{word} {word2}",
    "logo",
    "cover photo",
    "profile picture",
    "advertisement",
    "read more",
    "see more",
    "© {year} all rights reserved",
    "{dd}/{mm}/{year}",
    "{year}-{mm}-{dd}",
    "posted on {month} {day}, {year}",
    "{month} {year}",
    "free shipping on orders over ${n}0",
    "item #{d6}",
    "SKU {d5}-{d3}",
)


def _digits(rng: np.random.Generator, n: int) -> str:
    return "".join(str(d) for d in rng.integers(0, 10, n))


def _fill(template: str, rng: np.random.Generator) -> str:
    n = int(rng.integers(1, 40))
    values = {
        "d3": _digits(rng, 3),
        "d4": _digits(rng, 4),
        "d5": _digits(rng, 5),
        "d6": _digits(rng, 6),
        "d7": _digits(rng, 7),
        "n": str(n),
        "m": str(n + int(rng.integers(0, 12))),
        "year": str(int(rng.integers(2005, 2024))),
        "mm": f"{int(rng.integers(1, 13)):02d}",
        "dd": f"{int(rng.integers(1, 29)):02d}",
        "day": str(int(rng.integers(1, 29))),
        "hh": f"{int(rng.integers(0, 24)):02d}",
        "mi": f"{int(rng.integers(0, 60)):02d}",
        "ss": f"{int(rng.integers(0, 60)):02d}",
        "month": _MONTHS[int(rng.integers(len(_MONTHS)))],
        "hex8": "".join("0123456789abcdef"[int(i)] for i in rng.integers(0, 16, 8)),
        "word": _WORDS[int(rng.integers(len(_WORDS)))],
        "word2": _WORDS[int(rng.integers(len(_WORDS)))],
    }
    return template.format(**values)


def junk_caption(rng: np.random.Generator) -> str:
    """Alt-text that says nothing about the picture ("IMG_2034.JPG", "click here to enlarge", a date)."""
    return _fill(_JUNK[int(rng.integers(len(_JUNK)))], rng)


def truncate_caption(caption: str, rng: np.random.Generator) -> str:
    """`caption` cut somewhere before its last colour or shape word (at least one word is kept)."""
    words = caption.split()
    content = [i for i, w in enumerate(words) if w.strip(",.:;&+").lower() in CONTENT_WORDS]
    last = content[-1] if content else len(words) - 1
    if last < 1:  # nothing to cut before: keep only the first word
        return words[0]
    cut = int(rng.integers(1, last + 1))
    text = " ".join(words[:cut]).rstrip(",:;&+ ")
    if rng.random() < 0.3:
        text += "..." if rng.random() < 0.5 else " ..."
    return text


def _content(objects: Sequence[Describable]) -> Counter[tuple[str, str]]:
    return Counter((o.colour, o.shape) for o in objects)


def _wrong_caption(objects: Sequence[Describable], config: SceneConfig, rng: np.random.Generator) -> str | None:
    """A clean caption of another random layout with different content, or None if none turns up."""
    for _ in range(10):
        decoy = sample_layout(config, rng)
        if decoy and _content(decoy) != _content(objects):
            background = config.backgrounds[int(rng.integers(len(config.backgrounds)))]
            return clean_caption(decoy, background, config.image_size, rng)
    return None


def noisy_caption(
    clean: str, objects: Sequence[Describable], config: SceneConfig, rng: np.random.Generator
) -> tuple[NoiseKind, str]:
    """Decide whether a scene's caption is noisy and make it so: returns (kind, emitted caption).

    Args:
        clean: the scene's clean caption.
        objects: the scene's objects (a `wrong` caption must describe something else).
        config: the scene configuration (`noise`, `noise_kinds`, vocabularies for `wrong`).
        rng: the scene's noise stream; its first draw decides noisy or not (see the module docstring).
    """
    if rng.random() >= config.noise:
        return "none", clean
    kind = config.noise_kinds[int(rng.integers(len(config.noise_kinds)))]
    if kind == "truncated":
        truncated = truncate_caption(clean, rng)
        if truncated != clean:
            return "truncated", truncated
        kind = "unrelated"
    if kind == "wrong":
        wrong = _wrong_caption(objects, config, rng)
        if wrong is not None:
            return "wrong", wrong
        kind = "unrelated"  # a vocabulary too small for a different scene: junk is the honest fallback
    return "unrelated", junk_caption(rng)
