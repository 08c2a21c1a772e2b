"""SAM work on cached embeddings: prompts decoded for many images in one batch, scribbles turned into
points, automatic masks that reuse an image's embedding, and masks as PNGs for the page."""

from __future__ import annotations

import base64
import dataclasses
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from alignsam.errors import PromptError
from alignsam.fast import FastPath
from alignsam.io.images import ImageInput
from alignsam.sam.automatic import AmgConfig, SamAutomaticMaskGenerator
from alignsam.sam.modeling.sam import SamModel
from alignsam.sam.predictor import Prediction, SamPredictor
from alignsam.serve.sessions import SamEmbedding
from alignsam.tools.masks import Mask, automatic_masks

SCRIBBLE_POINTS = 6
"""Points a scribble becomes: spread evenly along its length (SAM was trained with a few clicks)."""


@dataclasses.dataclass(frozen=True)
class PromptJob:
    """One decoder call's worth of prompts on one image, in the image's pixels (see `SamPredictor.predict`)."""

    embedding: SamEmbedding
    point_coords: np.ndarray | None  # N x 2
    point_labels: np.ndarray | None  # N
    box: np.ndarray | None  # 4, or K x 4 for K boxes (one mask set each)
    mask_input: np.ndarray | None  # 1 x L x L logits
    multimask: bool

    def prompt(self) -> dict[str, Any]:
        keys = ("point_coords", "point_labels", "box", "mask_input")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


def install(predictor: SamPredictor, embeddings: Sequence[SamEmbedding]) -> None:
    """Make `predictor` hold these images' embeddings, as if `set_images` had computed them."""
    predictor.reset_image()
    predictor.features = torch.cat([e.features for e in embeddings])
    predictor.original_sizes = [e.original_size for e in embeddings]
    predictor.input_sizes = [e.input_size for e in embeddings]
    predictor.is_image_set = True


def decode(predictor: SamPredictor, jobs: Sequence[PromptJob]) -> list[Prediction]:
    """Masks for each job: the jobs of different images in one decoder batch per prompt shape (the
    predictor groups them), one batch for single-mask and one for three-mask jobs."""
    results: list[Prediction | None] = [None] * len(jobs)
    for multimask in (True, False):
        members = [i for i, job in enumerate(jobs) if job.multimask == multimask]
        if not members:
            continue
        install(predictor, [jobs[i].embedding for i in members])
        try:
            out = predictor.predict_batch([jobs[i].prompt() for i in members], multimask_output=multimask)
        except PromptError as err:  # name the prompt of the request, not its place in the batch
            raise PromptError(str(err).split(": ", 1)[-1]) from err
        finally:
            predictor.reset_image()
        for i, prediction in zip(members, out, strict=True):
            results[i] = prediction
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def scribble_points(line: Sequence[Sequence[float]], count: int = SCRIBBLE_POINTS) -> np.ndarray:
    """`count` points spread evenly along a polyline `N x 2`, its ends included (one point for a line of no
    length): a scribble over an object becomes clicks on it."""
    pts = np.asarray(line, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 1:
        return pts
    steps = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    if along[-1] == 0:
        return pts[:1]
    wanted = np.linspace(0.0, along[-1], count)
    return np.stack([np.interp(wanted, along, pts[:, 0]), np.interp(wanted, along, pts[:, 1])], axis=1)


class EmbeddedPredictor(SamPredictor):
    """A predictor that knows one image's embedding: asked to set that very image (the same pixels in
    memory, as the automatic generator does for its whole-image crop), it installs the embedding instead of
    running the encoder. Other images (smaller crops) are encoded as usual."""

    def __init__(self, model: SamModel, image: np.ndarray, embedding: SamEmbedding, fast: FastPath | None) -> None:
        super().__init__(model, fast=fast)
        self._image, self._embedding = image, embedding

    def set_images(
        self, images: Sequence[ImageInput] | np.ndarray, image_format: str = "RGB", batch_size: int = 1
    ) -> None:
        first = images[0] if len(images) == 1 else None
        if isinstance(first, np.ndarray) and image_format == "RGB" and _same_pixels(first, self._image):
            install(self, [self._embedding])
            return
        super().set_images(images, image_format, batch_size)


def _same_pixels(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.shape == b.shape
        and a.strides == b.strides
        and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    )


def automatic(
    model: SamModel, image: np.ndarray, embedding: SamEmbedding, options: dict[str, Any], fast: FastPath | None
) -> list[Mask]:
    """Every mask the automatic generator finds in `image`, largest first, the whole-image pass on the
    cached embedding."""
    generator = SamAutomaticMaskGenerator(model, config=AmgConfig(**options), fast=fast)
    generator.predictor = EmbeddedPredictor(model, image, embedding, fast)
    return automatic_masks(generator, image)


def png_base64(array: np.ndarray) -> str:
    """An `H x W` uint8 (or bool) array as a grayscale PNG, base64 (fast compression: it travels once)."""
    pixels = array.astype(np.uint8) * 255 if array.dtype == bool else array.astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def label_map(masks: Sequence[Mask], size: tuple[int, int]) -> np.ndarray:
    """`H x W` uint8: 0 for no mask, k + 1 where mask k lies (masks later in the list drawn over earlier
    ones: pass them largest first so that small ones stay visible); at most 255 masks."""
    out = np.zeros(size, np.uint8)
    for k, mask in enumerate(masks[:255]):
        out[mask.mask] = k + 1  # one mask decoded at a time
    return out
