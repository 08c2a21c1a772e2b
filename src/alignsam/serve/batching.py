"""Dynamic request batching: single items from concurrent requests gathered into one model call.

The convention of Ray Serve's `@serve.batch(max_batch_size, batch_wait_timeout_s)` (also LitServe's
`max_batch_size` / `batch_timeout` and BentoML's adaptive batching): a batch starts when it holds
`max_batch_size` items, or `max_wait_s` after its first item arrived, whichever comes first. While a batch
runs, the next one gathers, so under load batches fill up by themselves; an idle server answers a lone
request after at most `max_wait_s` (0: at once with whatever is queued).

The batch function runs in a worker thread (an executor), never on the event loop, and one batch runs at a
time per batcher: the models use every core already, so two batches side by side would only share them.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclasses.dataclass
class BatchStats:
    """What a batcher has done: calls of the batch function, items through them, the largest batch, and the
    seconds the batch function itself ran (queueing for the lane not counted)."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    busy_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        mean = self.items / self.batches if self.batches else 0.0
        return {**dataclasses.asdict(self), "mean_batch": round(mean, 2), "busy_s": round(self.busy_s, 3)}


class Batcher(Generic[T, R]):
    """Gathers items `submit`ted by concurrent coroutines into lists for one call of `fn`.

    Args:
        fn: `list[T] -> list[R]`, one result per item, in order; run in `executor`. If it raises, every
            item of that batch gets the exception.
        executor: where `fn` runs (a single-thread executor serialises model calls).
        max_batch_size: items per call at most.
        max_wait_s: how long a batch waits for more items after its first one.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        executor: Executor,
        max_batch_size: int,
        max_wait_s: float,
        name: str = "batcher",
    ) -> None:
        if max_batch_size < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch_size must be >= 1 and max_wait_s >= 0, got {max_batch_size}, {max_wait_s}")
        self.fn, self.executor, self.name = fn, executor, name
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_s
        self.stats = BatchStats()
        self._pending: collections.deque[tuple[T, asyncio.Future[R], float]] = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """The result of `fn` for `item`, computed in a batch with the items submitted around it."""
        loop = asyncio.get_running_loop()
        if self._runner is None or self._runner.done():
            self._arrived = asyncio.Event()
            self._runner = loop.create_task(self._run(), name=self.name)
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future, loop.time()))
        assert self._arrived is not None
        self._arrived.set()
        return await future

    def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        arrived = self._arrived
        assert arrived is not None
        while True:
            while not self._pending:
                arrived.clear()
                await arrived.wait()
            deadline = self._pending[0][2] + self.max_wait_s
            while len(self._pending) < self.max_batch_size and (left := deadline - loop.time()) > 0:
                arrived.clear()
                try:  # waiting on an event (not on a queue) so that a time-out can never drop an item
                    await asyncio.wait_for(arrived.wait(), left)
                except TimeoutError:
                    break
            batch = [self._pending.popleft() for _ in range(min(self.max_batch_size, len(self._pending)))]
            batch = [entry for entry in batch if not entry[1].done()]  # requests cancelled while waiting
            if batch:
                await self._call(loop, batch)

    async def _call(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[T, asyncio.Future[R], float]]) -> None:
        fn = self.fn

        def timed(items: list[T]) -> tuple[Sequence[R], float]:  # the model's own time, not the lane's queue
            start = time.perf_counter()
            out = fn(items)
            return out, time.perf_counter() - start

        try:
            results, seconds = await loop.run_in_executor(self.executor, timed, [item for item, _, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} items")
        except Exception as err:  # every waiting request hears of it; the batcher goes on
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(err)
            return
        self.stats.batches += 1
        self.stats.items += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        self.stats.busy_s += seconds
        for (_, future, _), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
