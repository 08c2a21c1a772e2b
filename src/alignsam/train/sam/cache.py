"""Image embeddings computed once: the cheap fine-tuning recipe (frozen image encoder, trained decoder).

With the image encoder frozen, an image's embedding never changes, and the encoder is nearly all of SAM's
cost (vit_b: about 0.5 TMAC per image against a few GMAC for the prompt encoder and decoder). The cache
computes every training image's embedding once and keeps it in memory or in a memory-mapped file, so
every later epoch costs only the decoder.

Embeddings are stored as float16 (`C x h x w`: 2 MB per image for the 1024 px models, 64 kB for the demo).
The disk cache lives in `folder/embeddings-<key>.npy` with a `-done.npy` flag per image; the key hashes
the encoder's weights, the model's image size and the data set, so a later run on the same data and
weights reuses it and an interrupted fill continues where it stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignsam.sam.modeling.sam import SamModel
from alignsam.train.sam.data import Dataset, SampleError
from alignsam.train.sam.prepare import prepare

BAD = 2  # flag of an image that could not be read


def cache_key(model: SamModel, data: Dataset) -> str:
    """A hash of the image encoder's weights, the preprocessing settings and the data set's identity."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.image_encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    settings = {k: v for k, v in model.config.to_dict().items() if k not in ("prompt_encoder", "mask_decoder")}
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(f"{data.describe()}|{len(data)}".encode())
    return h.hexdigest()[:16]


class EmbeddingCache:
    """`num` embeddings of shape `C x h x w`, in memory (`folder=None`) or in a memory-mapped file."""

    def __init__(self, num: int, shape: tuple[int, int, int], folder: Path | None = None, key: str = "") -> None:
        self.num, self.shape = num, shape
        self.path: Path | None = None
        if folder is None:
            self.values: np.ndarray = np.zeros((num, *shape), np.float16)
            self.done: np.ndarray = np.zeros(num, np.uint8)
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"embeddings-{key}.npy"
        done_path = folder / f"embeddings-{key}-done.npy"
        mode = "r+" if self.path.is_file() and done_path.is_file() else "w+"
        self.values = np.lib.format.open_memmap(self.path, mode=mode, dtype=np.float16, shape=(num, *shape))
        self.done = np.lib.format.open_memmap(done_path, mode=mode, dtype=np.uint8, shape=(num,))

    def missing(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.done == 0)]

    def is_bad(self, index: int) -> bool:
        return bool(self.done[index] == BAD)

    @torch.no_grad()
    def fill(
        self,
        model: SamModel,
        data: Dataset,
        *,
        batch_size: int = 8,
        autocast: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
        progress: bool = True,
    ) -> dict[str, int]:
        """Compute the embeddings not yet cached; returns the unreadable samples, counted by reason."""
        todo = self.missing()
        skipped: dict[str, int] = {}
        if not todo:
            return skipped
        from tqdm.auto import tqdm

        size = model.config.image_size
        bar = tqdm(total=len(todo), desc="embedding cache", unit="img", disable=not progress, leave=False)
        encoder_mode = model.image_encoder.training
        model.image_encoder.eval()
        for start in range(0, len(todo), batch_size):
            indices, pixels = [], []
            for i in todo[start : start + batch_size]:
                try:
                    sample = data.load(i)
                except SampleError as err:
                    skipped[err.reason] = skipped.get(err.reason, 0) + 1
                    self.done[i] = BAD
                    continue
                item = prepare(sample, i, size, model.config.mask_input_size, max_masks=1)
                assert item.image is not None
                pixels.append(model.preprocess(item.image[None].float()))
                indices.append(i)
            if pixels:
                with autocast() if autocast else contextlib.nullcontext():
                    out = model.image_encoder(torch.cat(pixels))
                self.values[indices] = out.float().cpu().numpy().astype(np.float16)
                self.done[indices] = 1
            bar.update(len(todo[start : start + batch_size]))
        bar.close()
        model.image_encoder.train(encoder_mode)
        if isinstance(self.values, np.memmap):
            self.values.flush()
            self.done.flush()  # type: ignore[attr-defined]
        return skipped

    def get(self, indices: list[int]) -> torch.Tensor:
        """The embeddings of `indices`: `B x C x h x w` float32."""
        return torch.from_numpy(np.asarray(self.values[indices], dtype=np.float32))
