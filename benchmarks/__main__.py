"""The benchmark suite: every benchmark, one process, one machine; a markdown report.

    python -m benchmarks                      # full size (align-base, SAM vit_b): ~15 minutes on 2 cores
    python -m benchmarks --quick              # tiny models, about a minute (the test suite runs this)
    python -m benchmarks --only align,cli     # some of: align, sam, cli, train, serve, threads, internimage, onnx,
                                              # index
    python -m benchmarks --markdown benchmarks/RESULTS.md --json benchmarks/results.json

Each part times our code against the reference implementation on the same weights and inputs, interleaved,
and reports medians and ratios. The report also gives achieved GFLOP/s against the machine's measured
matrix-multiply peak, peak memory, and the speed issue's targets with whether they were met.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import machine
from benchmarks.system import count_flops, matmul_peak, memory_write_gbps

PARTS = {
    "align": "benchmarks.align_speed",
    "sam": "benchmarks.sam_speed",
    "cli": "benchmarks.cli_speed",
    "train": "benchmarks.train_speed",
    "serve": "benchmarks.serve_speed",
    "threads": "benchmarks.threads_speed",
    "internimage": "benchmarks.internimage_speed",
    "onnx": "benchmarks.onnx_speed",
    "index": "benchmarks.index_engines",
    "index_add": "benchmarks.index_add",
}


def flops(quick: bool) -> dict[str, int]:
    """FLOPs of the timed calls, counted on meta-device models (shapes only, no compute)."""
    from alignsam import AlignModel, SamModel
    from alignsam.io import build_on_meta
    from alignsam.sam import sam_vit_b
    from benchmarks.align_speed import quick_config

    config = quick_config() if quick else __import__("alignsam.align", fromlist=["align_base"]).align_base()
    align = build_on_meta(lambda: AlignModel(config))
    size = config.vision_config.image_size
    out = {
        "align_image_batch8": count_flops(lambda: align.encode_image(torch.empty(8, 3, size, size, device="meta"))),
        "align_text_64x12": count_flops(
            lambda: align.encode_text(torch.zeros(64, 12, dtype=torch.long, device="meta"))
        ),
    }
    if not quick:
        sam = build_on_meta(lambda: SamModel.from_config(sam_vit_b()))
        out["sam_vit_b_image_encoder"] = count_flops(
            lambda: sam.image_encoder(torch.empty(1, 3, 1024, 1024, device="meta"))
        )
    return out


def _timing(results: dict[str, Any], part: str, name: str) -> dict[str, Any] | None:
    for t in results.get(part, {}).get("timings", []):
        if t.get("name", "").startswith(name):
            return t
    return None


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(what, target, measured, met) for the speed issue's targets that the results cover."""
    rows: list[tuple[str, str, str, bool | None]] = []
    image = _timing(results, "align", "image features")
    if image:
        r = image["ratio_vs_transformers"]
        rows.append(("ALIGN image features vs transformers (fp32)", ">= 2.0x", f"{r:.2f}x", r >= 2.0))
        if "alignsam compiled" in image:
            rc = image["transformers"]["median_s"] / image["alignsam compiled"]["median_s"]
            rows.append(("ALIGN image features, torch.compile option (fp32)", ">= 2.0x", f"{rc:.2f}x", rc >= 2.0))
        if "alignsam bf16" in image:
            rb = image["transformers"]["median_s"] / image["alignsam bf16"]["median_s"]
            rows.append(("ALIGN image features, bf16, vs transformers fp32", ">= 3.5x", f"{rb:.2f}x", rb >= 3.5))
    held = _timing(results, "align", "image features (batch 8), freed memory kept")
    if held:
        r = held["ratio_vs_transformers"]
        rb = held["transformers"]["median_s"] / held["alignsam bf16"]["median_s"]
        what = "ALIGN image features vs transformers, allocator keeping freed memory (no fresh pages)"
        rows.append((f"{what}, fp32", ">= 2.0x", f"{r:.2f}x", r >= 2.0))
        rows.append((f"{what}, bf16 vs fp32", ">= 3.5x", f"{rb:.2f}x", rb >= 3.5))
    text = _timing(results, "align", "text features")
    if text:
        r = text["ratio_vs_transformers"]
        rows.append(("ALIGN text features vs transformers default padding", ">= 4x", f"{r:.2f}x", r >= 4.0))
        same = text["transformers, same dynamic padding"]["median_s"] / text["alignsam"]["median_s"]
        rows.append(
            ("ALIGN text features vs transformers, same dynamic padding", ">= 1.2x", f"{same:.2f}x", same >= 1.2)
        )
    sam = results.get("sam", {}).get("set_image", {})
    if "ratio_transformers_over_alignsam" in sam:
        r = sam["ratio_transformers_over_alignsam"]
        rows.append(("SAM vit_b set_image vs transformers (fp32)", ">= 1.5x", f"{r:.2f}x", r >= 1.5))
        rb = sam["ratio_transformers_over_alignsam_bf16"]
        iou = results["sam"]["bf16_mask_iou"]["min"]
        rows.append(
            (
                "SAM set_image, bf16, mask IoU to fp32",
                ">= 3x, IoU >= 0.98",
                f"{rb:.2f}x, IoU {iou:.3f}",
                rb >= 3 and iou >= 0.98,
            )
        )
    predict = results.get("sam", {}).get("predict", {})
    if "ratio_transformers_over_alignsam" in predict:
        r = predict["ratio_transformers_over_alignsam"]
        rows.append(("SAM predict (one point, 3 masks, full size) vs transformers", "(none)", f"{r:.2f}x", None))
    amg = results.get("sam", {}).get("amg", {})
    if "ratio_official_over_alignsam" in amg:
        r = amg["ratio_official_over_alignsam"]
        what = f"SAM automatic masks per image vs the official generator ({amg['points']} points)"
        same = "same masks" if amg.get("same_masks") else "masks differ"
        rows.append((what, "(none)", f"{r:.2f}x ({amg['alignsam']:.1f} s), {same}", None))
    for row in results.get("onnx", {}).get("timings", []):
        if "max_abs_diff" in row:
            what = f"ONNX Runtime vs PyTorch: {row['name']}"
            measured = f"{row['ratio_torch_over_onnxruntime']:.2f}x, max diff {row['max_abs_diff']:.1e}"
            rows.append((what, "(none)", measured, None))
    cold = _timing(results, "cli", "cold start")
    if cold:
        r = cold["ratio_vs_transformers"]
        rows.append(("cold start of `alignsam classify` vs transformers script", ">= 2x", f"{r:.2f}x", r >= 2.0))
    pipe = _timing(results, "cli", "classify pipeline")
    if pipe:
        f = pipe["fraction_of_model"]
        rows.append(("classify pipeline images/s vs the model's own", ">= 0.9", f"{f:.2f}", f >= 0.9))
    if "serve" in results:
        from benchmarks.serve_speed import targets as serve_targets

        rows += serve_targets(results["serve"])
    threads = results.get("threads")
    if threads:
        loaded, idle = threads["masks"]["loaded"], threads["masks"].get("idle")  # quick runs: loaded only
        cores = str(threads["cores"])
        idle_text = f" (idle: {idle[cores] / idle['auto']:.2f}x)" if idle else ""
        rows.append(
            (
                f"`masks` under load ({threads['competing_processes']} busy processes): default threads vs "
                f"--threads {cores}",
                "(not slower)",
                f"{loaded[cores] / loaded['auto']:.2f}x faster{idle_text}",
                loaded["auto"] <= loaded[cores] * 1.05,
            )
        )
        for state in threads["features"]:
            r = threads["features"][state]["ratio_vs_transformers"]
            rows.append((f"seed API image features vs transformers, {state}", "(recorded)", f"{r:.2f}x", None))
    mem = _timing(results, "cli", "peak resident memory")
    if mem:
        m = mem["peak_rss_mb"]
        rows.append(("peak resident memory, align-base inference", "<= 1.5 GB", f"{m / 1024:.2f} GB", m <= 1536))
    rows += internimage_targets(results.get("internimage", {}))
    if "index" in results:
        from benchmarks.index_engines import targets as index_targets

        rows += index_targets(results["index"])
    return rows


def internimage_targets(part: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """InternImage-T rows: our DCNv3 core against the grid_sample formula, bf16, and ALIGN's image tower."""
    model = part.get("model")
    if not model:
        return []
    same = model["ours, same context"]["ratio_vs_reference"]
    fast = model["ours"]["ratio_vs_reference"]
    low = model["ours bf16"]["ratio_vs_reference"]
    cosine = model["bf16_cosine_to_fp32"]["min"]
    core = part["core"]["ratio"]
    what = "InternImage-T 224 px batch 8 vs the grid_sample formula (fp32)"
    rows: list[tuple[str, str, str, bool | None]] = [
        (f"{what}, same context", ">= 4x", f"{same:.2f}x", same >= 4),
        (f"{what}, our fast path (oneDNN matmul)", ">= 4x", f"{fast:.2f}x", fast >= 4),
        ("InternImage-T bf16 vs the formula in fp32, logits cosine", ">= 6x, cos >= 0.999",
         f"{low:.2f}x, cos {cosine:.4f}", low >= 6 and cosine >= 0.999),
        ("DCNv3 core alone vs the grid_sample formula (all blocks of T)", "(none)", f"{core:.2f}x", None),
    ]  # fmt: skip
    align = part.get("vs_align", {})
    ours = next((v for k, v in align.items() if k.startswith("InternImage-T") and not k.endswith("bf16")), None)
    theirs = next((v for k, v in align.items() if k.startswith("ALIGN") and not k.endswith("bf16")), None)
    if ours and theirs:
        rows.append(
            ("images/s, InternImage-T 224 px vs ALIGN EfficientNet-B7 289 px (fp32)", "(reported)",
             f"{ours['per_s']:.1f} vs {theirs['per_s']:.1f}", None)
        )  # fmt: skip
    return rows


METHOD = """## How it is measured

Each part times our code and the reference implementation (transformers, the official segment-anything, or
the plain formula) on the same weights and the same inputs, in one process, interleaved so that drift on a
shared machine hits both alike, after a warm-up call; the figures are medians and the ratios are reference
time / our time (higher is faster). Weights are random but shaped like a trained network's (batch-norm
statistics calibrated, residual gains small), since no checkpoint can be downloaded here. Threads: torch's
default unless a row says otherwise. The report is written by `python -m benchmarks --markdown
benchmarks/RESULTS.md --json benchmarks/results.json`; `--quick` runs every part on tiny models (the test
suite does, so the suite cannot rot)."""

BOUNDS = {
    "ALIGN image features vs transformers": (
        "the image tower is 134 GFLOP a batch of 8 at 289 px. Its 1x1 convolutions already run at 75-90% of "
        "oneDNN's peak on this CPU; the rest of the time is memory-bound (depthwise convolutions, squeeze-excite, "
        "padding) and SiLU, which oneDNN computes in float32 even for bfloat16 maps (11% of the fp32 tower, 22% "
        "of the bf16 one, measured by switching it off). The fp32 floor of these parts is ~0.45-0.48 s and the bf16 "
        "one ~0.33 s; 2.0x / 3.5x need 0.41-0.50 s and 0.27-0.29 s against transformers' 0.9-1.0 s. Closing it "
        "takes native kernels that fuse expansion, depthwise convolution, squeeze-excite and a bfloat16 SiLU per "
        "tile, beyond oneDNN's primitives; or a GPU, for which no machine was lent."
    ),
}
"""Why an unmet target is not met: the start of its row's `what` -> the reason, measured."""


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {results['machine']}. Mode: {'quick (tiny models)' if results['quick'] else 'full size'}. "
        f"Matrix-multiply peak: {results['peak_gflops']['fp32']:.0f} GFLOP/s fp32, "
        f"{results['peak_gflops']['bf16']:.0f} GFLOP/s bf16. Total time {results['seconds']:.0f} s.",
        "",
        "Memory writes, GB/s, at the start and the end of the run: {} (into held memory) and {} (into fresh "
        "pages, which the reference's image tower pays for every large activation; it varies between runs "
        "on shared machines, and the image ratios with it).".format(
            *(
                " / ".join(str(results["memory_write_gbps"][when][kind]) for when in ("start", "end"))
                for kind in ("held", "fresh")
            )
        ),
        "",
        METHOD,
        "",
        "## Targets",
        "",
        "| what | target | measured | met |",
        "| --- | --- | --- | --- |",
    ]
    for what, target, measured, met in results["targets"]:
        lines.append(f"| {what} | {target} | {measured} | {'-' if met is None else 'yes' if met else 'no'} |")
    unmet = [what for what, _, _, met in results["targets"] if met is False]
    bounds = [(what, next(text for key, text in BOUNDS.items() if what.startswith(key))) for what in unmet
              if any(what.startswith(key) for key in BOUNDS)]  # fmt: skip
    if bounds:
        lines += ["", "## What bounds the unmet figures", ""]
        lines += [f"- **{what}**: {text}" for what, text in bounds]
    for part in PARTS:
        if part not in results:
            continue
        if part == "index":  # its own tables (one row per engine and size), one heading level down
            from benchmarks.index_engines import markdown as index_markdown

            report = index_markdown(results[part]).splitlines()
            lines += ["", *("#" + line if line.startswith("#") else line for line in report)]
            continue
        lines += ["", f"## {part}", "", "| measurement | value |", "| --- | --- |"]
        for key, value in _flatten(results[part]):
            lines.append(f"| {key} | {value} |")
    return "\n".join(lines) + "\n"


def _flatten(obj: Any, path: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    """Nested results as (`a · b · c`, value) rows; list items are named by their "name"."""
    if isinstance(obj, dict):
        base = (*path, str(obj["name"])) if "name" in obj else path
        return [row for k, v in obj.items() if k != "name" for row in _flatten(v, (*base, str(k)))]
    if isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
        return [row for x in obj for row in _flatten(x, path)]
    return [(" · ".join(path), obj)]


def run(quick: bool = False, only: list[str] | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    results: dict[str, Any] = {
        "machine": machine(),
        "quick": quick,
        "peak_gflops": {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)},
        "memory_write_gbps": {"start": memory_write_gbps(64 if quick else 256)},
        "flops": flops(quick),
    }
    for part in only or list(PARTS):
        results[part] = importlib.import_module(PARTS[part]).run(quick=quick)
    image = _timing(results, "align", "image features")
    if image:
        gflops = results["flops"]["align_image_batch8"] / image["alignsam"]["median_s"] / 1e9
        results["achieved_gflops"] = {
            "align_image_fp32": round(gflops, 1),
            "align_image_fp32_fraction_of_peak": round(gflops / results["peak_gflops"]["fp32"], 3),
        }
    results["memory_write_gbps"]["end"] = memory_write_gbps(64 if quick else 256)
    results["targets"] = targets(results)
    results["seconds"] = time.perf_counter() - start
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", type=lambda s: s.split(","), help=f"comma-separated parts of {list(PARTS)}")
    parser.add_argument("--markdown", type=Path, help="write the markdown report here")
    parser.add_argument("--json", type=Path, help="write all figures as JSON here")
    args = parser.parse_args()
    results = run(args.quick, args.only)
    report = markdown(results)
    if args.markdown:
        args.markdown.write_text(report)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    sys.stdout.write(report)


if __name__ == "__main__":
    main()
