"""Hugging Face's ALIGN / BERT key layout <-> ours: one rename table per tower, both directions.

Our module names describe our model (`layers.3.attn.qkv`, `blocks.7.conv_dw`); the published checkpoints
use transformers' names (`encoder.layer.3.attention.self.query`, `encoder.blocks.7.depthwise_conv...`).
Besides renaming, the only transformation is fusing BERT's separate query, key and value projections into
one `qkv` matrix (and splitting it again on the way out). Keys no rule knows are passed through unchanged,
so strict loading names them as unexpected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

StateDict = dict[str, torch.Tensor]

# (Hugging Face, ours), relative to the tower. {i}: a layer index; {p}: a parameter or buffer name.
TEXT_RULES: list[tuple[str, str]] = [
    ("embeddings.word_embeddings.{p}", "embeddings.word.{p}"),
    ("embeddings.position_embeddings.{p}", "embeddings.position.{p}"),
    ("embeddings.token_type_embeddings.{p}", "embeddings.token_type.{p}"),
    ("embeddings.LayerNorm.{p}", "embeddings.norm.{p}"),
    ("encoder.layer.{i}.attention.self.query.{p}", "layers.{i}.attn.q.{p}"),
    ("encoder.layer.{i}.attention.self.key.{p}", "layers.{i}.attn.k.{p}"),
    ("encoder.layer.{i}.attention.self.value.{p}", "layers.{i}.attn.v.{p}"),
    ("encoder.layer.{i}.attention.output.dense.{p}", "layers.{i}.attn.proj.{p}"),
    ("encoder.layer.{i}.attention.output.LayerNorm.{p}", "layers.{i}.norm1.{p}"),
    ("encoder.layer.{i}.intermediate.dense.{p}", "layers.{i}.mlp.fc1.{p}"),
    ("encoder.layer.{i}.output.dense.{p}", "layers.{i}.mlp.fc2.{p}"),
    ("encoder.layer.{i}.output.LayerNorm.{p}", "layers.{i}.norm2.{p}"),
    ("pooler.dense.{p}", "pooler.dense.{p}"),
]

VISION_RULES: list[tuple[str, str]] = [
    ("embeddings.convolution.{p}", "stem.conv.{p}"),
    ("embeddings.batchnorm.{p}", "stem.bn.{p}"),
    ("encoder.blocks.{i}.expansion.expand_conv.{p}", "blocks.{i}.conv_pw.{p}"),
    ("encoder.blocks.{i}.expansion.expand_bn.{p}", "blocks.{i}.bn1.{p}"),
    ("encoder.blocks.{i}.depthwise_conv.depthwise_conv.{p}", "blocks.{i}.conv_dw.{p}"),
    ("encoder.blocks.{i}.depthwise_conv.depthwise_norm.{p}", "blocks.{i}.bn2.{p}"),
    ("encoder.blocks.{i}.squeeze_excite.reduce.{p}", "blocks.{i}.se.conv_reduce.{p}"),
    ("encoder.blocks.{i}.squeeze_excite.expand.{p}", "blocks.{i}.se.conv_expand.{p}"),
    ("encoder.blocks.{i}.projection.project_conv.{p}", "blocks.{i}.conv_pwl.{p}"),
    ("encoder.blocks.{i}.projection.project_bn.{p}", "blocks.{i}.bn3.{p}"),
]

# Where each tower lives: (Hugging Face prefix in AlignModel, our prefix in AlignModel).
TEXT_PREFIX = ("text_model.", "text_model.bert.")
VISION_PREFIX = ("vision_model.", "vision_model.efficientnet.")

_QKV = re.compile(r"^(layers\.\d+\.attn\.)(q|k|v)\.(weight|bias)$")
_FUSED = re.compile(r"^(layers\.\d+\.attn\.)qkv\.(weight|bias)$")


def _compile(pattern: str) -> re.Pattern[str]:
    escaped = re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>\w+)")
    return re.compile(f"^{escaped}$")


def _rename(sd: Mapping[str, torch.Tensor], rules: list[tuple[str, str]], reverse: bool) -> StateDict:
    table = [(_compile(dst if reverse else src), src if reverse else dst) for src, dst in rules]
    out: StateDict = {}
    for key, value in sd.items():
        for pattern, template in table:
            m = pattern.match(key)
            if m:
                key = template.format(**m.groupdict())
                break
        out[key] = value
    return out


def _fuse_qkv(sd: StateDict) -> StateDict:
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    out: StateDict = {}
    for key, value in sd.items():
        m = _QKV.match(key)
        if m:
            parts.setdefault((m[1], m[3]), {})[m[2]] = value
        else:
            out[key] = value
    for (prefix, kind), qkv in parts.items():
        if set(qkv) != {"q", "k", "v"}:  # leave an incomplete set for strict loading to report
            out.update({f"{prefix}{n}.{kind}": t for n, t in qkv.items()})
            continue
        out[f"{prefix}qkv.{kind}"] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], dim=0)
    return out


def _split_qkv(sd: StateDict) -> StateDict:
    out: StateDict = {}
    for key, value in sd.items():
        m = _FUSED.match(key)
        if not m:
            out[key] = value
            continue
        for name, part in zip("qkv", value.chunk(3, dim=0), strict=True):
            out[f"{m[1]}{name}.{m[2]}"] = part
    return out


def hf_text_to_ours(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """BERT tower, Hugging Face names (no prefix) -> ours."""
    return _fuse_qkv(_rename(sd, TEXT_RULES, reverse=False))


def ours_text_to_hf(sd: Mapping[str, torch.Tensor]) -> StateDict:
    return _rename(_split_qkv(dict(sd)), TEXT_RULES, reverse=True)


def hf_vision_to_ours(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """EfficientNet tower, Hugging Face names (no prefix) -> ours."""
    return _rename(sd, VISION_RULES, reverse=False)


def ours_vision_to_hf(sd: Mapping[str, torch.Tensor]) -> StateDict:
    return _rename(sd, VISION_RULES, reverse=True)


def _by_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> tuple[StateDict, StateDict]:
    inside = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    outside = {k: v for k, v in sd.items() if not k.startswith(prefix)}
    return inside, outside


def hf_align_to_ours(sd: Mapping[str, torch.Tensor], efficientnet: bool = True) -> StateDict:
    """A whole `AlignModel` state dict, Hugging Face layout -> ours. `efficientnet=False`: the image tower is
    another one (`AlignConfig.image_tower`), whose keys under `vision_model.` are its own and stay as they are."""
    text, rest = _by_prefix(sd, TEXT_PREFIX[0])
    out = {TEXT_PREFIX[1] + k: v for k, v in hf_text_to_ours(text).items()}
    if efficientnet:
        vision, rest = _by_prefix(rest, VISION_PREFIX[0])
        out.update({VISION_PREFIX[1] + k: v for k, v in hf_vision_to_ours(vision).items()})
    out.update(rest)  # text_projection.*, temperature (and another tower's vision_model.*, image_projection.*)
    return out


def ours_align_to_hf(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """A whole `AlignModel` state dict, ours -> Hugging Face layout."""
    text, rest = _by_prefix(sd, TEXT_PREFIX[1])
    vision, rest = _by_prefix(rest, VISION_PREFIX[1])
    out = dict(rest)
    out.update({TEXT_PREFIX[0] + k: v for k, v in ours_text_to_hf(text).items()})
    out.update({VISION_PREFIX[0] + k: v for k, v in ours_vision_to_hf(vision).items()})
    return out
