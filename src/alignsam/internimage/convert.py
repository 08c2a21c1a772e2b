"""InternImage checkpoint layouts -> ours, and the architecture read from a state dict's shapes.

Layouts (each key below is one tensor; `{i}` a level, `{j}` a block):

- official (`classification/models/intern_image.py`, `.pth` files with the weights under `'model'` or
  `'model_ema'`, or a bare state dict): `patch_embed.conv1.weight`, `levels.{i}.blocks.{j}.dcn.offset.weight`,
  `levels.{i}.blocks.{j}.gamma1`, `conv_head.1.0.running_mean`, `head.weight`, ... This is our layout too:
  our module names are the official ones.
- Hugging Face remote code (`OpenGVLab/internimage_*`): the same keys under `model.`, with the layer scales
  `gamma1`/`gamma2` named `layer_scale1`/`layer_scale2` (the hub's `classification/huggingface/convert.py`).

`to_internimage` detects the layout and renames; `infer_config` reads the architecture from the shapes and
takes what shapes cannot tell (offset scale, image size) from the preset whose architecture matches.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Literal

import torch

from alignsam.errors import CheckpointError
from alignsam.internimage.modeling.config import INTERNIMAGE_PRESETS, SUPPORTED, InternImageConfig

Layout = Literal["official", "hf"]

StateDict = dict[str, torch.Tensor]

HF_PREFIX = "model."
STEM_KEY = "patch_embed.conv1.weight"

# keys that only InternImage-H/G checkpoints have, and what they are
_HG_MARKERS = {
    "res_post_norm1": "res_post_norm",
    "center_feature_scale_proj_weight": "center_feature_scale",
    ".post_norms.": "level2_post_norm",
    "clip_projector.": "use_clip_projector",
    "dcnv3_head_x4": "use_clip_projector",
}
_BLOCK = re.compile(r"^levels\.(\d+)\.blocks\.(\d+)\.")
_LEVEL = re.compile(r"^levels\.(\d+)\.")


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> Layout:
    """'hf' when every key is under `model.`, else 'official'; a `CheckpointError` when neither has the stem."""
    keys = list(state_dict)
    if keys and all(k.startswith(HF_PREFIX) for k in keys):
        if HF_PREFIX + STEM_KEY not in state_dict:
            raise CheckpointError(_not_internimage(keys, HF_PREFIX + STEM_KEY))
        return "hf"
    if STEM_KEY not in state_dict:
        raise CheckpointError(_not_internimage(keys, STEM_KEY))
    return "official"


def hf_to_internimage(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Hugging Face layout -> ours: drop `model.`, `layer_scale1/2` -> `gamma1/2`."""
    out: StateDict = {}
    for key, value in state_dict.items():
        if not key.startswith(HF_PREFIX):
            raise CheckpointError(f"Hugging Face InternImage key {key!r} is not under '{HF_PREFIX}'.")
        name = key[len(HF_PREFIX) :]
        name = re.sub(r"\.layer_scale([12])$", r".gamma\1", name)
        out[name] = value
    return out


def internimage_to_hf(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Ours -> the Hugging Face layout (the inverse of `hf_to_internimage`)."""
    return {HF_PREFIX + re.sub(r"\.gamma([12])$", r".layer_scale\1", k): v for k, v in state_dict.items()}


def to_internimage(state_dict: Mapping[str, torch.Tensor]) -> tuple[StateDict, Layout]:
    """Any supported layout -> ours, with the layout it was in. InternImage-H/G checkpoints are refused."""
    layout = detect_layout(state_dict)
    converted = hf_to_internimage(state_dict) if layout == "hf" else dict(state_dict)
    _refuse_hg(converted)
    if "conv_head.0.weight" not in converted:
        raise CheckpointError(
            "This InternImage checkpoint has no classification head (no 'conv_head.0.weight'): a backbone-only "
            "export (Hugging Face's InternImageModel with num_classes=0) is not supported; use the "
            "image-classification checkpoint."
        )
    return converted, layout


def infer_config(state_dict: Mapping[str, torch.Tensor], image_size: int | None = None) -> InternImageConfig:
    """The architecture of a state dict in our layout, from its shapes.

    Channels, depths, groups, MLP ratio, head width, classes, post-norm and layer scale are read from the
    tensors. The offset scale and the image size are not visible in any shape: they are taken from the
    published preset with the same architecture (2.0 and 384 for L and XL), else the defaults 1.0 and 224;
    `image_size` overrides the size.
    """
    _refuse_hg(state_dict)
    try:
        channels = int(state_dict["patch_embed.conv2.weight"].shape[0])
        level_ids = sorted({int(m.group(1)) for k in state_dict if (m := _LEVEL.match(k))})
        if level_ids != list(range(len(level_ids))) or not level_ids:
            raise CheckpointError(f"InternImage levels are not numbered 0..n-1: {level_ids}.")
        depths, groups = [], []
        for i in level_ids:
            blocks = sorted({int(m.group(2)) for k in state_dict if (m := _BLOCK.match(k)) and int(m.group(1)) == i})
            if blocks != list(range(len(blocks))) or not blocks:
                raise CheckpointError(f"InternImage level {i} has blocks numbered {blocks}.")
            depths.append(len(blocks))
            points = state_dict[f"levels.{i}.blocks.0.dcn.mask.weight"].shape[0]
            kernel = state_dict[f"levels.{i}.blocks.0.dcn.dw_conv.0.weight"].shape[-1]
            if kernel != 3 or points % 9:
                raise CheckpointError(
                    f"InternImage level {i} has a {kernel}x{kernel} depthwise kernel and {points} mask outputs, "
                    f"not a 3x3 DCNv3 (InternImage-H/G); supported: {SUPPORTED}."
                )
            groups.append(int(points // 9))
        mlp_ratio = _ratio(state_dict["levels.0.blocks.0.mlp.fc1.weight"].shape[0], channels)
        num_features = channels * 2 ** (len(level_ids) - 1)
        cls_scale = _ratio(state_dict["conv_head.0.weight"].shape[0], num_features)
        num_classes = int(state_dict["head.weight"].shape[0]) if "head.weight" in state_dict else 0
    except KeyError as err:
        raise CheckpointError(f"InternImage checkpoint lacks {err.args[0]!r}.") from err
    shape = {
        "channels": channels,
        "depths": tuple(depths),
        "groups": tuple(groups),
        "mlp_ratio": float(mlp_ratio),
        "cls_scale": float(cls_scale),
        "num_classes": num_classes,
        "post_norm": "levels.0.norm.0.weight" not in state_dict,
        "layer_scale": 1e-5 if "levels.0.blocks.0.gamma1" in state_dict else None,
    }
    preset = matching_preset(shape)
    base = INTERNIMAGE_PRESETS[preset]() if preset else InternImageConfig()
    config = base.replace(**shape)
    return config.replace(image_size=image_size) if image_size is not None else config


def matching_preset(fields: Mapping[str, object]) -> str | None:
    """Name of the preset whose channels, depths, groups and normalisation equal `fields`', or None."""
    keys = ("channels", "depths", "groups", "post_norm")
    wanted = {k: tuple(v) if isinstance(v, list) else v for k, v in ((k, fields[k]) for k in keys)}
    for name, build in INTERNIMAGE_PRESETS.items():
        preset = build()
        if all(getattr(preset, k) == wanted[k] for k in keys):
            return name
    return None


def describe(config: InternImageConfig) -> str:
    """'InternImage-T' for a preset's architecture, else its channels, depths and groups."""
    name = matching_preset(dataclasses.asdict(config))
    if name is not None:
        return "InternImage-" + name.split("-", 1)[1].upper()
    return f"InternImage (channels {config.channels}, depths {list(config.depths)}, groups {list(config.groups)})"


def _ratio(width: int, base: int) -> float:
    """A ratio r with int(base * r) == width, as the model computes widths (width / base can fall short)."""
    r = width / base
    return r if int(base * r) == width else (width + 0.5) / base


def _refuse_hg(state_dict: Mapping[str, torch.Tensor]) -> None:
    for key in state_dict:
        for marker, feature in _HG_MARKERS.items():
            if marker in key:
                raise CheckpointError(
                    f"This is an InternImage-H/G checkpoint ({feature}: {key!r}), which is not supported; "
                    f"supported: {SUPPORTED}."
                )


def _not_internimage(keys: list[str], expected: str) -> str:
    shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
    return (
        f"Not an InternImage checkpoint: no {expected!r} among its {len(keys)} tensors ({shown}). Supported "
        f"layouts: the official .pth ('patch_embed.*', 'levels.*') and Hugging Face's ('model.patch_embed.*')."
    )
