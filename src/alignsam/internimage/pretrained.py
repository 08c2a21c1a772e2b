"""Loading and saving InternImage checkpoints: hub ids, folders and single weight files, in two layouts.

What `load_internimage(ref)` (= `InternImageModel.from_pretrained(ref)`) accepts, and where the
configuration comes from:

- a folder or hub id written by this library: its `config.json` (`"model_type": "alignsam-internimage"`)
  and `model.safetensors` (official key names);
- a Hugging Face remote-code folder or hub id (`OpenGVLab/internimage_t_1k_224`): its `config.json`
  (`"model_type": "internimage"`; the image size from `preprocessor_config.json`) and `model.safetensors`
  or `pytorch_model.bin`, keys under `model.`;
- an official `.pth` file (weights under `'model'` or `'model_ema'`, or a bare state dict; read with
  `weights_only=True`): a `config.json` beside it if there is one, else the architecture from the tensor
  shapes (`convert.infer_config`).

An explicit `config=` always wins. The model is built on the meta device and the checkpoint's tensors are
assigned in place; every missing, unexpected or mis-shaped key is an error that names it. InternImage-H/G
checkpoints and configurations are refused with a message naming what is supported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from alignsam.errors import CheckpointError, ConfigError, ModelNotFoundError
from alignsam.internimage.convert import Layout, describe, infer_config, matching_preset, to_internimage
from alignsam.internimage.modeling import InternImage, InternImageConfig
from alignsam.internimage.modeling.config import INTERNIMAGE_PRESETS
from alignsam.io.files import read_json_object
from alignsam.io.hub import CacheDir, resolve_first, resolve_path
from alignsam.io.weights import build_on_meta, load_state_dict, load_weights_into, save_safetensors

MODEL_TYPE = "alignsam-internimage"
HF_MODEL_TYPE = "internimage"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
PREPROCESSOR_NAME = "preprocessor_config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHT_CANDIDATES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_LAYOUT_NAMES: dict[Layout, str] = {"official": "official InternImage", "hf": "Hugging Face"}


class InternImageModel(InternImage):
    """`InternImage` with `from_pretrained` and `save_pretrained` (what `load_internimage` returns)."""

    @classmethod
    def from_pretrained(
        cls,
        ref: str | os.PathLike[str],
        *,
        config: InternImageConfig | None = None,
        revision: str | None = None,
        cache_dir: CacheDir = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> InternImageModel:
        """Load from a hub id, a folder or a weights file (see the module docstring); in eval mode."""
        return load_internimage(ref, config=config, revision=revision, cache_dir=cache_dir, dtype=dtype, device=device)

    def save_pretrained(self, directory: str | os.PathLike[str], *, labels: Sequence[str] | None = None) -> Path:
        """Write `config.json` (with `id2label` when `labels` are given) and `model.safetensors`."""
        return save_internimage(self, directory, labels=labels)


def load_internimage(
    ref: str | os.PathLike[str],
    *,
    config: InternImageConfig | None = None,
    revision: str | None = None,
    cache_dir: CacheDir = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> InternImageModel:
    """An `InternImageModel` from a hub id, a folder or a weights file (see the module docstring); eval mode."""
    if isinstance(ref, str) and ref in INTERNIMAGE_PRESETS:
        raise ModelNotFoundError(
            f"'{ref}' names an architecture, not weights: pass a hub id, a folder or a .pth file "
            f"(InternImage(INTERNIMAGE_PRESETS['{ref}']()) builds it with random weights)."
        )
    local = resolve_path(ref)
    if local is not None and local.is_file():
        state_dict = load_state_dict(local)
        chosen = config if config is not None else _config_beside(local)
        return _build(state_dict, chosen, f"checkpoint '{local}'", dtype, device)
    if config is None:
        config = _read_folder_config(ref, local, revision, cache_dir)
    weights = resolve_first(ref, WEIGHT_CANDIDATES, revision=revision, cache_dir=cache_dir)
    assert weights is not None
    return _build(load_state_dict(weights), config, f"checkpoint '{ref}'", dtype, device)


def save_internimage(
    model: InternImage, directory: str | os.PathLike[str], *, labels: Sequence[str] | None = None
) -> Path:
    """Write `config.json` and `model.safetensors` (official key names) into `directory`; returns it."""
    config = model.config
    if labels is not None and len(labels) != config.num_classes:
        raise ConfigError(f"{len(labels)} labels given for a model with {config.num_classes} classes.")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION, **config.to_dict()}
    if labels is not None:
        payload["id2label"] = {str(i): str(name) for i, name in enumerate(labels)}
    (out / CONFIG_NAME).write_text(json.dumps(payload, indent=2) + "\n")
    save_safetensors(model.state_dict(), out / WEIGHTS_NAME, metadata={"format": "pt", "model_type": MODEL_TYPE})
    return out


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


def _read_folder_config(
    ref: str | os.PathLike[str], local: Path | None, revision: str | None, cache_dir: CacheDir
) -> InternImageConfig:
    try:
        path = resolve_first(ref, [CONFIG_NAME], revision=revision, cache_dir=cache_dir)
    except ModelNotFoundError as err:
        pth = sorted(p.name for p in local.glob("*.pth")) if local is not None and local.is_dir() else []
        hint = f" It holds {pth}: pass the file itself." if pth else ""
        raise ModelNotFoundError(f"{err}{hint}") from err
    assert path is not None
    data = read_json_object(path, ConfigError)
    preprocessor = None
    if data.get("model_type") == HF_MODEL_TYPE:
        pre = resolve_first(ref, [PREPROCESSOR_NAME], required=False, revision=revision, cache_dir=cache_dir)
        preprocessor = read_json_object(pre, ConfigError) if pre is not None else None
    return read_config(data, preprocessor)


def _config_beside(weights: Path) -> InternImageConfig | None:
    candidate = weights.parent / CONFIG_NAME
    if not candidate.is_file():
        return None
    data = read_json_object(candidate, ConfigError)
    if data.get("model_type") not in (MODEL_TYPE, HF_MODEL_TYPE):
        return None  # another model's config in the same folder
    pre = weights.parent / PREPROCESSOR_NAME
    preprocessor = read_json_object(pre, ConfigError) if pre.is_file() else None
    return read_config(data, preprocessor)


def _build(
    state_dict: Mapping[str, torch.Tensor],
    config: InternImageConfig | None,
    source: str,
    dtype: torch.dtype | None,
    device: str | torch.device | None,
) -> InternImageModel:
    try:
        converted, layout = to_internimage(state_dict)
    except CheckpointError as err:
        raise CheckpointError(f"{source}: {err}") from err
    chosen = config if config is not None else infer_config(converted)
    model = build_on_meta(lambda: InternImageModel(chosen))
    if dtype is not None:
        model = model.to(dtype)
    try:
        load_weights_into(model, converted, source=f"{source} ({_LAYOUT_NAMES[layout]} layout)")
    except CheckpointError as err:
        raise CheckpointError(f"{err}{_mismatch_hint(converted, chosen)}") from err
    if device is not None:
        model = model.to(device)
    return model.eval()


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
