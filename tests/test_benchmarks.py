"""The benchmark suite in its quick mode (tiny models), so that it cannot rot. No time is asserted: timings
on a shared machine are noise; the full run's figures live in benchmarks/RESULTS.md."""

from __future__ import annotations

import json

import pytest

from benchmarks.__main__ import markdown, run


@pytest.fixture(scope="module")
def results() -> dict:
    return run(quick=True)


def test_every_part_reports_both_implementations(results: dict) -> None:
    assert {"align", "sam", "cli", "train"} <= results.keys()
    assert results["peak_gflops"]["fp32"] > 0 and results["flops"]["align_image_batch8"] > 0
    sam = results["sam"]
    assert {"alignsam", "alignsam bf16", "transformers"} <= sam["set_image"].keys()
    assert 0.0 <= sam["bf16_mask_iou"]["min"] <= sam["bf16_mask_iou"]["median"] <= 1.0
    assert sam["amg"]["points"] == 16
    json.dumps(results, default=str)  # the --json report


def test_the_report_has_the_targets_table(results: dict) -> None:
    names = [row[0] for row in results["targets"]]
    for expected in ("ALIGN image features vs transformers", "ALIGN text features", "SAM vit_b set_image",
                     "SAM set_image, bf16", "cold start", "classify pipeline", "peak resident memory"):  # fmt: skip
        assert any(n.startswith(expected) for n in names), (expected, names)
    report = markdown(results)
    assert report.startswith("# Benchmark results") and "| what | target | measured | met |" in report
    assert report.count("\n| ") >= len(names) + 10
