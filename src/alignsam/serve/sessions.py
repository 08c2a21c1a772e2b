"""Image sessions: an uploaded image, its SAM embedding computed once, and what clicks leave behind.

- `ByteLRU`: a least-recently-used map bounded in bytes (each value's size is counted when it is put).
- `SamEmbedding`: the image encoder's output for one image, with the sizes the decoder needs.
- `ImageSession`: one upload: its pixels, the hash of its bytes (identical uploads share one embedding, which
  the embedding cache keeps under that hash), the low-resolution logits of its recent masks (the input of
  the next refinement round) and its automatic masks.
"""

from __future__ import annotations

import collections
import dataclasses
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import numpy as np
import torch

from alignsam.sam.predictor import SamPredictor
from alignsam.tools.masks import Mask

V = TypeVar("V")

KEPT_LOGITS = 16
"""Low-resolution logits kept per session: the masks of the last few rounds can seed the next one."""


class ByteLRU(Generic[V]):
    """A map that forgets its least recently used entries when their sizes add up to more than `budget`.

    A value larger than the whole budget is not kept. Thread-safe (a lock around every operation).
    """

    def __init__(self, budget: int, size_of: Callable[[V], int]) -> None:
        self.budget, self.size_of = budget, size_of
        self._items: collections.OrderedDict[str, tuple[V, int]] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.evictions = 0

    def get(self, key: str) -> V | None:
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return None
            self._items.move_to_end(key)
            return entry[0]

    def put(self, key: str, value: V) -> None:
        """Keep `value` (or count its new size, if it is there already) and evict to fit the budget."""
        size = self.size_of(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.budget:
                return
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.budget:
                _, (_, freed) = self._items.popitem(last=False)
                self._bytes -= freed
                self.evictions += 1

    def pop(self, key: str) -> V | None:
        with self._lock:
            entry = self._items.pop(key, None)
            if entry is None:
                return None
            self._bytes -= entry[1]
            return entry[0]

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def values(self) -> Iterator[V]:
        with self._lock:
            return iter([v for v, _ in self._items.values()])

    @property
    def nbytes(self) -> int:
        return self._bytes


@dataclasses.dataclass(frozen=True)
class SamEmbedding:
    """`features`: `1 x C x h x w` (256 x 64 x 64 for the published models); `original_size` (H, W) of the
    image; `input_size` (h, w) after resizing the longest side to the encoder's size, before padding."""

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size() + 256


def compute_embedding(predictor: SamPredictor, image: np.ndarray, progress: Callable[[float], None]) -> SamEmbedding:
    """The SAM embedding of an `H x W x 3` uint8 RGB image, computed by `predictor` (so its speed options
    apply), reporting the share of the image encoder's blocks done: `progress` is called from this thread.
    The predictor is left without an image."""
    model = predictor.model
    resized = predictor.transform.apply_image(image)
    blocks = list(model.image_encoder.blocks)
    hooks = [
        block.register_forward_hook(lambda *_, k=k: progress((k + 1) / (len(blocks) + 1)))
        for k, block in enumerate(blocks)
    ]
    try:
        pixels = torch.as_tensor(resized, device=model.device).permute(2, 0, 1)[None]
        with torch.no_grad():
            predictor.set_torch_image(pixels, image.shape[:2])
        features = predictor.get_image_embedding()
    finally:
        for hook in hooks:
            hook.remove()
        predictor.reset_image()
    progress(1.0)
    return SamEmbedding(features, (image.shape[0], image.shape[1]), (resized.shape[0], resized.shape[1]))


@dataclasses.dataclass
class ImageSession:
    """One uploaded image. `key` is the SHA-256 of its bytes: the embedding cache's key, shared by identical
    uploads; `logits` maps mask ids to `1 x L x L` low-resolution logits of recent masks."""

    image: np.ndarray
    key: str
    name: str
    id: str = dataclasses.field(default_factory=lambda: secrets.token_urlsafe(12))
    created: float = dataclasses.field(default_factory=time.time)
    logits: collections.OrderedDict[str, np.ndarray] = dataclasses.field(default_factory=collections.OrderedDict)
    automatic: tuple[str, list[Mask]] | None = None  # (the options they were made with, the masks)
    masks_made: int = 0

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]

    def keep_logits(self, logits: np.ndarray) -> str:
        """Remember a mask's low-resolution logits; returns the id a later request names them by."""
        self.masks_made += 1
        mask_id = f"m{self.masks_made}"
        self.logits[mask_id] = logits
        while len(self.logits) > KEPT_LOGITS:
            self.logits.popitem(last=False)
        return mask_id

    @property
    def nbytes(self) -> int:
        held = self.image.nbytes + sum(x.nbytes for x in self.logits.values())
        if self.automatic is not None:
            held += sum(8 * len(m.rle["counts"]) for m in self.automatic[1])  # masks kept as run lengths
        return held + 1024
