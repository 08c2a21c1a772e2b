"""Reading and writing SAM checkpoints: hub ids, directories and single weight files, in three layouts.

What `SamModel.from_pretrained(ref)` accepts (after `alignsam.io.resolve.resolve_model`), and where the
configuration comes from:

- a bundled model (`demo`) or a short name (`vit_b` for `facebook/sam-vit-base`), as their folder or hub id;
- a directory or hub id written by this library: its `config.json` (`"model_type": "alignsam-sam"`) and
  `model.safetensors`;
- a Hugging Face `SamModel` directory or hub id (`facebook/sam-vit-base`): its `config.json` (plus
  `preprocessor_config.json` when present) and `model.safetensors` or `pytorch_model.bin` (sharded too);
- an official `.pth` file (`sam_vit_b_01ec64.pth`, loaded with `weights_only=True`): the architecture is
  read from the tensor shapes;
- any single weights file: a SAM `config.json` beside it if there is one, else the tensor shapes.

An explicit `config=` always wins. Models are built on the meta device and the checkpoint's tensors are
assigned in place, so even vit_h starts in about a second. Our own format is `config.json` (the
`SamConfig` as JSON plus `"model_type"` and `"format_version"`) and `model.safetensors` in our key layout.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from alignsam.errors import CheckpointError, ConfigError
from alignsam.io.checkpoints import WEIGHT_FILES, build_and_load, config_beside, folder_config
from alignsam.io.files import write_settings, write_text_atomic
from alignsam.io.resolve import ModelSource
from alignsam.io.weights import load_state_dict, save_safetensors
from alignsam.sam.convert import Layout, config_from_hf, describe, infer_config, to_alignsam
from alignsam.sam.modeling.config import SamConfig

MODEL_TYPE = "alignsam-sam"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
HF_MODEL_TYPE = "sam"
M = TypeVar("M", bound=nn.Module)


def load(
    source: ModelSource,
    build: Callable[[SamConfig], M],
    *,
    config: SamConfig | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> M:
    """Build a model with `build(config)` on the meta device and assign the checkpoint `source` names (see
    the module docstring); in eval mode. `SamModel.from_pretrained` calls this with its `from_config`."""
    local = source.path
    if local is not None and local.is_file():
        state_dict = load_state_dict(local)
        beside = config_beside(local, (MODEL_TYPE, HF_MODEL_TYPE), HF_MODEL_TYPE) if config is None else None
        file_config = read_config(*beside) if beside is not None else None
        return _build(state_dict, config or file_config, build, f"checkpoint '{local}'", dtype, device)

    if config is None:
        config = read_config(*folder_config(source, HF_MODEL_TYPE))
    weights = source.find(WEIGHT_FILES)
    assert weights is not None
    return _build(load_state_dict(weights), config, build, f"checkpoint '{source}'", dtype, device)


def read_model_config(source: ModelSource) -> SamConfig:
    """The configuration `load` builds for `source`, without building the model: from `config.json` (a
    Hugging Face folder's with its preprocessor settings), or for a single weights file from a SAM
    `config.json` beside it, else from the tensor shapes (read memory-mapped)."""
    local = source.path
    if local is not None and local.is_file():
        beside = config_beside(local, (MODEL_TYPE, HF_MODEL_TYPE), HF_MODEL_TYPE)
        if beside is not None:
            return read_config(*beside)
        converted, layout = to_alignsam(load_state_dict(local))
        return infer_config(converted, numerics=_numerics(layout))
    return read_config(*folder_config(source, HF_MODEL_TYPE))


def save(
    model: nn.Module,
    config: SamConfig,
    directory: str | os.PathLike[str],
    recommended: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write `config.json`, `model.safetensors` in this library's layout, and each recommended-settings file;
    returns the directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION, **config.to_dict()}
    write_text_atomic(out / CONFIG_NAME, json.dumps(payload, indent=2) + "\n")
    save_safetensors(model.state_dict(), out / WEIGHTS_NAME, metadata={"format": "pt", "model_type": MODEL_TYPE})
    write_settings(out, recommended or {})
    return out


RECOMMENDED_FILES = ("amg.json",)
"""Settings files a SAM folder may hold beside its weights (`amg.json`: the automatic mask generator's)."""


def read_config(data: Mapping[str, Any], preprocessor: Mapping[str, Any] | None = None) -> SamConfig:
    """Our `config.json` or a Hugging Face one (as dicts) -> `SamConfig`."""
    model_type = data.get("model_type")
    if model_type == MODEL_TYPE:
        version = data.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ConfigError(f"config.json has format_version {version}; this alignsam reads up to {FORMAT_VERSION}.")
        return SamConfig.from_dict({k: v for k, v in data.items() if k not in ("model_type", "format_version")})
    if model_type == HF_MODEL_TYPE:
        return config_from_hf(data, preprocessor)
    raise ConfigError(
        f"config.json describes model_type={model_type!r}, not a Segment Anything model "
        f"('{MODEL_TYPE}' or Hugging Face 'sam')."
    )


def _build(
    state_dict: Mapping[str, torch.Tensor],
    config: SamConfig | None,
    build: Callable[[SamConfig], M],
    source: str,
    dtype: torch.dtype | None,
    device: str | torch.device | None,
) -> M:
    converted, layout = to_alignsam(state_dict)
    if config is None:
        config = infer_config(converted, numerics=_numerics(layout))
    chosen = config
    return build_and_load(
        lambda: build(chosen),
        converted,
        source=f"{source} ({_LAYOUT_NAMES[layout]} layout)",
        dtype=dtype,
        device=device,
        hint=lambda: _mismatch_hint(converted, layout, chosen),
    )


_LAYOUT_NAMES: dict[Layout, str] = {
    "official": "official segment-anything",
    "hf": "Hugging Face",
    "alignsam": "alignsam",
}


def _numerics(layout: Layout) -> Layout:
    return "hf" if layout == "hf" else "official"


def _mismatch_hint(state_dict: Mapping[str, torch.Tensor], layout: Layout, config: SamConfig) -> str:
    try:
        found = infer_config(state_dict, numerics=_numerics(layout))
    except CheckpointError:
        return ""
    if found.image_encoder == config.image_encoder:
        return ""
    return (
        f" The checkpoint holds a {describe(found)} model but a {describe(config)} one was built: use the "
        "matching sam_model_registry entry, or SamModel.from_pretrained without a config."
    )
