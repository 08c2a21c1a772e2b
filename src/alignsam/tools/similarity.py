"""Similarity between any two sets of images and texts, and composed queries.

An item is a text, an image, or a composition of them, written as a string:

    "a red car"                      a text
    "photos/cat.jpg"                 an image (an item naming an existing file is an image)
    "photos/"                        every image in a folder (one item each)
    "text:photos/cat.jpg"            a text that happens to look like a path (prefixes force the kind)
    "image:cat.jpg + text:in snow"   an image plus a text (ALIGN's image+text queries)
    "text:king - text:man + 0.5*text:woman"   weighted sums and differences

A composition is the L2-normalised weighted sum of the normalised embeddings of its terms. Operators must
have spaces around them (" + ", " - "), so hyphens inside words and paths are left alone.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from typing import Any, Literal

import torch

from alignsam.errors import InputError
from alignsam.io.images import ImageInput
from alignsam.tools.encoder import Encoder, OnError
from alignsam.tools.files import list_images

Kind = Literal["text", "image"]
_SPLIT = re.compile(r"\s([+-])\s")
_WEIGHT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*\*\s*(.+)$", re.S)


@dataclasses.dataclass(frozen=True)
class Term:
    weight: float
    kind: Kind
    value: Any  # a text, or an image input (path, PIL image, array)


@dataclasses.dataclass(frozen=True)
class Item:
    """One row or column of a similarity matrix: a text, an image, or a weighted composition."""

    name: str
    terms: tuple[Term, ...]

    @classmethod
    def text(cls, text: str) -> Item:
        return cls(text, (Term(1.0, "text", text),))

    @classmethod
    def image(cls, image: ImageInput, name: str | None = None) -> Item:
        label = name or (os.fspath(image) if isinstance(image, str | os.PathLike) else "image")
        return cls(label, (Term(1.0, "image", image),))


def parse_items(specs: Sequence[str], *, texts_only: bool = False) -> list[Item]:
    """Items from command-line strings (see the module docstring); folders expand to their images.

    texts_only: every term is a text, whatever it looks like ("image:" terms are refused); for callers
    that must not read files named by their users, such as the service.
    """
    items: list[Item] = []
    for spec in specs:
        if not spec.strip():
            raise InputError("An empty item was given; pass a text, an image path, or a composition.")
        parts = _SPLIT.split(spec)
        if len(parts) == 1:
            kind, value = _kind(spec, texts_only)
            if kind == "image" and _is_dir(value):
                items.extend(Item.image(p) for p in list_images([value]).files)
            else:
                items.append(Item(spec, (Term(1.0, kind, value),)))
            continue
        terms, sign = [], 1.0
        for i, part in enumerate(parts):
            if i % 2:
                sign = 1.0 if part == "+" else -1.0
                continue
            weight, body = 1.0, part
            m = _WEIGHT.match(part)
            if m:
                weight, body = float(m[1]), m[2]
            kind, value = _kind(body.strip(), texts_only)
            if kind == "image" and _is_dir(value):
                raise InputError(f"A folder cannot be part of a composed query: {spec!r}.")
            terms.append(Term(sign * weight, kind, value))
        items.append(Item(spec, tuple(terms)))
    if not items:
        raise InputError("No items to compare (empty list, or folders without images).")
    return items


def _kind(body: str, texts_only: bool = False) -> tuple[Kind, str]:
    if body.startswith("text:"):
        return "text", body[5:]
    if texts_only:
        if body.startswith("image:"):
            raise InputError(f"Image terms are not allowed here: {body!r}.")
        return "text", body
    if body.startswith("image:"):
        path = body[6:]
        if not _exists(path):
            raise InputError(f"Image '{path:.300}' does not exist.")
        return "image", path
    return ("image", body) if _exists(body) else ("text", body)


def _exists(path: str) -> bool:
    """Whether `path` names a file or folder; False for a text that cannot be a path at all.

    Why: `Path.exists` raises for a 256-byte text (`File name too long`) or one holding a NUL, and such a
    text is a text."""
    try:
        return os.path.exists(path)
    except (OSError, ValueError):
        return False


def _is_dir(path: str) -> bool:
    try:
        return os.path.isdir(path)
    except (OSError, ValueError):
        return False


@dataclasses.dataclass
class Embedded:
    names: list[str]
    embeds: torch.Tensor  # N x D, L2-normalised
    errors: list[dict[str, str]]


def embed_items(encoder: Encoder, items: Sequence[Item], on_error: OnError = "skip") -> Embedded:
    """Embed every item, sharing the work: each distinct text and image is embedded once."""
    texts = sorted({t.value for it in items for t in it.terms if t.kind == "text"})
    images: list[Any] = []
    image_index: dict[int, int] = {}
    for it in items:
        for t in it.terms:
            if t.kind == "image" and id(t.value) not in image_index:
                image_index[id(t.value)] = len(images)
                images.append(t.value)
    text_emb = dict(zip(texts, encoder.encode_texts(texts), strict=True)) if texts else {}
    done = encoder.encode_images(images, on_error=on_error) if images else None
    image_emb: dict[int, torch.Tensor] = {}
    bad: dict[int, str] = {}
    if done is not None:
        image_emb = dict(zip(done.indices, done.embeds, strict=True))
        bad = dict(done.errors)
    names, rows, errors = [], [], []
    for it in items:
        failed = [
            bad[image_index[id(t.value)]] for t in it.terms if t.kind == "image" and image_index[id(t.value)] in bad
        ]
        if failed:
            errors.append({"item": it.name, "error": failed[0]})
            continue
        vec = sum(
            t.weight * (text_emb[t.value] if t.kind == "text" else image_emb[image_index[id(t.value)]])
            for t in it.terms
        )
        assert isinstance(vec, torch.Tensor)
        if vec.norm() < 1e-6:
            raise InputError(f"The composed query {it.name!r} cancels out to nothing.")
        names.append(it.name)
        rows.append(torch.nn.functional.normalize(vec, dim=0))
    dim = encoder.model.config.projection_dim
    return Embedded(names, torch.stack(rows) if rows else torch.empty(0, dim), errors)


@dataclasses.dataclass
class SimilarityResult:
    rows: list[str]
    columns: list[str]
    cosine: torch.Tensor  # R x C
    logit_scale: float
    errors: list[dict[str, str]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "columns": self.columns,
            "cosine": [[round(float(v), 6) for v in row] for row in self.cosine],
            "logits": [[round(float(v) * self.logit_scale, 5) for v in row] for row in self.cosine],
            "best_column": [self.columns[int(j)] for j in self.cosine.argmax(1)] if self.columns else [],
            "logit_scale": self.logit_scale,
            "errors": self.errors,
        }


def similarity(
    encoder: Encoder, rows: Sequence[Item], columns: Sequence[Item], *, on_error: OnError = "skip"
) -> SimilarityResult:
    """Cosine similarity of every row item against every column item (and the model's logits)."""
    a = embed_items(encoder, rows, on_error)
    b = embed_items(encoder, columns, on_error)
    return SimilarityResult(a.names, b.names, a.embeds @ b.embeds.T, encoder.logit_scale, a.errors + b.errors)
