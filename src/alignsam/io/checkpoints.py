"""What the loaders of SAM and InternImage share: where a checkpoint's configuration is, and building a model
with a checkpoint's tensors assigned.

Both read the same kinds of reference (after `alignsam.io.resolve.resolve_model`): a folder or hub repository
with a `config.json` (ours, or Hugging Face's with a `preprocessor_config.json` beside it), or a single weights
file, which may have a `config.json` of the same model beside it. The model-specific part, turning those JSON
objects into a configuration, stays with each loader (`read_config`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from alignsam.errors import CheckpointError, ConfigError, ModelNotFoundError
from alignsam.io.files import read_json_object
from alignsam.io.resolve import ModelSource
from alignsam.io.weights import build_on_meta, load_weights_into

CONFIG_NAME = "config.json"
PREPROCESSOR_NAME = "preprocessor_config.json"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
"""A folder's weights, in order of preference (sharded checkpoints by their index)."""

M = TypeVar("M", bound=nn.Module)
ConfigFiles = tuple[dict[str, Any], dict[str, Any] | None]
"""A `config.json` object and, for a Hugging Face one, its `preprocessor_config.json` object (or None)."""


def folder_config(source: ModelSource, hf_model_type: str) -> ConfigFiles:
    """The `config.json` of a folder, bundled model or hub repository, and its `preprocessor_config.json` when
    the config is Hugging Face's (`"model_type": hf_model_type`; the preprocessor is optional).

    A folder without `config.json` that holds `.pth` files is a `ModelNotFoundError` saying to pass the file.
    """
    try:
        path = source.find([CONFIG_NAME])
    except ModelNotFoundError as err:
        local = source.path
        pth = sorted(p.name for p in local.glob("*.pth")) if local is not None and local.is_dir() else []
        hint = f" It holds {pth}: pass the file itself." if pth else ""
        raise ModelNotFoundError(f"{err}{hint}") from err
    assert path is not None
    data = read_json_object(path, ConfigError)
    preprocessor = None
    if data.get("model_type") == hf_model_type:
        # transformers 5 writes the processor's settings nested in processor_config.json
        found = source.find([PREPROCESSOR_NAME, "processor_config.json"], required=False)
        if found is not None:
            preprocessor = read_json_object(found, ConfigError)
            if found.name == "processor_config.json":
                preprocessor = preprocessor.get("image_processor", preprocessor)
    return data, preprocessor


def config_beside(weights: Path, model_types: Collection[str], hf_model_type: str) -> ConfigFiles | None:
    """The `config.json` in the folder of a single weights file when it describes one of `model_types`, with
    the preprocessor as `folder_config`; None when there is none or it belongs to another model."""
    candidate = weights.parent / CONFIG_NAME
    if not candidate.is_file():
        return None
    data = read_json_object(candidate, ConfigError)
    if data.get("model_type") not in model_types:
        return None  # another model's config in the same folder
    pre = weights.parent / PREPROCESSOR_NAME
    hf = data.get("model_type") == hf_model_type
    return data, (read_json_object(pre, ConfigError) if hf and pre.is_file() else None)


def build_and_load(
    build: Callable[[], M],
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    hint: Callable[[], str] = lambda: "",
) -> M:
    """`build()` on the meta device, `state_dict` assigned strictly (`load_weights_into`), in eval mode.

    `source` names the checkpoint in errors; `hint()` is appended to a loading error (for example which
    architecture the checkpoint holds when it is not the one built)."""
    model = build_on_meta(build)
    if dtype is not None:
        model = model.to(dtype)
    try:
        load_weights_into(model, state_dict, source=source)
    except CheckpointError as err:
        raise CheckpointError(f"{err}{hint()}") from err
    if device is not None:
        model = model.to(device)
    return model.eval()
