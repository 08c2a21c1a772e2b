"""InternImage speed: our DCNv3 core against the grid_sample formula, bf16, and ALIGN's image tower.

Measures, with interleaved repetitions (medians and ratios), InternImage-T at 224 px, batch 8:
- the same model with two DCNv3 cores: ours (`dcnv3_fast`) and the official pure-PyTorch formula
  (`dcnv3_reference`, grid_sample), both in float32 in the same context (inference mode only); and the
  formula with the official module's `torch.softmax`, as the official fallback runs;
- ours with the library's fast path (`FastPath()`: oneDNN float32 matrix multiplies), in float32 and in
  bfloat16 autocast, against the formula in plain float32;
- the bf16 logits' cosine to the float32 ones, on weights randomised so that logits are spread out
  (`tests.internimage.helpers.randomize`: the head scaled so that classes differ);
- images per second of InternImage-T at 224 px beside ALIGN's image tower (EfficientNet-B7, align-base at
  289 px, random weights shaped like a trained network's) on our fast path, float32 and bf16.

    python -m benchmarks.internimage_speed            # full size, several minutes on 2 cores
    python -m benchmarks.internimage_speed --quick    # tiny models, seconds (what the test suite runs)
    python -m benchmarks.internimage_speed --threads 1 --cpu-time   # one thread, CPU seconds: figures that
                                                                    # other processes' load does not skew

Importable: `run(quick=True)` returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from alignsam.fast import PLAIN, FastPath
from alignsam.internimage import InternImage, InternImageConfig, dcnv3_fast, dcnv3_reference, internimage_t
from benchmarks.common import Timing, interleaved, machine
from tests.internimage.helpers import randomize


def quick_config() -> InternImageConfig:
    return InternImageConfig(channels=16, depths=(1, 1, 2, 1), groups=(1, 2, 4, 8), num_classes=100)


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Normalised images that differ in layout and colour (smooth noise plus a colour cast)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=g) * 2 - 1
    up = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (up + torch.rand(n, 3, 1, 1, generator=g) - 0.5 + torch.randn(n, 3, size, size, generator=g) * 0.1) * 2


def _call(model: torch.nn.Module, x: torch.Tensor, fast: FastPath) -> Callable[[], torch.Tensor]:
    def call() -> torch.Tensor:
        with fast.autocast("cpu"):
            return model(x)

    return call


def _official_module_call(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The formula with the official module's `torch.softmax` over the 9 points (ours computes the same
    softmax 7-13x faster, in both models above)."""
    import alignsam.internimage.modeling.dcnv3 as module

    def call() -> torch.Tensor:
        saved = module.softmax_small
        module.softmax_small = lambda logits: torch.softmax(logits.float(), -1)
        try:
            with PLAIN.autocast("cpu"):
                return model(x)
        finally:
            module.softmax_small = saved

    return call


def internimage_timings(quick: bool, repeats: int, clock: Callable[[], float]) -> dict[str, Any]:
    config = quick_config() if quick else internimage_t()
    size, batch = (64, 2) if quick else (224, 8)
    torch.manual_seed(0)
    ours = randomize(InternImage(config)).eval()
    reference = InternImage(config, core=dcnv3_reference).eval()
    reference.load_state_dict(ours.state_dict())
    x = _images(batch, size)
    fp32, bf16 = FastPath(), FastPath(precision="bf16")
    contenders = {
        "reference formula": _call(reference, x, PLAIN),
        "official module as written": _official_module_call(reference, x),
        "ours, same context": _call(ours, x, PLAIN),
        "ours": _call(ours, x, fp32),
        "ours bf16": _call(ours, x, bf16),
    }
    timing = interleaved(
        f"InternImage-T {size} px, batch {batch}", contenders, repeats=repeats, items_per_call=batch, clock=clock
    )
    with torch.inference_mode():
        exact = contenders["ours"]().float()
        formula = contenders["reference formula"]().float()
        low = contenders["ours bf16"]().float()
    cosine = F.cosine_similarity(low, exact, dim=1)
    out = _summary(timing, "reference formula")
    out["max_abs_diff_ours_vs_formula"] = float((exact - formula).abs().max())
    out["logits_scale"] = float(exact.abs().max())
    out["logits_std_over_classes"] = float(exact.std(dim=1).mean())
    out["bf16_cosine_to_fp32"] = {"min": round(float(cosine.min()), 5), "mean": round(float(cosine.mean()), 5)}
    out["bf16_top1_agrees"] = float((low.argmax(1) == exact.argmax(1)).float().mean())
    return out


def core_timings(quick: bool, repeats: int, clock: Callable[[], float]) -> dict[str, Any]:
    """The DCNv3 core alone at each level's shape of InternImage-T (batch 8, 224 px), summed over the
    levels' block counts (4, 4, 18, 4)."""
    shapes = [(2, 16, 16, 1, 1), (2, 8, 32, 2, 1)] if quick else [
        (8, 56, 64, 4, 4), (8, 28, 128, 8, 4), (8, 14, 256, 16, 18), (8, 7, 512, 32, 4)
    ]  # fmt: skip
    totals = {"reference formula": 0.0, "ours": 0.0}
    g = torch.Generator().manual_seed(0)
    for n, hw, c, group, blocks in shapes:
        value = torch.randn(n, hw, hw, c, generator=g)
        offset = torch.randn(n, hw, hw, group * 18, generator=g) * 2
        mask = torch.randn(n, hw, hw, group, 9, generator=g).softmax(-1).flatten(-2)
        timing = interleaved(
            f"core {hw}x{hw}x{c}",
            {
                "reference formula": _core(dcnv3_reference, value, offset, mask, group),
                "ours": _core(dcnv3_fast, value, offset, mask, group),
            },
            repeats=repeats,
            clock=clock,
        )
        for who in totals:
            totals[who] += timing.median(who) * blocks
    return {
        "name": "DCNv3 core, all blocks of InternImage-T",
        **{who: {"seconds": round(s, 4)} for who, s in totals.items()},
        "ratio": round(totals["reference formula"] / totals["ours"], 2),
    }


def _core(core: Any, value: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, group: int) -> Callable[[], Any]:
    def call() -> Any:
        with torch.inference_mode():
            return core(value, offset, mask, group=group)

    return call


def align_comparison(quick: bool, repeats: int, clock: Callable[[], float]) -> dict[str, Any]:
    """Images per second: InternImage-T at 224 and ALIGN's EfficientNet-B7 at 289, our fast paths."""
    from alignsam.align import align_base
    from alignsam.align.fast import prepare_align
    from benchmarks.align_speed import quick_config as align_quick_config
    from tests.align.conftest import conditioned_align, varied_images

    batch = 2 if quick else 8
    align_config = align_quick_config() if quick else align_base()
    align_size = align_config.vision_config.image_size
    fp32, bf16 = FastPath(), FastPath(precision="bf16")
    align32 = prepare_align(conditioned_align(align_config), fp32)
    align16 = prepare_align(conditioned_align(align_config), bf16)
    pixels = varied_images(batch, align_size).contiguous(memory_format=torch.channels_last)
    config = quick_config() if quick else internimage_t()
    size = 64 if quick else 224
    torch.manual_seed(0)
    intern = randomize(InternImage(config)).eval()
    x = _images(batch, size)

    def align_call(model: Any, fast: FastPath) -> Callable[[], Any]:
        def call() -> Any:
            with fast.autocast("cpu"):
                return model.get_image_features(pixels)

        return call

    timing = interleaved(
        f"images/s, batch {batch}",
        {
            f"InternImage-T {size} px": _call(intern, x, fp32),
            f"InternImage-T {size} px bf16": _call(intern, x, bf16),
            f"ALIGN EfficientNet-B7 {align_size} px": align_call(align32, fp32),
            f"ALIGN EfficientNet-B7 {align_size} px bf16": align_call(align16, bf16),
        },
        repeats=repeats,
        items_per_call=batch,
        clock=clock,
    )
    out: dict[str, Any] = {"name": timing.name}
    for who in timing.seconds:
        out[who] = {"median_s": round(timing.median(who), 4), "per_s": round(timing.per_second(who), 2)}
    return out


def _summary(t: Timing, reference: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": t.name}
    for who in t.seconds:
        out[who] = {
            "median_s": round(t.median(who), 4),
            "per_s": round(t.per_second(who), 2),
            "ratio_vs_reference": round(t.ratio(who, reference), 2),
        }
    return out


def run(quick: bool = False, repeats: int = 3, threads: int | None = None, cpu_time: bool = False) -> dict[str, Any]:
    """All timings; `threads` sets torch's thread count for the run, `cpu_time` times with CPU seconds."""
    repeats = 2 if quick else repeats
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    clock = time.process_time if cpu_time else time.perf_counter
    try:
        return {
            "machine": machine(),
            "config": "quick" if quick else "internimage-t",
            "clock": "process CPU time" if cpu_time else "wall time",
            "model": internimage_timings(quick, repeats, clock),
            "core": core_timings(quick, repeats, clock),
            "vs_align": align_comparison(quick, repeats, clock),
        }
    finally:
        torch.set_num_threads(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads for the run (default: torch's own)")
    parser.add_argument("--cpu-time", action="store_true", help="time with process CPU seconds, not wall time")
    args = parser.parse_args()
    start = time.perf_counter()
    print(json.dumps(run(args.quick, args.repeats, args.threads, args.cpu_time), indent=2))
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
