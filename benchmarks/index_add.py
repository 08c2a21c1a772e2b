"""Embedding throughput of `alignsam index --add` (`ImageIndex.add`: listing, decoding in threads, the model,
hashing, one SQLite transaction per batch) against the Encoder's own images/s on the same files
(`Encoder.encode_images`, which decodes in threads too). Target: >= 0.9x. Runs alternate, fresh index each.

    python -m benchmarks.index_add [--model demo] [--images 192] [--size 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the command line sets it: waits leave shared cores


def make_photos(folder: Path, count: int, size: int) -> list[Path]:
    """JPEG files with smooth gradients and noise (decoding costs what a photo of that size costs)."""
    rng = np.random.default_rng(0)
    paths = []
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(count):
        base = (np.stack([xx, yy, (xx + yy) // 2], -1) * (i % 7 + 1)) % 256
        noise = rng.integers(0, 40, (size, size, 3))
        path = folder / f"photo_{i:05d}.jpg"
        Image.fromarray((base + noise).clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def measure(
    model: str = "demo",
    images: int = 192,
    size: int = 256,
    batch: int = 16,
    workers: int = 2,
    rounds: int = 3,
    threads: int = 2,
) -> dict[str, Any]:
    import torch

    from alignsam.index import ImageIndex
    from alignsam.tools.encoder import Encoder

    torch.set_num_threads(threads)

    encoder = Encoder.from_pretrained(model, batch_size=batch, workers=workers)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "photos").mkdir()
        paths = make_photos(root / "photos", images, size)
        encoder.encode_images(paths[: 2 * batch])  # warm up
        encoder_s, index_s = [], []
        for r in range(rounds):
            for which in ("encoder", "index") if r % 2 == 0 else ("index", "encoder"):  # alternate who goes first
                if which == "encoder":
                    start = time.perf_counter()
                    encoder.encode_images(paths)
                    encoder_s.append(time.perf_counter() - start)
                    continue
                with ImageIndex.open(root / f"idx{r}", create=True) as index:
                    start = time.perf_counter()
                    report = index.add([root / "photos"], model=model, encoder=encoder, batch_size=batch)
                    index_s.append(time.perf_counter() - start)
                    assert report["added"] == images
    enc, idx = statistics.median(encoder_s), statistics.median(index_s)
    return {
        "model": model,
        "images": images,
        "size": size,
        "batch_size": batch,
        "workers": workers,
        "threads": threads,
        "encoder_images_per_s": round(images / enc, 2),
        "index_add_images_per_s": round(images / idx, 2),
        "ratio": round(enc / idx, 3),
        "encoder_s": [round(s, 3) for s in encoder_s],
        "index_s": [round(s, 3) for s in index_s],
    }


def run(quick: bool = False) -> dict[str, Any]:
    """The suite's `index_add` part: the demo model, 192 images in 3 rounds (32 in 1 with `quick`)."""
    return measure("demo", 32 if quick else 192, 128 if quick else 256, 16, 2, 1 if quick else 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="demo")
    p.add_argument("--images", type=int, default=192)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    print(json.dumps(measure(a.model, a.images, a.size, a.batch_size, a.workers, a.rounds), indent=2))


if __name__ == "__main__":
    main()
