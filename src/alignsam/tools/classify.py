"""Zero-shot classification: images against labels, with prompt templates and ensembles.

Each label becomes one or more prompts ("a photo of a {}."), their text embeddings are averaged into a
class embedding, and an image's probabilities are the softmax of its cosine similarities times the
model's own logit scale (1 / temperature), exactly as `AlignModel.forward` scores image-text pairs.
Supervised classification among a classifier's own classes (InternImage) is `alignsam.tools.imagenet`;
both give a `ClassifyResult`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from alignsam.io.images import ImageInput
from alignsam.tools.encoder import Encoder, OnError, input_names
from alignsam.validation import check_count


@dataclasses.dataclass
class Prediction:
    """Top-k labels of one image, best first; `scores` are probabilities over all labels."""

    image: str
    labels: list[str]
    scores: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "label": self.labels[0], "labels": self.labels, "scores": self.scores}


@dataclasses.dataclass
class ClassifyResult:
    predictions: list[Prediction]
    errors: list[dict[str, str]]
    probabilities: torch.Tensor  # N_ok x C, rows in the order of `predictions`

    def to_dict(self) -> dict[str, Any]:
        return {
            "predictions": [p.to_dict() for p in self.predictions],
            "errors": self.errors,
            "num_images": len(self.predictions),
            "num_errors": len(self.errors),
        }


def classify(
    encoder: Encoder,
    images: Sequence[ImageInput],
    labels: Sequence[str],
    *,
    templates: str | Sequence[str] = "photo",
    top_k: int = 5,
    on_error: OnError = "skip",
) -> ClassifyResult:
    """Classify `images` (paths, PIL images, arrays) among `labels`.

    Returns the top `top_k` labels per readable image with their probabilities, and the unreadable inputs
    with the reason (`on_error="skip"`), or raises on the first one (`on_error="raise"`).
    """
    check_count(top_k, "top_k")
    classes = encoder.classifier(labels, templates)  # C x D
    embedded = encoder.encode_images(images, on_error=on_error)
    probs = (encoder.logit_scale * embedded.embeds @ classes.T).softmax(dim=-1)  # N_ok x C
    return ranked(probs, labels, input_names(images), embedded.indices, embedded.errors, top_k)


def ranked(
    probs: torch.Tensor,
    labels: Sequence[str],
    names: Sequence[str],
    indices: Sequence[int],
    errors: Sequence[tuple[int, str]],
    top_k: int,
) -> ClassifyResult:
    """The result of a classification: the top `top_k` of `labels` for each row of `probs` (`N_ok x C`, the
    images at input positions `indices`), and the skipped inputs (`errors`: position, reason); `names` names
    every input."""
    top = probs.topk(min(top_k, len(labels)), dim=-1)
    predictions = [
        Prediction(names[i], [labels[j] for j in idx.tolist()], [round(float(s), 6) for s in val])
        for i, idx, val in zip(indices, top.indices, top.values, strict=True)
    ]
    return ClassifyResult(predictions, [{"image": names[i], "error": msg} for i, msg in errors], probs)
