"""Timing helpers shared by the benchmarks: interleaved repetitions, medians, ratios."""

from __future__ import annotations

import gc
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Timing:
    """Seconds per call of each contender, measured interleaved (A, B, A, B, ...)."""

    name: str
    seconds: dict[str, list[float]] = field(default_factory=dict)
    items_per_call: int = 1
    fresh_mb: dict[str, list[float]] = field(default_factory=dict)
    """MB of fresh pages each call touched (minor page faults of the whole process): what it paid for memory
    the kernel had to map and zero, a cost that depends on the allocator's state (see `memory_write_gbps`)."""

    def median(self, who: str) -> float:
        return statistics.median(self.seconds[who])

    def median_fresh_mb(self, who: str) -> float:
        return statistics.median(self.fresh_mb[who])

    def per_second(self, who: str) -> float:
        return self.items_per_call / self.median(who)

    def ratio(self, ours: str = "alignsam", reference: str = "transformers") -> float:
        """How many times faster `ours` is than `reference` (median time ratio)."""
        return self.median(reference) / self.median(ours)


def interleaved(
    name: str,
    contenders: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    items_per_call: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Time each contender `repeats` times, alternating between them so drift hits all equally.

    `clock`: wall time by default; `time.process_time` counts this process's CPU time instead, which other
    processes' load does not inflate (comparable to wall time with one thread only)."""
    timing = Timing(name, {k: [] for k in contenders}, items_per_call, {k: [] for k in contenders})
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    for _ in range(repeats):
        for who, fn in contenders.items():
            gc.collect()
            faults = minor_faults()
            start = clock()
            fn()
            timing.seconds[who].append(clock() - start)
            timing.fresh_mb[who].append((minor_faults() - faults) * resource.getpagesize() / 2**20)
    return timing


def minor_faults() -> int:
    """Minor page faults of this process so far (all threads): one per fresh page touched."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def machine() -> str:
    """One line describing where the numbers were taken."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = models[0] if models else cpu
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads{gpu}"
