"""COYO-700M-style metadata columns for a synthetic pair, with values that track caption noise.

The column names are COYO's (kakaobrain/coyo-dataset README, "Meta-Attributes"), so the data filters the
project applies to COYO (`clip_similarity_vitb32 >= t`, `watermark_score <= t`, ...) can be exercised on
synthetic data. The values are plausible, not measured: they are drawn from the scene's metadata stream,
around COYO's reported means, and correlated with what a real scorer would see:
- `clip_similarity_*`: high for clean captions (~0.33), lower for truncated (~0.27), wrong (~0.21) and
  unrelated (~0.13) ones, as an image-text model scores mismatched alt-text; COYO's range is -0.08..0.59.
- `watermark_score`: mostly low, high for "stock photo" style junk captions (the sites that watermark).
- `aesthetic_score_laion_v2`: around 4.8, a little higher with more objects.
- `nsfw_score_*`: near zero, always below COYO's 0.5 cut; `num_faces`: 0, with rare false detections.
- `text_length`, `word_count`: measured on the emitted caption; `image_phash`: a 64-bit average hash.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from alignsam.synthetic.scenes import Scene

__all__ = ["COYO_COLUMNS", "coyo_metadata", "image_hash"]

COYO_COLUMNS: tuple[str, ...] = (
    "clip_similarity_vitb32",
    "clip_similarity_vitl14",
    "watermark_score",
    "aesthetic_score_laion_v2",
    "nsfw_score_opennsfw2",
    "nsfw_score_gantman",
    "num_faces",
    "text_length",
    "word_count",
    "image_phash",
)
"""The metadata columns written beside every pair (webdataset json and parquet, folder csv and parquet)."""

_SIMILARITY = {"none": 0.33, "truncated": 0.27, "wrong": 0.21, "unrelated": 0.13}
_STOCK_WORDS = ("stock", "royalty", "free", "sku", "item", "©")


def image_hash(image: np.ndarray) -> str:
    """A 64-bit average hash of an `H x W x 3` uint8 image, as 16 hex digits (stands in for COYO's pHash)."""
    small = np.asarray(Image.fromarray(image).convert("L").resize((8, 8), Image.Resampling.BOX), dtype=np.float32)
    bits = (small > small.mean()).ravel()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def coyo_metadata(scene: Scene, rng: np.random.Generator) -> dict[str, Any]:
    """The COYO-style columns of one scene (see the module docstring), JSON-ready.

    Args:
        scene: the scene (its emitted caption, noise kind, objects and image).
        rng: the scene's metadata stream (`generator.rng(index, METADATA)`).
    """
    similarity = float(np.clip(rng.normal(_SIMILARITY[scene.noise], 0.025), -0.0809, 0.5918))
    stock = scene.noise == "unrelated" and any(w in scene.caption.lower() for w in _STOCK_WORDS)
    watermark = rng.beta(3, 2) if stock else rng.beta(1, 6)
    faces = int(rng.choice(3, p=(0.97, 0.025, 0.005)))
    return {
        "clip_similarity_vitb32": round(similarity, 4),
        "clip_similarity_vitl14": round(float(np.clip(similarity - 0.03 + rng.normal(0, 0.015), -0.1, 0.6)), 4),
        "watermark_score": round(float(watermark), 4),
        "aesthetic_score_laion_v2": round(float(np.clip(rng.normal(4.5 + 0.15 * len(scene.objects), 0.4), 1, 10)), 4),
        "nsfw_score_opennsfw2": round(float(min(rng.beta(1, 60), 0.4998)), 4),
        "nsfw_score_gantman": round(float(min(rng.beta(1, 60), 0.4998)), 4),
        "num_faces": faces,
        "text_length": len(scene.caption),
        "word_count": len(scene.caption.split()),
        "image_phash": image_hash(scene.image),
    }
