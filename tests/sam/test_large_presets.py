"""vit_l and vit_h: our presets load the state dicts the official builders save (full forward: benchmark)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch

from alignsam.errors import CheckpointError
from alignsam.sam import sam_model_registry
from alignsam.sam.config import SAM_PRESETS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["vit_l", "vit_h"])
def test_official_checkpoint_loads(official: Any, tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    reference = official.sam_model_registry[name]()
    for p in (reference.image_encoder.blocks[-1].attn.rel_pos_h, reference.image_encoder.pos_embed):
        p.data.normal_()  # zero-initialised by the builder: give them values to check
    path = tmp_path / f"sam_{name}.pth"
    torch.save(reference.state_dict(), path)
    expected = {
        k: reference.state_dict()[k].clone() for k in ("image_encoder.pos_embed", "mask_decoder.iou_token.weight")
    }
    last = f"image_encoder.blocks.{len(reference.image_encoder.blocks) - 1}.attn.rel_pos_h"
    expected[last] = reference.state_dict()[last].clone()
    del reference

    start = time.perf_counter()
    model = sam_model_registry[name](checkpoint=path)
    seconds = time.perf_counter() - start
    print(f"\n[{name}] loaded {sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters in {seconds:.2f} s")
    assert model.config == SAM_PRESETS[name]()
    state = model.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="holds a vit_"):
        sam_model_registry["vit_b"](checkpoint=path)
