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

from alignsam.errors import CheckpointError, ConfigError, ModelNotFoundError
from alignsam.io.files import read_json_object, write_settings
from alignsam.io.resolve import ModelSource
from alignsam.io.weights import build_on_meta, load_state_dict, load_weights_into, save_safetensors
from alignsam.sam.convert import Layout, config_from_hf, describe, infer_config, to_alignsam
from alignsam.sam.modeling.config import SamConfig

MODEL_TYPE = "alignsam-sam"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
M = TypeVar("M", bound=nn.Module)
_WEIGHT_CANDIDATES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


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
        file_config = _config_beside(local) if config is None else None
        return _build(state_dict, config or file_config, build, f"checkpoint '{local}'", dtype, device)

    if config is None:
        config = _read_config(_resolve_config(source), source)
    weights = source.find(_WEIGHT_CANDIDATES)
    assert weights is not None
    return _build(load_state_dict(weights), config, build, f"checkpoint '{source}'", dtype, device)


def read_model_config(source: ModelSource) -> SamConfig:
    """The configuration `load` builds for `source`, without building the model: from `config.json` (a
    Hugging Face folder's with its `preprocessor_config.json`), or for a single weights file from a SAM
    `config.json` beside it, else from the tensor shapes (read memory-mapped)."""
    local = source.path
    if local is not None and local.is_file():
        config = _config_beside(local)
        if config is None:
            converted, layout = to_alignsam(load_state_dict(local))
            config = infer_config(converted, numerics=_numerics(layout))
        return config
    return _read_config(_resolve_config(source), source)


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
    (out / CONFIG_NAME).write_text(json.dumps(payload, indent=2) + "\n")
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
    if model_type == "sam":
        return config_from_hf(data, preprocessor)
    raise ConfigError(
        f"config.json describes model_type={model_type!r}, not a Segment Anything model "
        f"('{MODEL_TYPE}' or Hugging Face 'sam')."
    )


def _resolve_config(source: ModelSource) -> Path:
    local = source.path
    try:
        path = source.find([CONFIG_NAME])
    except ModelNotFoundError as err:
        pth = sorted(p.name for p in local.glob("*.pth")) if local is not None and local.is_dir() else []
        hint = f" It holds {pth}: pass the file itself." if pth else ""
        raise ModelNotFoundError(f"{err}{hint}") from err
    assert path is not None
    return path


def _read_config(config_path: Path, source: ModelSource) -> SamConfig:
    data = read_json_object(config_path, ConfigError)
    preprocessor = None
    if data.get("model_type") == "sam":
        # transformers 5 writes the processor's settings nested in processor_config.json
        pre_path = source.find(["preprocessor_config.json", "processor_config.json"], required=False)
        if pre_path is not None:
            preprocessor = read_json_object(pre_path, ConfigError)
            if pre_path.name == "processor_config.json":
                preprocessor = preprocessor.get("image_processor", preprocessor)
    return read_config(data, preprocessor)


def _config_beside(weights: Path) -> SamConfig | None:
    candidate = weights.parent / CONFIG_NAME
    if not candidate.is_file():
        return None
    data = read_json_object(candidate, ConfigError)
    if data.get("model_type") not in (MODEL_TYPE, "sam"):
        return None  # some other model's config in the same folder
    pre = weights.parent / "preprocessor_config.json"
    preprocessor = read_json_object(pre, ConfigError) if pre.is_file() and data.get("model_type") == "sam" else None
    return read_config(data, preprocessor)


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
    model = build_on_meta(lambda: build(chosen))
    if dtype is not None:
        model = model.to(dtype)
    try:
        load_weights_into(model, converted, source=f"{source} ({_LAYOUT_NAMES[layout]} layout)")
    except CheckpointError as err:
        raise CheckpointError(f"{err}{_mismatch_hint(converted, layout, chosen)}") from err
    if device is not None:
        model = model.to(device)
    return model.eval()


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
