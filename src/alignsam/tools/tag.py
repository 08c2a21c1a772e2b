"""Zero-shot image tagging (what Recognize Anything does, here with ALIGN and a tag vocabulary).

How many tags an image gets: each image's cosine similarities to every tag of the vocabulary are turned
into z-scores over that vocabulary (`(s - mean) / std`, per image). A tag is kept when its z-score is at
least `threshold`: it stands out from the image's similarity to everything else, which adapts to how
similar the image is to the vocabulary overall and needs no per-model calibration of raw cosines. The
kept tags are sorted by score and capped at `max_tags`; at least `min_tags` are always returned (the best
ones, even below the threshold).

Tune the threshold on a few images whose tags you know with `tune_threshold` (or `alignsam tag --tune`):
it picks the threshold with the best micro-averaged F1 and reports the precision/recall curve.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from alignsam.errors import InputError
from alignsam.io.images import ImageInput
from alignsam.tools.cache import cached_classifier
from alignsam.tools.encoder import Encoder, OnError, input_names
from alignsam.tools.vocabulary import model_tags
from alignsam.validation import check_count, check_number


@dataclasses.dataclass(frozen=True)
class TagPolicy:
    """When a tag is kept: z-score over the vocabulary >= `threshold`, at most `max_tags`, at least
    `min_tags`."""

    threshold: float = 3.0
    max_tags: int = 10
    min_tags: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", check_number(self.threshold, "threshold"))
        object.__setattr__(self, "max_tags", check_count(self.max_tags, "max_tags"))
        object.__setattr__(self, "min_tags", check_count(self.min_tags, "min_tags", 0))
        if self.max_tags < 1 or self.min_tags < 0 or self.min_tags > self.max_tags:
            raise InputError(f"Need 0 <= min_tags <= max_tags and max_tags >= 1, got {self.min_tags}, {self.max_tags}.")


def check_truth(truth: object) -> dict[str, list[str]]:
    """`{image path: [true tags]}` as read from a tuning file, or an `InputError` naming the bad entry.

    Why: a hand-written JSON file can nest lists (`{"a.jpg": [["cat"]]}`) or give one string for a list,
    which failed deep inside as an unhashable-type TypeError or was read letter by letter."""
    if not isinstance(truth, Mapping):
        raise InputError(f"The true tags must be an object {{image path: [tags]}}, not {type(truth).__name__}.")
    if not truth:
        raise InputError("No labelled images to tune on.")
    out: dict[str, list[str]] = {}
    for path, tags in truth.items():
        if not isinstance(path, str) or not path:
            raise InputError(f"An image path must be a non-empty string, got {path!r:.100}.")
        if not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags):
            raise InputError(f"The true tags of '{path:.200}' must be a list of strings, got {tags!r:.100}.")
        out[path] = list(tags)
    return out


def zscores(cosine: torch.Tensor) -> torch.Tensor:
    """Per-row z-scores of an `N x T` similarity matrix."""
    return (cosine - cosine.mean(1, keepdim=True)) / cosine.std(1, keepdim=True).clamp_min(1e-8)


def _tag(name: str, cosine: float, z: float) -> dict[str, Any]:
    return {"tag": name, "score": round(cosine, 5), "z": round(z, 3)}


def select_tags(cosine: torch.Tensor, vocab: Sequence[str], policy: TagPolicy) -> list[list[dict[str, Any]]]:
    """The kept tags of each row of an `N x T` cosine matrix, best first, with cosine and z-score."""
    z = zscores(cosine)
    out = []
    for cos_row, z_row in zip(cosine, z, strict=True):
        order = z_row.argsort(descending=True)[: policy.max_tags].tolist()
        keep = [j for k, j in enumerate(order) if z_row[j] >= policy.threshold or k < policy.min_tags]
        out.append([_tag(vocab[j], float(cos_row[j]), float(z_row[j])) for j in keep])
    return out


def tag(
    encoder: Encoder,
    images: Sequence[ImageInput],
    vocab: Sequence[str] | None = None,
    *,
    policy: TagPolicy | None = None,
    templates: str | Sequence[str] = "photo",
    on_error: OnError = "skip",
) -> dict[str, Any]:
    """Tag each image with the vocabulary (None: the model's own `vocabulary.json`, else the built-in one);
    unreadable inputs are reported in `errors`."""
    vocab = model_tags(encoder.vocabulary) if vocab is None else vocab
    if len(vocab) < 2:
        raise InputError("A tag vocabulary needs at least two tags (z-scores compare tags with each other).")
    policy = policy or TagPolicy()
    classes = cached_classifier(encoder, list(vocab), templates)  # T x D
    done = encoder.encode_images(images, on_error=on_error)
    names = input_names(images)
    tags = select_tags(done.embeds @ classes.T, vocab, policy)
    return {
        "results": [{"image": names[i], "tags": t} for i, t in zip(done.indices, tags, strict=True)],
        "errors": [{"image": names[i], "error": msg} for i, msg in done.errors],
        "policy": dataclasses.asdict(policy),
        "vocabulary_size": len(vocab),
    }


def tune_threshold(
    encoder: Encoder,
    truth: Mapping[str, Sequence[str]],
    vocab: Sequence[str] | None = None,
    *,
    templates: str | Sequence[str] = "photo",
    max_tags: int = 50,
    thresholds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Pick the z-score threshold with the best micro F1 on images whose tags are known.

    truth: image path -> its true tags (each must be in `vocab`; None: the vocabulary `tag` would use).
    """
    vocab = model_tags(encoder.vocabulary) if vocab is None else vocab
    truth = check_truth(truth)
    grid = [check_number(t, "threshold") for t in thresholds] if thresholds else None
    index = {t: j for j, t in enumerate(vocab)}
    missing = sorted({t for tags in truth.values() for t in tags if t not in index})
    if missing:
        raise InputError(f"True tags not in the vocabulary: {missing[:10]}.")
    paths = list(truth)
    classes = cached_classifier(encoder, list(vocab), templates)
    done = encoder.encode_images(paths, on_error="raise")
    z = zscores(done.embeds @ classes.T)  # N x T
    target = torch.zeros_like(z, dtype=torch.bool)
    for row, path in enumerate(paths):
        target[row, [index[t] for t in truth[path]]] = True
    rank = z.argsort(1, descending=True).argsort(1)  # rank of each tag within its image
    grid = grid or [round(0.25 * k, 2) for k in range(4, 33)]  # 1.0 .. 8.0
    curve = []
    for thr in grid:
        pred = (z >= thr) & (rank < max_tags)
        tp = int((pred & target).sum())
        precision = tp / max(int(pred.sum()), 1)
        recall = tp / max(int(target.sum()), 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        curve.append(
            {"threshold": thr, "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}
        )
    best = max(curve, key=lambda c: (c["f1"], c["threshold"]))
    return {"best": best, "curve": curve, "num_images": len(paths)}
