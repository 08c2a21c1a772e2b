"""Reading and writing ALIGN checkpoints in Hugging Face's layout (a hub id, a local folder, a bundled model).

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

from alignsam.io.files import read_json_object, write_settings, write_text_atomic
from alignsam.io.hub import CacheDir
from alignsam.io.resolve import ModelSource, Ref, resolve_model
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


def resolve(ref: Ref | ModelSource, revision: str | None = None, cache_dir: CacheDir = None) -> ModelSource:
    """`ref` as an ALIGN model (see `alignsam.io.resolve.resolve_model`)."""
    return resolve_model(ref, "align", revision=revision, cache_dir=cache_dir)


def read_config(source: ModelSource) -> dict[str, Any]:
    path = source.find(["config.json"])
    assert path is not None
    return read_json_object(path)


def read_weights(source: ModelSource) -> StateDict:
    path = source.find(WEIGHT_FILES)
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
    directory: str | os.PathLike[str],
    config: dict[str, Any],
    architecture: str,
    state_dict: StateDict,
    recommended: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write `config.json`, `model.safetensors` (Hugging Face names) and the recommended-settings files into
    `directory`."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = {"architectures": [architecture], **config}
    write_text_atomic(out / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_safetensors(state_dict, out / "model.safetensors")
    write_settings(out, recommended or {})
    return out


RECOMMENDED_FILES = ("regions.json", "vocabulary.json")
"""Settings files an ALIGN folder may hold beside its weights: `regions.json` (how mask crops are shown to
the model when labelling masks) and `vocabulary.json` (`{"tags": [...]}`, the words the model knows, for
tags, mask labels and find when none are given). The demo ALIGN has both: it knows only its scenes' colours
and shapes."""
