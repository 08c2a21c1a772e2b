"""Words for regions: semantic labels for SAM's masks (what Semantic Segment Anything does) and masks for
words or for a region of another image (what SEEM and Grounded-SAM offer), with ALIGN.

Both score a mask by the ALIGN embedding of its *prepared crop*: a square around the mask's box, enlarged
by `context` (1.2 = 20% margin, as SSA does for CLIP), with the pixels outside the mask handled so that
the object dominates:

- "gray" (default): replaced by neutral gray (128), so only the object's own pixels speak;
- "blur": blurred, keeping a hint of the surroundings;
- "keep": left as they are (plain box crop).

The square is taken so that ALIGN's preprocessing, which resizes to a square, does not distort the shape;
parts of the square outside the image are filled like the background.

When no style is given, the encoder's model decides (`Encoder.crop_defaults`, from a `regions.json` beside
its weights), else `CropStyle()`: a model does best on crops that look like its training images, and the
bundled `demo` saw small objects in wide scenes (with context 1.2 it names 6% of the held-out shapes right,
with 3.0 all of them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageFilter

from alignsam.errors import InputError
from alignsam.tools.cache import cached_classifier
from alignsam.tools.encoder import Encoder
from alignsam.tools.masks import Mask
from alignsam.tools.vocabulary import model_tags
from alignsam.validation import check_count

Background = Literal["gray", "blur", "keep"]

# Groups of the built-in vocabulary that name things a mask can cover (objects and stuff), the default
# vocabulary for labelling masks; colours, actions, styles and the like describe whole images instead.
MASK_GROUPS = (
    "people", "body", "clothing", "personal-care", "animals", "plants", "food", "drinks", "kitchenware",
    "household", "furniture", "electronics", "tools", "vehicles", "instruments", "sports-equipment", "toys",
    "office-supplies", "containers", "buildings", "street-objects", "landscapes", "signs",
)  # fmt: skip
GRAY = 128


MAX_CONTEXT = 100.0
"""The widest crop around a mask, as a multiple of its box (a crop is capped in pixels anyway; beyond this
the mask is a speck in a crop of background)."""


@dataclasses.dataclass(frozen=True)
class CropStyle:
    """How a mask becomes the image ALIGN sees."""

    context: float = 1.2
    background: Background = "gray"

    def __post_init__(self) -> None:
        if not isinstance(self.context, int | float) or isinstance(self.context, bool):
            raise InputError(f"context must be a number, got {self.context!r}.")
        if not 1.0 <= self.context <= MAX_CONTEXT:  # NaN fails too
            raise InputError(
                f"context must be a finite number from 1.0 (the box itself) to {MAX_CONTEXT:g}, got {self.context}."
            )
        if self.background not in ("gray", "blur", "keep"):
            raise InputError(f"background must be gray, blur or keep, not {self.background!r}.")


def crop_style(encoder: Encoder, context: float | None = None, background: Background | None = None) -> CropStyle:
    """The crop style to use with `encoder`: the given values, else the model's recommendation, else the
    defaults of `CropStyle`."""
    given = {k: v for k, v in (("context", context), ("background", background)) if v is not None}
    return CropStyle(**{**encoder.crop_defaults, **given})


MAX_CROP_SIDE = 2048
"""Crops larger than this are made at this size (the model sees a few hundred pixels anyway), so that a mask
covering a large image costs a bounded crop, not a copy of the image several times over."""


def prepare_crop(image: np.ndarray, mask: np.ndarray, style: CropStyle | None = None) -> Image.Image:
    """The crop of `image` (`H x W x 3` uint8) that represents `mask` (`H x W` bool); see the module doc.
    Crops whose square side exceeds `MAX_CROP_SIDE` are scaled down to it as they are made."""
    style = style or CropStyle()
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if cols.size == 0:
        raise InputError("Cannot crop an empty mask.")
    cx, cy = float(cols[0] + cols[-1] + 1) / 2, float(rows[0] + rows[-1] + 1) / 2
    side = max(int(np.ceil(max(cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1) * style.context)), 2)
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    h, w = mask.shape
    # the square, with out-of-image parts filled; indices into the image clipped to its extent
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    pixels, inside = image[sy0:sy1, sx0:sx1], mask[sy0:sy1, sx0:sx1]
    scale = min(1.0, MAX_CROP_SIDE / side)
    if scale < 1.0:  # made at the capped size: the image part resampled, the mask part nearest
        out = (max(1, round((sx1 - sx0) * scale)), max(1, round((sy1 - sy0) * scale)))
        pixels = np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).resize(out, Image.Resampling.BILINEAR))
        inside = np.asarray(Image.fromarray(inside).resize(out, Image.Resampling.NEAREST))
        side = MAX_CROP_SIDE
        ox, oy = min(round((sx0 - x0) * scale), side - out[0]), min(round((sy0 - y0) * scale), side - out[1])
    else:
        ox, oy = sx0 - x0, sy0 - y0
    crop = np.full((side, side, 3), GRAY, np.uint8)
    covered = np.zeros((side, side), bool)
    crop[oy : oy + pixels.shape[0], ox : ox + pixels.shape[1]] = pixels
    covered[oy : oy + inside.shape[0], ox : ox + inside.shape[1]] = inside
    if style.background == "gray":
        crop[~covered] = GRAY
    elif style.background == "blur":
        blurred = np.asarray(Image.fromarray(crop).filter(ImageFilter.GaussianBlur(radius=max(side / 20, 1.0))))
        crop = np.where(covered[..., None], crop, blurred)
    return Image.fromarray(crop)


def embed_masks(encoder: Encoder, image: np.ndarray, masks: Sequence[Mask], style: CropStyle) -> torch.Tensor:
    """L2-normalised ALIGN embeddings of the masks' prepared crops, `M x D`. The crops are made one at a
    time as the encoder takes them (a few ahead), each mask decoded only for its own crop."""
    if not masks:
        return torch.empty(0, encoder.model.config.projection_dim)
    crops = (prepare_crop(image, m.mask, style) for m in masks)
    return encoder.encode_images(crops, on_error="raise", total=len(masks)).embeds


def mask_vocabulary(encoder: Encoder, vocab: Sequence[str] | None = None) -> list[str]:
    """`vocab`, or when None the words masks are labelled with: the model's own vocabulary (its
    `vocabulary.json`), else the `MASK_GROUPS` of the built-in one."""
    return model_tags(encoder.vocabulary, fallback=MASK_GROUPS) if vocab is None else list(vocab)


def label_masks(
    encoder: Encoder,
    image: np.ndarray,
    masks: Sequence[Mask],
    vocab: Sequence[str] | None = None,
    *,
    templates: str | Sequence[str] = "photo",
    top_k: int = 3,
    style: CropStyle | None = None,
) -> list[dict[str, Any]]:
    """For each mask, its `class_name` and `class_proposals` (top-k labels with probabilities among
    `vocab`, from the model's own logit scale), in SA-1B annotation records. `vocab` None: the model's own
    vocabulary (its `vocabulary.json`), else the `MASK_GROUPS` of the built-in one."""
    vocab = mask_vocabulary(encoder, vocab)
    if len(vocab) < 1:
        raise InputError("The vocabulary of classes is empty.")
    check_count(top_k, "top_k")
    style = style or crop_style(encoder)
    classes = cached_classifier(encoder, list(vocab), templates)  # C x D
    embeds = embed_masks(encoder, image, masks, style)  # M x D
    probs = (encoder.logit_scale * embeds @ classes.T).softmax(dim=-1)
    k = min(top_k, len(vocab))
    out = []
    for i, (mask, row) in enumerate(zip(masks, probs, strict=True)):
        top = row.topk(k)
        record = mask.annotation(i)
        record["class_name"] = vocab[int(top.indices[0])]
        record["class_proposals"] = [
            {"class_name": vocab[int(j)], "score": round(float(s), 6)}
            for s, j in zip(top.values, top.indices, strict=True)
        ]
        out.append(record)
    return out


def region_query(
    encoder: Encoder, image: np.ndarray, box: Sequence[float], style: CropStyle | None = None
) -> torch.Tensor:
    """The embedding of a box `(x0, y0, x1, y1)` of a reference image, used as a query (`D`)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise InputError(f"The reference box {list(box)} is not a non-empty box inside the {w}x{h} image.")
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    context = (style or crop_style(encoder)).context
    keep = CropStyle(context=context, background="keep")  # the whole box is the region
    return embed_masks(encoder, image, [Mask(mask, 1.0)], keep)[0]


@dataclasses.dataclass
class Query:
    """What `find` looks for: a normalised embedding (`D`), and for a text the words it must beat on a crop
    to count as found there (`contrast`, `C x D` normalised class embeddings; None for a region query)."""

    embedding: torch.Tensor
    contrast: torch.Tensor | None = None


def text_query(
    encoder: Encoder, text: str, templates: str | Sequence[str] = "photo", vocab: Sequence[str] | None = None
) -> Query:
    """A text query, prompt-ensembled with `templates`, contrasted with the words of `vocab` (None: the words
    masks are labelled with, `mask_vocabulary`) other than the text itself."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("The text to find is empty.")
    embedding = encoder.classifier([text], templates)[0]
    own = " ".join(text.lower().split())
    words = [w for w in mask_vocabulary(encoder, vocab) if " ".join(w.lower().split()) != own]
    contrast = cached_classifier(encoder, words, templates) if words else None
    return Query(embedding, contrast)


def find(
    encoder: Encoder,
    image: np.ndarray,
    masks: Sequence[Mask],
    query: Query | torch.Tensor,
    *,
    top_k: int = 3,
    style: CropStyle | None = None,
) -> list[dict[str, Any]]:
    """The masks that best match `query` (a `Query`, or a normalised embedding `D` such as a region's), best
    first. Each record is the mask's SA-1B annotation with `score` (cosine similarity), `probability` and
    `matches` (whether the mask shows what is looked for):

    - a text query (with its contrast words): `probability` is the text's probability among itself and the
      contrast words on the mask's crop (zero-shot classification with the model's logit scale), and the
      mask `matches` when the text wins; a mask of something else loses to that thing's word;
    - a region query: `probability` is a softmax over every candidate mask and one more candidate, nothing
      (a plain gray crop), and the mask `matches` when it is closer to the region than nothing is.

    So a single bad candidate is not reported as certain (the old softmax over candidates alone gave it 1.0).
    """
    check_count(top_k, "top_k")
    if not masks:
        return []
    if isinstance(query, torch.Tensor):
        query = Query(query)
    style = style or crop_style(encoder)
    embeds = embed_masks(encoder, image, masks, style)
    cosine = embeds @ query.embedding  # M
    scale = encoder.logit_scale
    if query.contrast is not None:
        logits = scale * torch.cat([cosine[:, None], embeds @ query.contrast.T], dim=1)  # M x (1 + C)
        probs = logits.softmax(dim=1)[:, 0]
        matches = logits[:, 0] >= logits[:, 1:].max(dim=1).values
    else:
        empty = encoder.encode_images([empty_crop()], on_error="raise").embeds[0] @ query.embedding
        probs = (scale * torch.cat([cosine, empty[None]])).softmax(dim=0)[:-1]
        matches = cosine > empty
    order = sorted(range(len(masks)), key=lambda i: (-float(cosine[i]), -masks[i].predicted_iou))[:top_k]
    out = []
    for rank, i in enumerate(order):
        record = masks[i].annotation(i)
        record.update(
            {
                "rank": rank,
                "score": round(float(cosine[i]), 6),
                "probability": round(float(probs[i]), 6),
                "matches": bool(matches[i]),
            }
        )
        out.append(record)
    return out


def empty_crop() -> Image.Image:
    """A crop with nothing in it: plain gray, as the default style fills everything outside a mask."""
    return Image.new("RGB", (64, 64), (GRAY, GRAY, GRAY))
