"""Reading and writing ALIGN checkpoints in Hugging Face's layout (a hub id or a local folder).

A folder holds `config.json` and the weights: `model.safetensors` (transformers 5, preferred), a sharded
`model.safetensors.index.json`, or `pytorch_model.bin` (the hub's align-base; read with `weights_only=True`).
Models are built on the meta device and the tensors assigned in place, so nothing is initialised twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from alignsam.io.files import read_json_object
from alignsam.io.hub import CacheDir, resolve_first
from alignsam.io.weights import build_on_meta, load_state_dict, load_weights_into, save_safetensors

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

# Buffers older transformers saved as persistent, and pre-training heads of BERT checkpoints.
IGNORED_KEYS = (r"(^|\.)position_ids$", r"(^|\.)token_type_ids$", r"^cls\.")

M = TypeVar("M", bound=nn.Module)
StateDict = dict[str, torch.Tensor]


def read_config(ref: str | os.PathLike[str], revision: str | None, cache_dir: CacheDir) -> dict[str, Any]:
    path = resolve_first(ref, ["config.json"], revision=revision, cache_dir=cache_dir)
    assert path is not None
    return read_json_object(path)


def read_weights(ref: str | os.PathLike[str], revision: str | None, cache_dir: CacheDir) -> StateDict:
    path = resolve_first(ref, WEIGHT_FILES, revision=revision, cache_dir=cache_dir)
    assert path is not None
    return load_state_dict(path)


def take_prefix(sd: Mapping[str, torch.Tensor], *prefixes: str) -> StateDict:
    """The tensors under the first of `prefixes` that any key starts with, prefix removed; else `sd` itself."""
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in sd):
            return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    return dict(sd)


def load_pretrained(
    factory: Callable[[], M],
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    dtype: torch.dtype | None,
    device: str | torch.device | None,
) -> M:
    """Build with `factory` on the meta device, assign `state_dict` strictly, return in eval mode."""
    model = build_on_meta(factory)
    load_weights_into(model, state_dict, ignore_unexpected=IGNORED_KEYS, source=source)
    model.eval()
    if dtype is not None or device is not None:
        model.to(device=device, dtype=dtype)
    return model


def write_pretrained(
    directory: str | os.PathLike[str], config: dict[str, Any], architecture: str, state_dict: StateDict
) -> Path:
    """Write `config.json` and `model.safetensors` (Hugging Face names) into `directory`."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = {"architectures": [architecture], **config}
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_safetensors(state_dict, out / "model.safetensors")
    return out
