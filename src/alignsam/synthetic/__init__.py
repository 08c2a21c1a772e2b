"""A deterministic synthetic noisy image-text data set: rendered shapes with captions, noise and exact masks.

It is how the project proves, on a small CPU machine without network, that training works: a small ALIGN
learns "<colour> <shape>" classes and multi-object retrieval from its noisy captions, and a small SAM learns
to segment its objects. Everything depends only on (config, seed, index), so any scene can be regenerated
on the fly, and train and held-out sets are disjoint by seed or by index range.

    >>> from alignsam.synthetic import SceneConfig, SceneGenerator, write_webdataset
    >>> gen = SceneGenerator(SceneConfig(image_size=128, noise=0.3), seed=0)
    >>> scene = gen[0]                      # image H x W x 3 uint8, objects with masks, captions
    >>> scene.caption, scene.noise          # doctest: +SKIP
    ('a photo of a red circle and two blue stars', 'none')
    >>> write_webdataset(gen, "data/train", num=20_000)  # doctest: +SKIP

See docs/synthetic.md for the vocabularies, caption grammar, noise kinds and layouts.
"""

from alignsam.io.rle import decode_rle, encode_rle
from alignsam.synthetic.captions import caption_variants, clean_caption
from alignsam.synthetic.config import NOISE_KINDS, NoiseKind, SceneConfig
from alignsam.synthetic.export import (
    CORRUPTIONS,
    write_classification,
    write_folder,
    write_retrieval,
    write_segmentation,
    write_webdataset,
)
from alignsam.synthetic.layout import Placement
from alignsam.synthetic.metadata import COYO_COLUMNS, coyo_metadata
from alignsam.synthetic.scenes import Scene, SceneGenerator, SceneObject, SceneRange
from alignsam.synthetic.vocab import (
    BACKGROUNDS,
    COLOURS,
    DEFAULT_COLOURS,
    DEFAULT_SHAPES,
    POSITIONS,
    SHAPES,
    SIZES,
)

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "CORRUPTIONS",
    "COYO_COLUMNS",
    "DEFAULT_COLOURS",
    "DEFAULT_SHAPES",
    "NOISE_KINDS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "NoiseKind",
    "Placement",
    "Scene",
    "SceneConfig",
    "SceneGenerator",
    "SceneObject",
    "SceneRange",
    "caption_variants",
    "clean_caption",
    "coyo_metadata",
    "decode_rle",
    "encode_rle",
    "write_classification",
    "write_folder",
    "write_retrieval",
    "write_segmentation",
    "write_webdataset",
]
