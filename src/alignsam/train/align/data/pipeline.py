"""From a source to training batches, in an order that depends only on the seed, and resumes exactly.

Each process runs `workers` DataLoader workers; each worker runs one *stream*: an infinite sequence of
epochs, each epoch being `source.stream(epoch, ...)` -> cheap filters (metadata, captions) -> a seeded
shuffle buffer (shards only; tables are permuted whole) -> decode + augment -> tokenise + batch.
Batches never mix streams and are always full (a bad sample is replaced by the next one), which keeps the
global batch the same size on every step and every rank.

Exact resumption. A batch carries its stream's *position*: the epoch and the number of samples the shuffle
buffer had emitted when the batch was complete, plus the counters. Everything before decoding is cheap and
deterministic, so a resumed stream replays its epoch up to that position without decoding a single image,
and continues with the very next sample. Augmentation draws from a generator seeded by (seed, epoch, stream,
sample number), not from a stateful one, so it replays too. The DataLoader hands out batches round-robin
from its workers, so after `n` batches the next one is due from worker `n mod workers`: the resumed loader
*rotates* its workers' stream ids by that amount.

Counters. Problems found before the shuffle buffer (reading errors, filters) are recounted by the replay,
so a position stores only the counts up to the start of its epoch plus those found while decoding; the
totals after a resume are the totals of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from alignsam.align.processing import AlignTokenizer
from alignsam.errors import AlignSamError, InputError
from alignsam.train.align.data.filters import SampleFilter, merge_counts
from alignsam.train.align.data.sources import RawSample, Source
from alignsam.train.align.data.transforms import TrainTransform
from alignsam.validation import check_count


@dataclasses.dataclass(frozen=True)
class StreamPosition:
    """Where one stream stands: the next sample is number `index` (after the shuffle) of `epoch`.

    `carried` holds the counters of the epochs before this one plus this epoch's decoding problems.
    """

    epoch: int = 0
    index: int = 0
    carried: tuple[tuple[str, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "carried": dict(self.carried)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamPosition:
        return cls(int(data["epoch"]), int(data["index"]), tuple(sorted(data.get("carried", {}).items())))


@dataclasses.dataclass(frozen=True)
class LoaderState:
    """One process's data position: every stream's position, and which worker runs which stream."""

    workers: int
    rotation: int = 0
    positions: tuple[StreamPosition, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"workers": self.workers, "rotation": self.rotation, "positions": [p.to_dict() for p in self.positions]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoaderState:
        positions = tuple(StreamPosition.from_dict(p) for p in data["positions"])
        return cls(int(data["workers"]), int(data["rotation"]), positions)


def _shuffled(items: Iterator[RawSample], size: int, rng: np.random.Generator) -> Iterator[RawSample]:
    """A shuffle buffer: fill `size` items, then emit a random one and put the next item in its place."""
    buffer: list[RawSample] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = int(rng.integers(size))
        yield buffer[j]
        buffer[j] = item
    while buffer:  # the tail, in random order
        yield buffer.pop(int(rng.integers(len(buffer))))


class PairStream(IterableDataset[dict[str, Any]]):
    """The batches of one process (see the module docstring). Iterated by a `DataLoader(batch_size=None)`.

    Args:
        source: where pairs come from.
        tokenizer, max_length: captions become `input_ids` / `attention_mask`, truncated to `max_length`.
        transform: image decoding and augmentation.
        sample_filter: the data filters.
        batch_size: pairs per batch.
        seed: the data order seed (epochs, shuffles, augmentation).
        rank, world_size: this process and how many there are.
        workers: DataLoader workers of this process (0 = in the main process, one stream).
        shuffle_buffer: samples held by the shuffle buffer of shard sources (1 = no shuffling).
        state: where to resume, or None to start.
    """

    def __init__(
        self,
        source: Source,
        *,
        tokenizer: AlignTokenizer,
        transform: TrainTransform,
        sample_filter: SampleFilter,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
        shuffle_buffer: int = 1000,
        max_length: int = 64,
        state: LoaderState | None = None,
    ) -> None:
        super().__init__()
        check_count(batch_size, "batch_size")
        self.source, self.tokenizer, self.transform, self.filter = source, tokenizer, transform, sample_filter
        self.batch_size, self.seed, self.max_length = batch_size, seed, max_length
        self.rank, self.world_size = rank, world_size
        self.streams_per_rank = max(1, workers)
        self.shuffle_buffer = shuffle_buffer
        if state is not None and state.workers != self.streams_per_rank:
            raise InputError(
                f"The checkpoint's data position is for {state.workers} workers per process, not "
                f"{self.streams_per_rank}; resume with the same --workers and number of processes."
            )
        self.state = state or LoaderState(self.streams_per_rank)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        local = (worker + self.state.rotation) % self.streams_per_rank
        start = self.state.positions[local] if self.state.positions else StreamPosition()
        yield from self._stream(local, start)

    def _stream(self, local: int, start: StreamPosition) -> Iterator[dict[str, Any]]:
        stream_id = self.rank * self.streams_per_rank + local
        streams = self.world_size * self.streams_per_rank
        carried: Counter[str] = Counter(dict(start.carried))
        epoch, skip = start.epoch, start.index
        batch: list[tuple[str, np.ndarray, str]] = []
        while True:
            early: Counter[str] = Counter()  # counted before the shuffle: recounted on replay, never saved
            samples = self._filtered(self.source.stream(epoch, self.seed, stream_id, streams, early), early)
            if self.source.needs_shuffle_buffer and self.shuffle_buffer > 1:
                samples = _shuffled(samples, self.shuffle_buffer, np.random.default_rng((self.seed, epoch, stream_id)))
            emitted = decoded = 0
            for index, sample in enumerate(samples):
                emitted = index + 1
                if index < skip:  # fast-forward after a resume: no decoding
                    continue
                rng = np.random.default_rng((self.seed, epoch, stream_id, index))
                pixels = self._decode(sample, rng, carried)
                if pixels is None:
                    continue
                decoded += 1
                batch.append((sample.key, pixels, sample.caption))
                if len(batch) == self.batch_size:
                    position = StreamPosition(epoch, index + 1, tuple(sorted(carried.items())))
                    yield self._collate(batch, local, position, merge_counts(carried, early))
                    batch = []
            if emitted == 0 or (decoded == 0 and skip == 0):  # an endless loop otherwise
                counts = merge_counts(carried, early)
                raise InputError(
                    f"Training stream {stream_id} of {streams} found no usable sample in a whole epoch "
                    f"(skipped and filtered: {counts}). Check the data and the filters."
                )
            carried.update(early)
            epoch, skip = epoch + 1, 0

    def _filtered(self, samples: Iterator[RawSample], counts: Counter[str]) -> Iterator[RawSample]:
        for sample in samples:
            reason = self.filter.reason(sample.caption, sample.meta)
            if reason is None:
                yield sample
            else:
                counts[reason] += 1

    def _decode(self, sample: RawSample, rng: np.random.Generator, counts: Counter[str]) -> np.ndarray | None:
        from alignsam.io.images import load_image

        try:
            pil = load_image(sample.image)
        except AlignSamError:
            counts["skipped:bad_image"] += 1
            return None
        if self.filter.checks_image_size and self.filter.size_from_metadata(sample.meta or {}) is None:
            reason = self.filter.size_reason(*pil.size)
            if reason is not None:
                counts[reason] += 1
                return None
        try:
            return self.transform(pil, rng)
        except AlignSamError:
            counts["skipped:bad_image"] += 1
            return None

    def _collate(
        self, batch: list[tuple[str, np.ndarray, str]], local: int, position: StreamPosition, counts: dict[str, int]
    ) -> dict[str, Any]:
        ids = self.tokenizer.token_ids([caption for _, _, caption in batch], self.max_length)
        arrays = self.tokenizer.pad(ids, max(len(x) for x in ids))  # pad to the batch's longest caption
        return {
            "pixel_values": torch.from_numpy(np.stack([p for _, p, _ in batch])),  # B x 3 x H x W
            "input_ids": torch.from_numpy(arrays["input_ids"]),  # B x L
            "attention_mask": torch.from_numpy(arrays["attention_mask"]),  # B x L
            "keys": [key for key, _, _ in batch],
            "stream": local,
            "position": position,
            "counts": counts,
        }


class ResumableLoader:
    """A DataLoader over a `PairStream` that remembers how far training got (`state()`).

    Iterate it for batches (an endless sequence); call `state()` after consuming a batch for the position to
    store in a checkpoint, and `counts()` for the skipped/filtered totals of this process.
    """

    def __init__(self, dataset: PairStream, workers: int) -> None:
        self.dataset = dataset
        self.workers = workers
        state = dataset.state
        self._positions: list[StreamPosition] = list(state.positions) or [StreamPosition()] * dataset.streams_per_rank
        self._counts: list[dict[str, int]] = [dict(p.carried) for p in self._positions]
        self._rotation = state.rotation
        self._consumed = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        loader = DataLoader(
            self.dataset,
            batch_size=None,
            num_workers=self.workers,
            persistent_workers=False,
            prefetch_factor=4 if self.workers else None,
            # Its own generator: a DataLoader draws a seed when it starts, which must not move the global
            # random state that dropout draws from (a resumed run would then drop other units).
            generator=torch.Generator().manual_seed(self.dataset.seed),
        )
        for batch in loader:
            stream = batch["stream"]
            self._positions[stream] = batch["position"]
            self._counts[stream] = batch["counts"]
            self._consumed += 1
            yield batch

    def state(self) -> LoaderState:
        """The position after the batches consumed so far."""
        rotation = (self._rotation + self._consumed) % self.dataset.streams_per_rank
        return LoaderState(self.dataset.streams_per_rank, rotation, tuple(self._positions))

    def counts(self) -> dict[str, int]:
        """Samples skipped (unreadable) and filtered out so far by this process, by reason."""
        return merge_counts(*self._counts)
