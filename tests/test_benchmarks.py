"""The benchmark suite in its quick mode (tiny models), so that it cannot rot. No time is asserted: timings
on a shared machine are noise; the full run's figures live in benchmarks/RESULTS.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks.__main__ import markdown, run
from benchmarks.align_speed import HELD_MEMORY_ENV, ROOT


@pytest.fixture(scope="module")
def results() -> dict:
    return run(quick=True)


def test_every_part_reports_both_implementations(results: dict) -> None:
    assert {"align", "sam", "cli", "train", "serve", "threads", "internimage", "onnx", "index"} <= results.keys()
    assert results["peak_gflops"]["fp32"] > 0 and results["flops"]["align_image_batch8"] > 0
    sam = results["sam"]
    assert {"alignsam", "alignsam bf16", "transformers"} <= sam["set_image"].keys()
    assert 0.0 <= sam["bf16_mask_iou"]["min"] <= sam["bf16_mask_iou"]["median"] <= 1.0
    amg = sam["amg"]
    assert amg["points"] == 16 and {"alignsam", "official", "ratio_official_over_alignsam"} <= amg.keys()
    assert amg["masks"]["alignsam"] > 0 and amg["masks"]["official"] > 0  # the thresholds let masks through
    assert isinstance(amg["same_masks"], bool) and amg["params"]["points_per_side"] == 4
    json.dumps(results, default=str)  # the --json report


def test_the_serve_part_times_clicks_and_batching(results: dict) -> None:
    serve = results["serve"]
    for name in ("click", "hover"):
        timing = serve["click_demo"][name]
        assert 0 < timing["p50_ms"] <= timing["p90_ms"] <= timing["p99_ms"] and timing["n"] >= 10
    batching = serve["classify_batching"]
    assert batching["on"]["mean_image_batch"] > 1.0 and batching["off"]["mean_image_batch"] == 1.0
    assert batching["throughput_ratio_on_over_off"] > 0 and batching["p99_over_batch_compute"] > 0
    assert serve["decoder_batching_demo"]["ratio"] > 0


def test_onnx_rows_time_both_backends_within_tolerance(results: dict) -> None:
    onnx = results["onnx"]
    rows = {row["name"].split(" (")[0]: row for row in onnx["timings"]}
    assert {"SAM image encoder", "SAM predict, one click", "ALIGN image tower", "ALIGN text tower"} <= rows.keys()
    for row in onnx["timings"]:
        assert row["torch"]["median_s"] > 0 and row["onnxruntime"]["median_s"] > 0
        if "max_abs_diff" in row:
            assert row["max_abs_diff"] <= row["tolerance"], row
    assert set(onnx["faster_backend"]) == {"sam-encoder", "sam-decoder", "align-image", "align-text"}
    assert all(seconds > 0 for seconds in onnx["export_seconds"].values())


def test_image_features_are_timed_with_and_without_fresh_pages(results: dict) -> None:
    timings = {t["name"]: t for t in results["align"]["timings"]}
    default, held = timings["image features (batch 8)"], timings["image features (batch 8), freed memory kept"]
    for timing in (default, held):
        assert {"alignsam", "alignsam bf16", "transformers"} <= timing.keys()
        assert all(timing[who]["fresh_pages_mb"] >= 0 for who in ("alignsam", "transformers"))
    assert held["allocator"] == HELD_MEMORY_ENV  # the round ran in a child process with the allocator told
    written = results["memory_write_gbps"]
    assert all(written[when]["held"] > 0 and written[when]["fresh"] > 0 for when in ("start", "end"))


def test_the_report_has_the_targets_table(results: dict) -> None:
    names = [row[0] for row in results["targets"]]
    for expected in ("ALIGN image features vs transformers", "ALIGN image features vs transformers, allocator",
                     "ALIGN text features", "SAM vit_b set_image",
                     "SAM set_image, bf16", "SAM predict", "SAM automatic masks per image vs the official",
                     "cold start", "classify pipeline", "peak resident memory",
                     "click over HTTP on an embedded image, demo SAM", "8 concurrent classify clients",
                     "p99 latency / the batch's own compute"):  # fmt: skip
        assert any(n.startswith(expected) for n in names), (expected, names)
    report = markdown(results)
    assert report.startswith("# Benchmark results") and "| what | target | measured | met |" in report
    assert report.count("\n| ") >= len(names) + 10


def test_held_memory_env_spares_fresh_pages() -> None:
    """What the second image round relies on: a chain of 40 MB activations, each in a new buffer (as
    transformers' tower writes them), touches fresh pages for each with glibc's defaults, and reuses freed
    heap memory with `HELD_MEMORY_ENV`."""
    code = (
        "import resource, torch\nfrom benchmarks.common import minor_faults\n"
        "x = torch.ones(10 << 20)\n"
        "def chain():\n    y = x\n    for _ in range(6):\n        y = y * 1.0001\n"
        "chain()\nbefore = minor_faults()\n"
        "for _ in range(4):\n    chain()\n"
        "print((minor_faults() - before) * resource.getpagesize() >> 20)"
    )

    def fresh_mb(env: dict[str, str]) -> int:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-2000:]
        return int(out.stdout.split()[-1])

    plain = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    default, held = fresh_mb(plain), fresh_mb({**plain, **HELD_MEMORY_ENV})
    assert default >= 24 * 35, default  # 24 buffers of 40 MB, each fresh
    assert held <= default / 4, (held, default)


def test_internimage_part_times_both_cores_and_align(results: dict) -> None:
    part = results["internimage"]
    model = part["model"]
    assert {"reference formula", "ours, same context", "ours", "ours bf16"} <= model.keys()
    assert model["max_abs_diff_ours_vs_formula"] < 1e-3 * model["logits_scale"]  # the same model, two cores
    assert model["logits_std_over_classes"] > 0.1 * model["logits_scale"]  # spread-out logits for the cosine
    assert 0.99 < model["bf16_cosine_to_fp32"]["min"] <= 1.0
    assert part["core"]["ratio"] > 0 and len(part["vs_align"]) == 5
    names = [row[0] for row in results["targets"]]
    assert any(n.startswith("InternImage-T bf16 vs the formula") for n in names), names
    assert any(n.startswith("images/s, InternImage-T") for n in names), names


def test_index_part_compares_every_engine_against_exact_search(results: dict) -> None:
    from benchmarks.index_engines import ENGINES, markdown

    part = results["index"]
    names = {key: ENGINES[key]().name for key in ENGINES}
    assert [row["engine"] for row in part["random"]] == list(names.values())
    assert [row["engine"] for row in part["demo_real"]] == list(names.values())
    for row in part["random"] + part["demo_fit"] + part["demo_real"]:
        chosen = row["chosen"]
        assert 0.0 <= chosen["recall@10"] <= 1.0 and 0 < chosen["one"]["p50_ms"] <= chosen["one"]["p99_ms"], row
        assert row["build_s"] >= 0 and row["disk_mb"] >= 0
    for row in part["random"] + part["demo_real"]:
        if row["engine"] in (names["numpy"], names["faiss-flat"]):
            assert row["chosen"]["recall@10"] == 1.0, row  # exact engines agree with the ground truth
    assert all(row["added"] > 0 and row["add_s"] >= 0 for row in part["random"])
    assert part["demo_model"]["dim"] > 0 and part["exact_scan"]
    report = markdown(part)
    assert report.count("| numpy exact |") == 2 and "## Choice from these figures" in report
