"""vit_l and vit_h: our presets load the state dicts the official builders save (full forward: benchmark)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch

from alignsam.errors import CheckpointError
from alignsam.sam import sam_model_registry
from alignsam.sam.convert import official_to_alignsam
from alignsam.sam.modeling.config import SAM_PRESETS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["vit_l", "vit_h"])
def test_official_checkpoint_loads(official: Any, tmp_path: Path, name: str) -> None:
    # The official builder's modules, with storage but without its (slow) random initialisation.
    with torch.device("meta"):
        reference = official.sam_model_registry[name]()
    reference = reference.to_empty(device="cpu")
    state = reference.state_dict()
    gen = torch.Generator().manual_seed(0)
    for value in state.values():
        value.copy_(torch.randn(value.shape, generator=gen) if value.numel() < 2**20 else torch.zeros(()))
    path = tmp_path / f"sam_{name}.pth"
    torch.save(state, path)

    start = time.perf_counter()
    model = sam_model_registry[name](checkpoint=path)
    seconds = time.perf_counter() - start
    print(f"\n[{name}] loaded {sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters in {seconds:.2f} s")
    assert model.config == SAM_PRESETS[name]()
    ours = model.state_dict()
    checked = 0
    for key, value in official_to_alignsam(state).items():
        if value.numel() >= 2**20:
            continue
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0)
        checked += 1
    assert checked > 100
    with pytest.raises(CheckpointError, match="holds a vit_"):
        sam_model_registry["vit_b"](checkpoint=path)
