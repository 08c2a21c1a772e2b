"""Many images through a model in batches, the way every image tool runs them.

- Images are decoded and preprocessed in worker threads (PIL releases the GIL) while the model runs, in
  input order, with a bounded look-ahead so a folder of a million files does not fill memory.
- A file that cannot be read is reported and skipped (`on_error="skip"`), never fatal to the batch, or stops
  the run (`on_error="raise"`).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import torch

from alignsam.errors import AlignSamError
from alignsam.io.images import ImageInput

OnError = Literal["raise", "skip"]


@dataclasses.dataclass
class BatchedRows:
    """What a model gave for the images that could be read.

    `rows`: one tensor per batch, `B_i x ...`, in input order; `indices`: the input position of each row;
    `errors`: `(position, message)` for each input that was skipped.
    """

    rows: list[torch.Tensor]
    indices: list[int]
    errors: list[tuple[int, str]]


def run_batches(
    images: Iterable[ImageInput],
    preprocess: Callable[[ImageInput], np.ndarray],
    forward: Callable[[torch.Tensor], torch.Tensor],
    *,
    batch_size: int,
    workers: int,
    on_error: OnError = "raise",
    progress: Any = None,
    on_batch: Callable[[torch.Tensor, list[int]], None] | None = None,
) -> BatchedRows:
    """`forward` on the stacked `preprocess`ed images, `batch_size` at a time, in input order.

    Args:
        preprocess: one image -> its `3 x H x W` float32 array; an `AlignSamError` marks the image unreadable.
        forward: pixels `B x 3 x H x W` (float32, on the CPU) -> `B x ...` rows, moved to the CPU.
        progress: a tqdm-like bar (`update(n)`), or None.
        on_batch: called with each batch's rows and input positions as soon as they are ready.
    """
    out = BatchedRows([], [], [])
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        rows = forward(torch.from_numpy(np.stack([p for _, p in pending])))
        positions = [i for i, _ in pending]
        out.rows.append(rows)
        out.indices.extend(positions)
        if on_batch is not None:
            on_batch(rows, positions)
        pending.clear()

    for index, item in preprocessed(images, preprocess, workers=workers, window=2 * batch_size + workers):
        if isinstance(item, AlignSamError):
            if on_error == "raise":
                raise item
            out.errors.append((index, str(item)))
            if progress is not None:
                progress.update(1)
            continue
        pending.append((index, item))
        if len(pending) == batch_size:
            if progress is not None:
                progress.update(len(pending))
            flush()
    if progress is not None:
        progress.update(len(pending))
    flush()
    return out


def preprocessed(
    images: Iterable[ImageInput], preprocess: Callable[[ImageInput], np.ndarray], *, workers: int, window: int
) -> Iterator[tuple[int, np.ndarray | AlignSamError]]:
    """(position, pixels or the error) in input order, computed by `workers` threads at most `window` inputs
    ahead of the consumer."""

    def work(image: ImageInput) -> np.ndarray | AlignSamError:
        try:
            return preprocess(image)
        except AlignSamError as err:  # reported by position; file errors also name the file
            return err

    queue: deque[tuple[int, Future[np.ndarray | AlignSamError]]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="alignsam-decode") as pool:
        for index, image in enumerate(images):
            queue.append((index, pool.submit(work, image)))
            if len(queue) >= window:
                i, fut = queue.popleft()
                yield i, fut.result()
        while queue:
            i, fut = queue.popleft()
            yield i, fut.result()


def progress_bar(total: int | None, unit: str, enabled: bool) -> Any:
    """A tqdm bar on stderr counting `unit`s (disabled: counts silently); use it as a context manager."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=f" {unit}", disable=not enabled, leave=False, dynamic_ncols=True)
