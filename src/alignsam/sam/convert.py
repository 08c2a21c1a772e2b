"""Foreign checkpoint layouts to ours: one pure `state_dict -> state_dict` function per layout.

- `official_to_alignsam`: the `.pth` files of facebookresearch/segment-anything (`sam_vit_b_01ec64.pth`, ...).
- `hf_to_alignsam`: Hugging Face `SamModel` (`facebook/sam-vit-base`, ...), plus `config_from_hf` for its
  configuration.

Our names follow the official ones except where those are positions in an `nn.Sequential`
(`neck.0` -> `neck.conv1`, `mask_downscaling.3` -> `mask_downscaling.conv2`, `output_upscaling.1` ->
`output_upscaling.norm`). Every source key must match exactly one rule; an unknown key is an error that
names it, and the strict loader then reports any missing one. `infer_config` reads the architecture of a
state dict in our layout from its tensor shapes (never from a file name), for weight files that come
without a configuration.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch

from alignsam.errors import CheckpointError, ConfigError
from alignsam.sam.modeling.config import ImageEncoderConfig, MaskDecoderConfig, PromptEncoderConfig, SamConfig

StateDict = dict[str, torch.Tensor]
Layout = Literal["alignsam", "official", "hf"]
Rule = tuple[str, str | Callable[[re.Match[str]], str]]

_W = r"(weight|bias)"
_ATTN = r"(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"

# Official name -> ours. Keys not listed keep their names only if a "same" rule covers them.
_OFFICIAL_RULES: list[Rule] = [
    (r"image_encoder\.neck\.0\.weight", "image_encoder.neck.conv1.weight"),
    (rf"image_encoder\.neck\.1\.{_W}", r"image_encoder.neck.norm1.\1"),
    (r"image_encoder\.neck\.2\.weight", "image_encoder.neck.conv2.weight"),
    (rf"image_encoder\.neck\.3\.{_W}", r"image_encoder.neck.norm2.\1"),
    (rf"prompt_encoder\.mask_downscaling\.0\.{_W}", r"prompt_encoder.mask_downscaling.conv1.\1"),
    (rf"prompt_encoder\.mask_downscaling\.1\.{_W}", r"prompt_encoder.mask_downscaling.norm1.\1"),
    (rf"prompt_encoder\.mask_downscaling\.3\.{_W}", r"prompt_encoder.mask_downscaling.conv2.\1"),
    (rf"prompt_encoder\.mask_downscaling\.4\.{_W}", r"prompt_encoder.mask_downscaling.norm2.\1"),
    (rf"prompt_encoder\.mask_downscaling\.6\.{_W}", r"prompt_encoder.mask_downscaling.conv3.\1"),
    (rf"mask_decoder\.output_upscaling\.0\.{_W}", r"mask_decoder.output_upscaling.conv1.\1"),
    (rf"mask_decoder\.output_upscaling\.1\.{_W}", r"mask_decoder.output_upscaling.norm.\1"),
    (rf"mask_decoder\.output_upscaling\.3\.{_W}", r"mask_decoder.output_upscaling.conv2.\1"),
    # Unchanged names.
    (r"image_encoder\.pos_embed", "same"),
    (rf"image_encoder\.patch_embed\.proj\.{_W}", "same"),
    (rf"image_encoder\.blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.lin1|mlp\.lin2)\.{_W}", "same"),
    (r"image_encoder\.blocks\.\d+\.attn\.rel_pos_[hw]", "same"),
    (r"prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix", "same"),
    (r"prompt_encoder\.(point_embeddings\.\d+|not_a_point_embed|no_mask_embed)\.weight", "same"),
    (r"mask_decoder\.(iou_token|mask_tokens)\.weight", "same"),
    (rf"mask_decoder\.transformer\.layers\.\d+\.{_ATTN}\.(q|k|v|out)_proj\.{_W}", "same"),
    (rf"mask_decoder\.transformer\.layers\.\d+\.(norm[1-4]|mlp\.lin[12])\.{_W}", "same"),
    (rf"mask_decoder\.transformer\.final_attn_token_to_image\.(q|k|v|out)_proj\.{_W}", "same"),
    (rf"mask_decoder\.transformer\.norm_final_attn\.{_W}", "same"),
    (rf"mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.\d+\.{_W}", "same"),
]
# Buffers some converted files carry although the official loader never reads them.
_OFFICIAL_DROP = ("pixel_mean", "pixel_std")


def official_to_alignsam(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Official segment-anything layout -> ours."""
    sd = {k: v for k, v in state_dict.items() if k not in _OFFICIAL_DROP}
    return _rename(sd, _OFFICIAL_RULES, "official SAM")


def _hf_mlp(m: re.Match[str]) -> str:
    return f"mask_decoder.{m[1]}.layers.{int(m[2]) + 1}.{m[3]}"


_HF_RULES: list[Rule] = [
    (r"vision_encoder\.pos_embed", "image_encoder.pos_embed"),
    (rf"vision_encoder\.patch_embed\.projection\.{_W}", r"image_encoder.patch_embed.proj.\1"),
    (rf"vision_encoder\.layers\.(\d+)\.layer_norm([12])\.{_W}", r"image_encoder.blocks.\1.norm\2.\3"),
    (
        rf"vision_encoder\.layers\.(\d+)\.(attn\.qkv|attn\.proj|mlp\.lin1|mlp\.lin2)\.{_W}",
        r"image_encoder.blocks.\1.\2.\3",
    ),
    (r"vision_encoder\.layers\.(\d+)\.attn\.rel_pos_([hw])", r"image_encoder.blocks.\1.attn.rel_pos_\2"),
    (r"vision_encoder\.neck\.conv([12])\.weight", r"image_encoder.neck.conv\1.weight"),
    (rf"vision_encoder\.neck\.layer_norm([12])\.{_W}", r"image_encoder.neck.norm\1.\2"),
    # The Fourier matrix is tied in transformers: either or both names may be present.
    (r"shared_image_embedding\.positional_embedding", "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (
        r"prompt_encoder\.shared_embedding\.positional_embedding",
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    ),
    (r"prompt_encoder\.point_embed\.(\d+)\.weight", r"prompt_encoder.point_embeddings.\1.weight"),
    (r"prompt_encoder\.(not_a_point_embed|no_mask_embed)\.weight", r"prompt_encoder.\1.weight"),
    (rf"prompt_encoder\.mask_embed\.conv([123])\.{_W}", r"prompt_encoder.mask_downscaling.conv\1.\2"),
    (rf"prompt_encoder\.mask_embed\.layer_norm([12])\.{_W}", r"prompt_encoder.mask_downscaling.norm\1.\2"),
    (r"mask_decoder\.(iou_token|mask_tokens)\.weight", "same"),
    (
        rf"mask_decoder\.transformer\.layers\.(\d+)\.layer_norm([1-4])\.{_W}",
        r"mask_decoder.transformer.layers.\1.norm\2.\3",
    ),
    (rf"mask_decoder\.transformer\.layers\.\d+\.{_ATTN}\.(q|k|v|out)_proj\.{_W}", "same"),
    (rf"mask_decoder\.transformer\.layers\.\d+\.mlp\.lin[12]\.{_W}", "same"),
    (rf"mask_decoder\.transformer\.final_attn_token_to_image\.(q|k|v|out)_proj\.{_W}", "same"),
    (rf"mask_decoder\.transformer\.layer_norm_final_attn\.{_W}", r"mask_decoder.transformer.norm_final_attn.\1"),
    (rf"mask_decoder\.upscale_conv([12])\.{_W}", r"mask_decoder.output_upscaling.conv\1.\2"),
    (rf"mask_decoder\.upscale_layer_norm\.{_W}", r"mask_decoder.output_upscaling.norm.\1"),
    # transformers' SamFeedForward: proj_in, layers.0..n-3, proj_out == our layers.0..n-1.
    (
        rf"mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.proj_in\.{_W}",
        r"mask_decoder.\1.layers.0.\2",
    ),
    (rf"mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.(\d+)\.{_W}", _hf_mlp),
    (rf"mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.proj_out\.{_W}", "proj_out"),
]


def hf_to_alignsam(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Hugging Face `SamModel` layout -> ours."""
    tied = [k for k in _HF_TIED if k in state_dict]
    if len(tied) == 2 and not torch.equal(state_dict[tied[0]], state_dict[tied[1]]):
        raise CheckpointError(f"The Hugging Face checkpoint's tied tensors {tied} differ; the file is inconsistent.")
    sd = {k: v for k, v in state_dict.items() if k != _HF_TIED[1] or len(tied) == 1}
    # proj_out becomes the last of the MLP's layers: count each MLP's hidden layers first.
    middle: dict[str, set[int]] = {}
    for key in sd:
        m = re.fullmatch(r"mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.(\d+)\..*", key)
        if m:
            middle.setdefault(m[1], set()).add(int(m[2]))

    def proj_out(m: re.Match[str]) -> str:
        return f"mask_decoder.{m[1]}.layers.{len(middle.get(m[1], ())) + 1}.{m[2]}"

    rules = [(p, proj_out if r == "proj_out" else r) for p, r in _HF_RULES]
    return _rename(sd, rules, "Hugging Face SamModel")


_HF_TIED = ("shared_image_embedding.positional_embedding", "prompt_encoder.shared_embedding.positional_embedding")


def _rename(state_dict: Mapping[str, torch.Tensor], rules: list[Rule], layout: str) -> StateDict:
    compiled = [(re.compile(p), r) for p, r in rules]
    out: StateDict = {}
    unknown = []
    for key, value in state_dict.items():
        for pattern, repl in compiled:
            m = pattern.fullmatch(key)
            if m is None:
                continue
            if repl == "same":
                new = key
            elif callable(repl):
                new = repl(m)
            else:
                new = m.expand(repl)
            if new in out:
                raise CheckpointError(f"Two {layout} keys map to '{new}' (one of them is '{key}').")
            out[new] = value
            break
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(sorted(unknown)[:8]) + (f", ... ({len(unknown) - 8} more)" if len(unknown) > 8 else "")
        raise CheckpointError(f"The {layout} checkpoint has {len(unknown)} keys this converter does not know: {shown}.")
    return out


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> Layout:
    """Which layout a SAM state dict is in (by its key names); CheckpointError if it is none of them."""
    keys = set(state_dict)
    if any(k.startswith("vision_encoder.") for k in keys):
        return "hf"
    if "image_encoder.neck.0.weight" in keys:
        return "official"
    if "image_encoder.neck.conv1.weight" in keys:
        return "alignsam"
    sample = ", ".join(sorted(keys)[:5])
    raise CheckpointError(
        "This checkpoint is not a Segment Anything model in a known layout (official segment-anything, "
        f"Hugging Face SamModel, or alignsam); its first keys are: {sample}."
    )


def to_alignsam(state_dict: Mapping[str, torch.Tensor]) -> tuple[StateDict, Layout]:
    """Any known layout -> ours; also returns the layout it came in."""
    layout = detect_layout(state_dict)
    if layout == "official":
        return official_to_alignsam(state_dict), layout
    if layout == "hf":
        return hf_to_alignsam(state_dict), layout
    return dict(state_dict), layout


# ---------------------------------------------------------------------------------------------------------
# Configurations.

_HF_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "output_channels": 256,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 1024,
    "patch_size": 16,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-6,
    "qkv_bias": True,
    "mlp_ratio": 4.0,
    "mlp_dim": None,
    "use_abs_pos": True,
    "use_rel_pos": True,
    "window_size": 14,
    "global_attn_indexes": [2, 5, 8, 11],
    "num_pos_feats": 128,
}
_HF_PROMPT_DEFAULTS: dict[str, Any] = {
    "hidden_size": 256,
    "image_size": 1024,
    "patch_size": 16,
    "mask_input_channels": 16,
    "num_point_embeddings": 4,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-6,
}
_HF_DECODER_DEFAULTS: dict[str, Any] = {
    "hidden_size": 256,
    "hidden_act": "relu",
    "mlp_dim": 2048,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "attention_downsample_rate": 2,
    "num_multimask_outputs": 3,
    "iou_head_depth": 3,
    "iou_head_hidden_dim": 256,
    "layer_norm_eps": 1e-6,
}


def config_from_hf(config: Mapping[str, Any], preprocessor: Mapping[str, Any] | None = None) -> SamConfig:
    """A Hugging Face `SamConfig` (its `config.json` as a dict) -> ours; missing fields take HF's defaults.

    transformers hard-codes some epsilons instead of reading the config: 1e-5 for the final decoder norm,
    1e-6 for the neck and the upscaling LayerNorm2d. Those are reproduced here. With `preprocessor` (the
    `preprocessor_config.json`), the normalisation constants come from it.
    """
    if config.get("model_type") not in (None, "sam"):
        raise ConfigError(f"Not a Hugging Face SAM configuration (model_type={config.get('model_type')!r}).")
    vision = {**_HF_VISION_DEFAULTS, **(config.get("vision_config") or {})}
    prompt = {**_HF_PROMPT_DEFAULTS, **(config.get("prompt_encoder_config") or {})}
    decoder = {**_HF_DECODER_DEFAULTS, **(config.get("mask_decoder_config") or {})}
    if 2 * vision["num_pos_feats"] != prompt["hidden_size"]:
        raise ConfigError(
            f"HF config: vision_config.num_pos_feats ({vision['num_pos_feats']}) must be half of "
            f"prompt_encoder_config.hidden_size ({prompt['hidden_size']})."
        )
    if (prompt["image_size"], prompt["patch_size"]) != (vision["image_size"], vision["patch_size"]):
        raise ConfigError(
            "HF config: the prompt encoder's image_size/patch_size "
            f"({prompt['image_size']}/{prompt['patch_size']}) differ from the vision encoder's "
            f"({vision['image_size']}/{vision['patch_size']})."
        )
    if prompt["num_point_embeddings"] != 4:
        raise ConfigError(f"HF config: num_point_embeddings must be 4, got {prompt['num_point_embeddings']}.")
    mlp_dim = vision["mlp_dim"] or int(vision["hidden_size"] * vision["mlp_ratio"])
    out = SamConfig(
        image_encoder=ImageEncoderConfig(
            image_size=vision["image_size"],
            patch_size=vision["patch_size"],
            in_chans=vision["num_channels"],
            embed_dim=vision["hidden_size"],
            depth=vision["num_hidden_layers"],
            num_heads=vision["num_attention_heads"],
            mlp_dim=mlp_dim,
            out_chans=vision["output_channels"],
            qkv_bias=vision["qkv_bias"],
            use_abs_pos=vision["use_abs_pos"],
            use_rel_pos=vision["use_rel_pos"],
            window_size=vision["window_size"],
            global_attn_indexes=tuple(vision["global_attn_indexes"]),
            act=vision["hidden_act"],
            layer_norm_eps=vision["layer_norm_eps"],
            neck_layer_norm_eps=1e-6,
        ),
        prompt_encoder=PromptEncoderConfig(
            embed_dim=prompt["hidden_size"],
            mask_in_chans=prompt["mask_input_channels"],
            act=prompt["hidden_act"],
            layer_norm_eps=prompt["layer_norm_eps"],
        ),
        mask_decoder=MaskDecoderConfig(
            transformer_dim=decoder["hidden_size"],
            depth=decoder["num_hidden_layers"],
            num_heads=decoder["num_attention_heads"],
            mlp_dim=decoder["mlp_dim"],
            mlp_act=decoder["hidden_act"],
            attention_downsample_rate=decoder["attention_downsample_rate"],
            num_multimask_outputs=decoder["num_multimask_outputs"],
            iou_head_depth=decoder["iou_head_depth"],
            iou_head_hidden_dim=decoder["iou_head_hidden_dim"],
            layer_norm_eps=decoder["layer_norm_eps"],
            final_layer_norm_eps=1e-5,
            upscale_layer_norm_eps=1e-6,
        ),
    )
    if preprocessor:
        out = _with_preprocessor(out, preprocessor)
    return out


def _with_preprocessor(config: SamConfig, pre: Mapping[str, Any]) -> SamConfig:
    longest = (pre.get("size") or {}).get("longest_edge", config.image_size)
    if longest != config.image_size:
        raise ConfigError(
            f"preprocessor_config.json resizes to {longest} px but the model's image size is {config.image_size}."
        )
    if not pre.get("do_normalize", True) or "image_mean" not in pre or "image_std" not in pre:
        return config
    scale = float(pre.get("rescale_factor", 1 / 255)) if pre.get("do_rescale", True) else 1.0
    mean = tuple(float(m) / scale for m in pre["image_mean"])
    std = tuple(float(s) / scale for s in pre["image_std"])
    return dataclasses.replace(config, pixel_mean=mean, pixel_std=std)


def infer_config(state_dict: Mapping[str, torch.Tensor], *, numerics: Layout = "official") -> SamConfig:
    """The architecture of a state dict in our layout, read from its tensor shapes.

    Shapes fix everything but the decoder's number of heads (taken as the published 8) and the epsilons,
    which follow `numerics`: the official model's (encoder 1e-6, decoder 1e-5) or transformers' (1e-6 in the
    decoder blocks).
    """
    sd = state_dict
    try:
        patch = sd["image_encoder.patch_embed.proj.weight"]  # D x C x p x p
        embed_dim, in_chans, patch_size = patch.shape[0], patch.shape[1], patch.shape[2]
        depth = 1 + max(_indexes(sd, r"image_encoder\.blocks\.(\d+)\."))
        rel = {i: sd.get(f"image_encoder.blocks.{i}.attn.rel_pos_h") for i in range(depth)}
        lengths = {i: (r.shape[0] + 1) // 2 for i, r in rel.items() if r is not None}
        if "image_encoder.pos_embed" in sd:
            grid = sd["image_encoder.pos_embed"].shape[1]
        elif lengths:
            grid = max(lengths.values())
        else:
            raise CheckpointError("The checkpoint has neither absolute nor relative positions to read its size from.")
        windows = sorted({n for n in lengths.values() if n != grid})
        window = windows[0] if windows else 0
        head_dim = next((r.shape[1] for r in rel.values() if r is not None), 64)
        dec_dim = sd["mask_decoder.iou_token.weight"].shape[1]
        dec_depth = 1 + max(_indexes(sd, r"mask_decoder\.transformer\.layers\.(\d+)\."))
        internal = sd["mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight"].shape[0]
        iou_depth = 1 + max(_indexes(sd, r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\."))
        encoder = ImageEncoderConfig(
            image_size=grid * patch_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=embed_dim // head_dim,
            mlp_dim=sd["image_encoder.blocks.0.mlp.lin1.weight"].shape[0],
            out_chans=sd["image_encoder.neck.conv1.weight"].shape[0],
            qkv_bias="image_encoder.blocks.0.attn.qkv.bias" in sd,
            use_abs_pos="image_encoder.pos_embed" in sd,
            use_rel_pos=bool(lengths),
            window_size=window,
            global_attn_indexes=tuple(i for i, n in lengths.items() if n == grid and window),
        )
        prompt = PromptEncoderConfig(
            embed_dim=sd["prompt_encoder.no_mask_embed.weight"].shape[1],
            mask_in_chans=sd["prompt_encoder.mask_downscaling.conv2.weight"].shape[0],
        )
        decoder = MaskDecoderConfig(
            transformer_dim=dec_dim,
            depth=dec_depth,
            mlp_dim=sd["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
            attention_downsample_rate=dec_dim // internal,
            num_multimask_outputs=sd["mask_decoder.mask_tokens.weight"].shape[0] - 1,
            iou_head_depth=iou_depth,
            iou_head_hidden_dim=sd["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0],
            layer_norm_eps=1e-6 if numerics == "hf" else 1e-5,
        )
        return SamConfig(encoder, prompt, decoder)
    except (KeyError, ValueError, IndexError) as err:
        raise CheckpointError(f"Cannot read a SAM architecture from this checkpoint ({err!r}).") from err


def _indexes(sd: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    found = [int(m[1]) for k in sd if (m := re.match(pattern, k))]
    if not found:
        raise KeyError(pattern)
    return found


def describe(config: SamConfig) -> str:
    """A short description for error messages, naming the preset when the encoder matches one."""
    from alignsam.sam.modeling.config import SAM_PRESETS

    enc = config.image_encoder
    name = next((n for n, f in SAM_PRESETS.items() if f().image_encoder == enc), None)
    size = f"embed_dim {enc.embed_dim}, depth {enc.depth}, {enc.image_size} px"
    return f"{name} ({size})" if name else size
