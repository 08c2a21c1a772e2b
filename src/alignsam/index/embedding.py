"""The engines that embed the files an index adds. Each yields, batch after batch, the same tuple, so that
one writer (`alignsam.index.core`) commits whatever engine ran:

    (paths, vectors N x D float32 L2-normalised, (width, height) per path, (path, error message) failures)

- `embed_local`: this process, with an `Encoder`: files decoded and preprocessed by worker threads ahead
  of the model (`alignsam.tools.batches.preprocessed`), as every image tool does.
- `embed_with_ray` (`alignsam.index.ray`): a Ray cluster (Ray Data, an actor pool of encoders).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

import numpy as np
import torch
from PIL import Image

from alignsam.errors import AlignSamError, ImageError, MissingDependencyError
from alignsam.tools.batches import preprocessed
from alignsam.tools.encoder import Encoder

Batch = tuple[list[str], np.ndarray, list[tuple[int, int]], list[tuple[str, str]]]
"""(paths, vectors `N x D` float32 L2-normalised, (width, height) per path, (path, error) failures)."""

_TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of the image file as shown (after its EXIF orientation), from its header only."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = im.getexif().get(0x0112)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageError(f"'{path}' is not a readable image: {err}") from err
    return (height, width) if orientation in _TRANSPOSED else (width, height)


def embed_local(paths: Sequence[str], encoder: Encoder, *, batch_size: int | None = None) -> Iterator[Batch]:
    """Embed `paths` in this process, `batch_size` (default: the encoder's) images per forward pass; the
    encoder's `workers` threads decode ahead of the model. Unreadable files are reported in the batch in
    which they would have been."""
    size = batch_size or encoder.batch_size
    sizes: dict[int, tuple[int, int]] = {}
    preprocess = encoder.processor.image_processor.preprocess

    def decode(item: Any) -> np.ndarray:
        index, path = item
        pixels = preprocess(path)  # raises an ImageError naming the file
        sizes[index] = image_size(path)
        return pixels

    pending: list[tuple[int, np.ndarray]] = []
    failures: list[tuple[str, str]] = []

    def flush() -> Batch:
        done = [paths[i] for i, _ in pending]
        if pending:
            vectors = encoder.encode_pixels(torch.from_numpy(np.stack([p for _, p in pending]))).numpy()
        else:
            vectors = np.empty((0, encoder.model.config.projection_dim), np.float32)
        dims = [sizes.pop(i) for i, _ in pending]
        batch = (done, np.ascontiguousarray(vectors, dtype=np.float32), dims, list(failures))
        pending.clear()
        failures.clear()
        return batch

    window = 2 * size + encoder.workers
    items = cast(Iterable[Any], enumerate(paths))  # (position, path): the position keys the image's size
    for index, result in preprocessed(items, decode, workers=encoder.workers, window=window):
        if isinstance(result, AlignSamError):
            failures.append((paths[index], str(result)))
            continue
        pending.append((index, result))
        if len(pending) == size:
            yield flush()
    if pending or failures:
        yield flush()


def embed_remote(
    paths: Sequence[str], model: str, *, address: str | None, workers: int, batch_size: int
) -> Iterator[Batch]:
    """The Ray engine (`alignsam.index.ray.embed_with_ray`), or a clear error where it is not available."""
    try:
        from alignsam.index.ray import embed_with_ray  # type: ignore[import-not-found,unused-ignore]
    except ImportError as err:
        raise MissingDependencyError(
            f"--engine ray is not available in this installation ({err}); use --engine local, or install "
            'alignsam with its Ray part: pip install "alignsam[ray]".'
        ) from err
    batches: Iterator[Batch] = embed_with_ray(paths, model, address=address, workers=workers, batch_size=batch_size)
    return batches
