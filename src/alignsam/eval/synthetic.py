"""The held-out synthetic benchmark of the demonstration model, generated in memory (nothing is written).

- classification: single-object scenes, `per_class` of each "<colour> <shape>" class, scored zero-shot with
  prompt templates (the classes of `alignsam synth classification`);
- retrieval: `num_retrieval` scenes of 2 to 4 objects with `captions_per_image` clean captions each, scored
  with recall@K both ways (what `alignsam synth retrieval` writes, without the JPEG round trip).
The scenes come from a seed the training data does not use (training sets use seed 0 by default).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from alignsam.eval.retrieval import retrieval
from alignsam.eval.zeroshot import zero_shot_classification
from alignsam.tools.encoder import Encoder

HELD_OUT_SEED = 1_000_003


def synthetic_benchmark(
    encoder: Encoder,
    *,
    image_size: int = 64,
    seed: int = HELD_OUT_SEED,
    per_class: int = 10,
    num_retrieval: int = 1000,
    captions_per_image: int = 5,
    templates: str = "photo",
) -> dict[str, Any]:
    """Zero-shot top-1/top-5 over shape x colour classes and R@K among `num_retrieval` multi-object scenes.

    Returns {"classification": {...}, "retrieval": {...}, "seed", "image_size"}; either part is left out
    when its count is 0.
    """
    from alignsam.synthetic import SceneConfig, SceneGenerator

    result: dict[str, Any] = {"seed": seed, "image_size": image_size}
    if per_class > 0:
        config = SceneConfig(image_size=image_size)
        gen = SceneGenerator(config, seed=seed)
        pairs = [(shape, colour) for colour in config.colours for shape in config.shapes]  # config.classes order
        images: list[np.ndarray] = []
        targets: list[int] = []
        for j in range(per_class):
            for c, pair in enumerate(pairs):
                images.append(gen.scene(j * len(pairs) + c, objects=[pair]).image)
                targets.append(c)
        result["classification"] = zero_shot_classification(
            encoder, images, targets, list(config.classes), templates=templates
        )
        result["classification"].pop("per_class_top1")
    if num_retrieval > 0:
        gen = SceneGenerator(SceneConfig(image_size=image_size, min_objects=2), seed=seed + 1)
        scenes = [gen.scene(i) for i in range(num_retrieval)]
        captions = [gen.clean_captions(s, captions_per_image) for s in scenes]
        result["retrieval"] = retrieval(encoder, [s.image for s in scenes], captions)
    return result
