"""Machine figures the model timings are read against: matrix-multiply peak, FLOP counts, peak memory."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """The best GFLOP/s of an `n x n` matrix multiply on this machine (2 n^3 flops per multiply), over the
    matrix-multiply libraries PyTorch has here: its BLAS (`torch.mm`; MKL in the PyPI builds) and oneDNN.
    They differ: on the AMD EPYC development machine MKL's float32 multiply reaches ~120 GFLOP/s, oneDNN's
    ~270, and the models' convolutions (oneDNN) run above the BLAS figure."""
    from alignsam.fast import onednn_bf16

    native = dtype != torch.bfloat16 or onednn_bf16()
    if not native:  # emulated bfloat16 (AVX2 CPUs) runs some 100x slower: a smaller multiply tells as much
        n = min(n, 512)
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    candidates: list[Callable[[], object]] = [lambda: torch.mm(a, b)]
    if torch.backends.mkldnn.is_available() and native:
        candidates.append(lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], ""))
    best = float("inf")
    with torch.inference_mode():
        for fn in candidates:
            fn()
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def memory_write_gbps(mb: int = 256, repeats: int = 5) -> dict[str, float]:
    """Median GB/s of writing `mb` MB: into memory the process already holds (`held`) and into a fresh buffer
    (`fresh`), whose pages the kernel maps and zeroes on first touch.

    A library that writes each large activation into a new buffer pays the second rate: transformers' image
    tower maps 40-130 MB per activation at batch 8, above glibc's 32 MB limit for reusing freed heap memory,
    so each is fresh. On shared virtual machines that rate moves from run to run, and the reference's image
    time with it; reading a ratio, read this beside it."""
    n = mb << 20
    held = torch.empty(n, dtype=torch.uint8)
    held.fill_(1)
    times: dict[str, list[float]] = {"held": [], "fresh": []}
    for _ in range(repeats):
        start = time.perf_counter()
        held.fill_(0)
        times["held"].append(time.perf_counter() - start)
        start = time.perf_counter()
        torch.empty(n, dtype=torch.uint8).fill_(0)
        times["fresh"].append(time.perf_counter() - start)
    return {k: round(n / 1e9 / statistics.median(v), 1) for k, v in times.items()}


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of one call, as counted by PyTorch (matmuls and convolutions)."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fn()
    return int(counter.get_total_flops())


def peak_rss_mb(argv: list[str], timeout: int = 600) -> tuple[float, str]:
    """Run `argv` in a fresh process; its peak resident memory in MB, and its stdout.

    The peak is the process's own high-water mark, `VmHWM` in /proc/self/status. Not `ru_maxrss`: Linux
    carries that across fork and exec, so a child of a large process (this suite, with transformers and
    align-base loaded) reports its parent's size. `ru_maxrss` is the fallback where /proc is missing."""
    code = (
        "import resource, runpy, sys; sys.argv = sys.argv[1:];"
        "\ntry:\n    runpy.run_module(sys.argv[0], run_name='__main__')\nexcept SystemExit:\n    pass"
        "\ntry:\n    hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]"
        "\nexcept (OSError, IndexError):\n    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss"
        "\nprint('PEAK_RSS_KB', hwm, file=sys.stderr)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    peak = [line for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KB")]
    if proc.returncode != 0 or not peak:
        raise RuntimeError(f"{argv} failed: {proc.stderr[-2000:]}")
    return int(peak[-1].split()[1]) / 1024, proc.stdout
