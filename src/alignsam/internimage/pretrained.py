"""Reading and writing InternImage checkpoints: hub ids, folders and single weight files, in two layouts.

What `InternImage.from_pretrained(ref)` accepts (after `alignsam.io.resolve.resolve_model`), and where the
configuration comes from:

- a short name (`internimage-t` for `OpenGVLab/internimage_t_1k_224`, `-s`, `-b`, `-l`, `-xl`), as its hub id;
- a folder or hub id written by this library: its `config.json` (`"model_type": "alignsam-internimage"`)
  and `model.safetensors` (official key names);
- a Hugging Face remote-code folder or hub id (`OpenGVLab/internimage_t_1k_224`): its `config.json`
  (`"model_type": "internimage"`; the image size from `preprocessor_config.json`) and `model.safetensors`
  or `pytorch_model.bin`, keys under `model.`;
- an official `.pth` file (weights under `'model'` or `'model_ema'`, or a bare state dict; read with
  `weights_only=True`): an InternImage `config.json` beside it if there is one, else the architecture from
  the tensor shapes (`convert.infer_config`).

An explicit `config=` always wins. The model is built on the meta device by the caller's `build` and the
checkpoint's tensors are assigned in place; every missing, unexpected or mis-shaped key is an error that
names it. InternImage-H/G checkpoints and configurations are refused with a message naming what is supported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from alignsam.errors import CheckpointError, ConfigError
from alignsam.internimage.convert import Layout, describe, infer_config, matching_preset, to_internimage
from alignsam.internimage.modeling.config import INTERNIMAGE_PRESETS, InternImageConfig
from alignsam.io.checkpoints import CONFIG_NAME, WEIGHT_FILES, build_and_load, config_beside, folder_config
from alignsam.io.files import write_text_atomic
from alignsam.io.resolve import ModelSource
from alignsam.io.weights import load_state_dict, save_safetensors

MODEL_TYPE = "alignsam-internimage"
HF_MODEL_TYPE = "internimage"
MODEL_TYPES = (MODEL_TYPE, HF_MODEL_TYPE)
"""The `model_type`s of an InternImage `config.json`: ours and the Hugging Face remote code's."""
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
M = TypeVar("M", bound=nn.Module)
_LAYOUT_NAMES: dict[Layout, str] = {"official": "official InternImage", "hf": "Hugging Face"}


def load(
    source: ModelSource,
    build: Callable[[InternImageConfig], M],
    *,
    config: InternImageConfig | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> M:
    """Build a model with `build(config)` on the meta device and assign the checkpoint `source` names (see the
    module docstring); in eval mode. `InternImage.from_pretrained` calls this with its own class."""
    local = source.path
    if local is not None and local.is_file():
        state_dict = load_state_dict(local)
        beside = config_beside(local, MODEL_TYPES, HF_MODEL_TYPE) if config is None else None
        chosen = config if beside is None else read_config(*beside)
        return _build(state_dict, chosen, build, f"checkpoint '{local}'", dtype, device)
    if config is None:
        config = read_config(*folder_config(source, HF_MODEL_TYPE))
    weights = source.find(WEIGHT_FILES)
    assert weights is not None
    return _build(load_state_dict(weights), config, build, f"checkpoint '{source}'", dtype, device)


def save(
    model: nn.Module,
    config: InternImageConfig,
    directory: str | os.PathLike[str],
    *,
    labels: Sequence[str] | None = None,
) -> Path:
    """Write `config.json` (with `id2label` when `labels` are given) and `model.safetensors` (official key
    names) into `directory`; returns it."""
    if labels is not None and len(labels) != config.num_classes:
        raise ConfigError(f"{len(labels)} labels given for a model with {config.num_classes} classes.")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    payload = config_json(config)
    if labels is not None:
        payload["id2label"] = {str(i): str(name) for i, name in enumerate(labels)}
    write_text_atomic(out / CONFIG_NAME, json.dumps(payload, indent=2) + "\n")
    save_safetensors(model.state_dict(), out / WEIGHTS_NAME, metadata={"format": "pt", "model_type": MODEL_TYPE})
    return out


def config_json(config: InternImageConfig) -> dict[str, Any]:
    """The object our `config.json` holds for `config` (`read_config` reads it back)."""
    return {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION, **config.to_dict()}


def read_config(data: Mapping[str, Any], preprocessor: Mapping[str, Any] | None = None) -> InternImageConfig:
    """Our `config.json` or a Hugging Face remote-code one (as dicts) -> `InternImageConfig`.

    A Hugging Face config has no image size: it comes from `preprocessor`'s crop size when given, else from
    the preset with the same architecture, else 224."""
    model_type = data.get("model_type")
    if model_type == MODEL_TYPE:
        version = data.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ConfigError(
                f"config.json has format_version {version!r}; this alignsam reads up to {FORMAT_VERSION}."
            )
        return InternImageConfig.from_dict(data)
    if model_type == HF_MODEL_TYPE:
        config = InternImageConfig.from_dict(data)
        size = _crop_size(preprocessor) if preprocessor else None
        if size is None:
            preset = matching_preset(config.to_dict())
            size = INTERNIMAGE_PRESETS[preset]().image_size if preset else config.image_size
        return config.replace(image_size=size)
    raise ConfigError(
        f"config.json describes model_type={model_type!r}, not InternImage ('{MODEL_TYPE}' or Hugging Face "
        f"'{HF_MODEL_TYPE}')."
    )


def _crop_size(preprocessor: Mapping[str, Any]) -> int | None:
    value = preprocessor.get("crop_size", preprocessor.get("size"))
    if isinstance(value, Mapping):
        value = value.get("height", value.get("shortest_edge"))
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _build(
    state_dict: Mapping[str, torch.Tensor],
    config: InternImageConfig | None,
    build: Callable[[InternImageConfig], M],
    source: str,
    dtype: torch.dtype | None,
    device: str | torch.device | None,
) -> M:
    try:
        converted, layout = to_internimage(state_dict)
    except CheckpointError as err:
        raise CheckpointError(f"{source}: {err}") from err
    chosen = config if config is not None else infer_config(converted)
    return build_and_load(
        lambda: build(chosen),
        converted,
        source=f"{source} ({_LAYOUT_NAMES[layout]} layout)",
        dtype=dtype,
        device=device,
        hint=lambda: _mismatch_hint(converted, chosen),
    )


def _mismatch_hint(state_dict: Mapping[str, torch.Tensor], config: InternImageConfig) -> str:
    try:
        found = infer_config(state_dict)
    except (CheckpointError, ConfigError):
        return ""
    if describe(found) == describe(config):
        return ""
    return (
        f" The checkpoint holds {describe(found)} but {describe(config)} was built: load it without a config "
        "(its shapes give the architecture), or with the matching preset."
    )
