"""Small data sets written by the synthetic writers, and a tiny architecture, for the training tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignsam.align import AlignConfig, AlignTextConfig, AlignVisionConfig
from alignsam.synthetic import SceneConfig, SceneGenerator, write_folder, write_webdataset


def tiny_config(vocab_size: int = 300, dropout: float = 0.1) -> AlignConfig:
    """A 32 px, 6-block EfficientNet and a 1-layer, 32-wide BERT: a training step takes milliseconds."""
    vision = AlignVisionConfig(width_coefficient=0.25, depth_coefficient=0.25, image_size=32, drop_connect_rate=dropout)
    text = AlignTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return AlignConfig(text_config=text, vision_config=vision, projection_dim=vision.embed_dim)


@pytest.fixture(scope="session")
def tiny_arch(tmp_path_factory) -> Path:
    """A config.json of `tiny_config()` (what `--arch` reads)."""
    path = tmp_path_factory.mktemp("arch") / "config.json"
    path.write_text(json.dumps(tiny_config().to_dict()))
    return path


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> dict:
    """6 shards of 40 noisy 32 px scenes, 10% of the samples damaged on purpose; returns the writer's report."""
    out = tmp_path_factory.mktemp("shards")
    generator = SceneGenerator(SceneConfig(image_size=32, noise=0.3), seed=0)
    return write_webdataset(generator, out, num=240, shard_size=40, corrupt=0.1, progress=False)


@pytest.fixture(scope="session")
def table(tmp_path_factory) -> dict:
    """120 scenes as images/ + captions.parquet + captions.csv with COYO-style metadata columns."""
    out = tmp_path_factory.mktemp("table")
    generator = SceneGenerator(SceneConfig(image_size=32, noise=0.3), seed=1)
    return write_folder(generator, out, num=120, progress=False)
