"""Fixtures of the fine-tuning tests: a small SAM configuration and tiny synthetic data sets on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from alignsam.sam import ImageEncoderConfig, MaskDecoderConfig, PromptEncoderConfig, SamConfig
from alignsam.synthetic import SceneConfig, SceneGenerator, write_segmentation


def small_config(image_size: int = 64) -> SamConfig:
    """A SAM small enough for a training step in well under a second: 64 px, patches of 8 (an 8 x 8 grid)."""
    return SamConfig(
        image_encoder=ImageEncoderConfig(
            image_size=image_size,
            patch_size=8,
            embed_dim=32,
            depth=2,
            num_heads=2,
            mlp_dim=64,
            out_chans=32,
            window_size=4,
            global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoderConfig(embed_dim=32, mask_in_chans=8),
        mask_decoder=MaskDecoderConfig(transformer_dim=32, num_heads=2, mlp_dim=64, iou_head_hidden_dim=32),
    )


@pytest.fixture(scope="session")
def small_arch(tmp_path_factory: pytest.TempPathFactory) -> str:
    """`small_config()` as a config.json, the way `--arch` takes a custom architecture."""
    path = tmp_path_factory.mktemp("arch") / "config.json"
    path.write_text(json.dumps(small_config().to_dict()))
    return str(path)


@pytest.fixture(scope="session")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 synthetic 64 px scenes in the COCO layout (images/ + annotations.json), with PNG masks too."""
    out = tmp_path_factory.mktemp("synth") / "train"
    generator = SceneGenerator(SceneConfig(image_size=64, max_objects=3), seed=3)
    write_segmentation(generator, out, num=12, mask_pngs=True, progress=False)
    return out


@pytest.fixture(scope="package", autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    """One CPU thread: these tests run many small operations, and on a shared machine PyTorch's second
    thread spends them waiting for a core (7x slower than one thread, measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
