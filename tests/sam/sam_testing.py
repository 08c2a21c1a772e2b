"""Test helpers: the official package behind a torchvision stand-in, a reference NMS, weight randomisation.

torchvision has no CPU build here, and the official `segment_anything` imports four functions from it.
`import_official()` puts a small stand-in package into `sys.modules` only while `segment_anything` is
imported and removes it afterwards, so transformers (which probes for torchvision) never sees it.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from alignsam.sam import ImageEncoderConfig, MaskDecoderConfig, PromptEncoderConfig, SamConfig
from alignsam.sam.amg import coco_decode_rle, rle_to_mask

M = TypeVar("M", bound=nn.Module)

# ---------------------------------------------------------------------------------------------------------
# torchvision stand-in.


def _resize(img: Image.Image, size: list[int] | tuple[int, int]) -> Image.Image:
    """torchvision.transforms.functional.resize on a PIL image with (h, w): PIL bilinear."""
    h, w = size
    return img.resize((w, h), Image.Resampling.BILINEAR)


def _to_pil_image(pic: np.ndarray) -> Image.Image:
    assert pic.ndim == 3 and pic.shape[2] == 3 and pic.dtype == np.uint8, "stand-in handles HWC uint8 RGB only"
    return Image.fromarray(pic, mode="RGB")


def reference_box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def reference_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> list[int]:
    """Plain greedy NMS as torchvision's CPU kernel: float32 IoU compared with the threshold as a double."""
    b = boxes.detach().cpu().float().numpy()
    s = scores.detach().cpu().double().numpy()
    order = sorted(range(len(s)), key=lambda i: -s[i])  # stable: ties keep their index order
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    suppressed = np.zeros(len(s), dtype=bool)
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[pos + 1 :]:
            if suppressed[j]:
                continue
            w = max(np.float32(0), min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
            h = max(np.float32(0), min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
            inter = np.float32(w * h)
            iou = np.float32(inter / np.float32(area[i] + area[j] - inter)) if area[i] + area[j] - inter else np.nan
            if float(iou) > iou_threshold:
                suppressed[j] = True
    return keep


def reference_batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    keep: list[int] = []
    for category in sorted(set(idxs.tolist())):
        members = [i for i, c in enumerate(idxs.tolist()) if c == category]
        kept = reference_nms(boxes[members], scores[members], iou_threshold)
        keep.extend(members[k] for k in kept)
    keep.sort(key=lambda i: -float(scores[i]))
    return torch.as_tensor(keep, dtype=torch.long)


@contextmanager
def _torchvision_stub() -> Iterator[None]:
    names = ["torchvision", "torchvision.ops", "torchvision.ops.boxes", "torchvision.transforms"]
    names.append("torchvision.transforms.functional")
    if any(n in sys.modules for n in names):
        raise RuntimeError("a torchvision module is already imported; the stand-in would shadow it")
    modules = {n: types.ModuleType(n) for n in names}
    modules["torchvision.ops.boxes"].batched_nms = reference_batched_nms  # type: ignore[attr-defined]
    modules["torchvision.ops.boxes"].box_area = reference_box_area  # type: ignore[attr-defined]
    modules["torchvision.transforms.functional"].resize = _resize  # type: ignore[attr-defined]
    modules["torchvision.transforms.functional"].to_pil_image = _to_pil_image  # type: ignore[attr-defined]
    sys.modules.update(modules)
    try:
        yield
    finally:
        for n in names:
            sys.modules.pop(n, None)


def import_official() -> Any:
    """The official `segment_anything` package (with its automatic mask generator and amg utilities)."""
    if "segment_anything" in sys.modules:
        return sys.modules["segment_anything"]
    with _torchvision_stub():
        module = importlib.import_module("segment_anything")
        importlib.import_module("segment_anything.utils.amg")
    assert "torchvision" not in sys.modules
    return module


# ---------------------------------------------------------------------------------------------------------
# Weights that make random models produce non-trivial masks.


@torch.no_grad()
def randomize_(model: M, seed: int, *, logit_gain: float = 1.0) -> M:
    """Overwrite every tensor of the state dict with seeded random values of sensible scale.

    Default initialisation leaves relative positions and absolute positions at zero and LayerNorms at
    identity, which hides bugs; here everything is random: weights ~ N(0, 1/fan_in), LayerNorm scales
    ~ 1 + N(0, 0.1^2), biases ~ N(0, 0.05^2), positional tables and tokens ~ N(0, 0.5^2) and N(0, 1).
    `logit_gain` scales the last layer of the mask hypernetworks (the spread of the mask logits).
    """
    gen = torch.Generator().manual_seed(seed)
    # Everything a checkpoint holds (non-persistent buffers such as pixel_mean are left alone).
    tensors = {n: t for n, t in model.state_dict(keep_vars=True).items() if t.is_floating_point()}
    norm_weights = {
        f"{name}.weight" for name, module in model.named_modules() if "norm" in type(module).__name__.lower()
    }
    embeddings = {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, nn.Embedding)}
    for name in sorted(tensors):
        t = tensors[name]
        noise = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
        leaf = name.rsplit(".", 1)[-1]
        if "positional_encoding_gaussian_matrix" in name or "positional_embedding" in name:
            value = noise  # Fourier frequencies ~ N(0, 1), as SAM samples them
        elif "rel_pos" in leaf or "pos_embed" in leaf:
            value = 0.5 * noise
        elif name in norm_weights:
            value = 1 + 0.1 * noise
        elif leaf == "bias":
            value = 0.05 * noise
        elif name in embeddings:
            value = noise  # learned tokens and point embeddings
        elif t.ndim >= 2:
            fan_in = t.shape[0] if "upscal" in name else t[0].numel()  # transposed convs: in x out x k x k
            value = noise / fan_in**0.5
        else:
            value = 0.1 * noise
        last_hyper_layer = "hypernetwork" in name and (name.endswith("layers.2.weight") or "proj_out.weight" in name)
        if last_hyper_layer:
            value = value * logit_gain
        t.copy_(value)
    return model


# ---------------------------------------------------------------------------------------------------------
# Small configurations and matching official models.


def tiny_config(**encoder: Any) -> SamConfig:
    """A small SAM (256 px, 2 blocks of width 64, decoder width 64) for fast unit tests."""
    enc: dict[str, Any] = {
        "image_size": 256,
        "patch_size": 16,
        "embed_dim": 64,
        "depth": 2,
        "num_heads": 2,
        "mlp_dim": 128,
        "out_chans": 64,
        "window_size": 7,
        "global_attn_indexes": (1,),
    }
    enc.update(encoder)
    return SamConfig(
        image_encoder=ImageEncoderConfig(**enc),
        prompt_encoder=PromptEncoderConfig(embed_dim=enc["out_chans"], mask_in_chans=16),
        mask_decoder=MaskDecoderConfig(
            transformer_dim=enc["out_chans"], num_heads=4, mlp_dim=128, iou_head_hidden_dim=64
        ),
    )


def official_from_config(config: SamConfig) -> Any:
    """The official `Sam` with the architecture of `config` (official epsilons), randomly initialised."""
    from functools import partial

    official = import_official()
    m = importlib.import_module("segment_anything.modeling")
    enc, prm, dec = config.image_encoder, config.prompt_encoder, config.mask_decoder
    grid = enc.grid_size
    sam = m.Sam(
        image_encoder=m.ImageEncoderViT(
            img_size=enc.image_size,
            patch_size=enc.patch_size,
            embed_dim=enc.embed_dim,
            depth=enc.depth,
            num_heads=enc.num_heads,
            mlp_ratio=enc.mlp_dim / enc.embed_dim,
            out_chans=enc.out_chans,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            qkv_bias=enc.qkv_bias,
            use_rel_pos=enc.use_rel_pos,
            window_size=enc.window_size,
            global_attn_indexes=enc.global_attn_indexes,
        ),
        prompt_encoder=m.PromptEncoder(
            embed_dim=prm.embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(enc.image_size, enc.image_size),
            mask_in_chans=prm.mask_in_chans,
        ),
        mask_decoder=m.MaskDecoder(
            num_multimask_outputs=dec.num_multimask_outputs,
            transformer=m.TwoWayTransformer(
                depth=dec.depth, embedding_dim=dec.transformer_dim, mlp_dim=dec.mlp_dim, num_heads=dec.num_heads
            ),
            transformer_dim=dec.transformer_dim,
            iou_head_depth=dec.iou_head_depth,
            iou_head_hidden_dim=dec.iou_head_hidden_dim,
        ),
    )
    del official
    return sam.eval()


@torch.no_grad()
def make_masks_follow_the_image_(sam: Any, seed: int = 0) -> Any:
    """Reshape the random weights of a SAM (official `Sam` or ours) so that masks are regions, not noise.

    Random ViTs give spatially white features and random 2x2 transposed-convolution kernels give pixel-level
    checkerboards, so every mask is scattered over the whole image and box NMS keeps one. Here the patch
    embedding sees each patch's mean colour, the blocks are close to identity and the upscaling repeats each
    cell, so masks become blocky regions that follow the photograph's colours.
    """
    gen = torch.Generator().manual_seed(seed)
    encoder = sam.image_encoder
    weight = encoder.patch_embed.proj.weight  # D x 3 x p x p
    colour = torch.randn(weight.shape[0], 3, 1, 1, generator=gen) * 3 / (weight.shape[2] * weight.shape[3])
    weight.copy_(colour.expand_as(weight))
    encoder.pos_embed.mul_(0.05)
    for block in encoder.blocks:
        block.attn.proj.weight.mul_(0.05)
        block.mlp.lin2.weight.mul_(0.05)
    upscaling = [m for m in sam.mask_decoder.output_upscaling.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(upscaling) == 2
    for conv in upscaling:
        conv.weight.copy_(conv.weight[:, :, :1, :1].expand_as(conv.weight))
    return sam


AMG_THRESHOLDS: dict[str, float] = {"pred_iou_thresh": 0.2, "stability_score_thresh": 0.6, "box_nms_thresh": 0.95}
"""Automatic-generator thresholds at which `region_masks_pair`'s masks survive (the official defaults 0.88,
0.95 and 0.7 pass none with random weights)."""


def region_masks_pair(config: SamConfig) -> tuple[Any, Any]:
    """The official `Sam` for `config`, randomised so that its masks are image regions
    (`make_masks_follow_the_image_`), and alignsam's `SamModel` with the same weights."""
    from alignsam.io import load_weights_into
    from alignsam.sam import SamModel
    from alignsam.sam.convert import official_to_alignsam

    reference = official_from_config(config)
    randomize_(reference, seed=3, logit_gain=100.0)
    make_masks_follow_the_image_(reference)
    ours = SamModel.from_config(config).eval()
    load_weights_into(ours, official_to_alignsam(reference.state_dict()))
    return reference, ours


# ---------------------------------------------------------------------------------------------------------
# Comparing automatic-mask records with the official generator's.

AMG_MASK_MARGIN = 1e-3
"""Pixels may differ only where the official full-size logit is within this of the threshold."""


def amg_record_mask(record: dict[str, Any]) -> np.ndarray:
    seg = record["segmentation"]
    if isinstance(seg, np.ndarray):
        return seg
    return rle_to_mask(coco_decode_rle(seg) if isinstance(seg["counts"], str) else seg)


def official_record_logits(official: Any, reference: Any, image: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """The official full-size logits of the output that produced `record` (recomputed for its point)."""
    x0, y0, w, h = (int(v) for v in record["crop_box"])
    predictor = official.SamPredictor(reference)
    predictor.set_image(image[y0 : y0 + h, x0 : x0 + w])
    point = np.array(record["point_coords"]) - [x0, y0]
    coords = torch.as_tensor(predictor.transform.apply_coords(point, (h, w)))[None]
    logits, _, _ = predictor.predict_torch(coords, torch.ones(1, 1, dtype=torch.int), return_logits=True)
    full = np.zeros((3, *image.shape[:2]), dtype=np.float32)
    full[:, y0 : y0 + h, x0 : x0 + w] = logits[0].numpy()
    mask = amg_record_mask(record)
    return full[np.argmin([((m > 0) != mask).sum() for m in full])]


def compare_amg_records(official: Any, reference: Any, image: np.ndarray, expected: list, got: list, tag: str) -> None:
    """Automatic-mask records against the official generator's: the same masks, boxes, order, points and
    crop boxes, IoUs within 1e-4 and stability scores within 1e-3; pixels may differ only where the
    official full-size logit is within `AMG_MASK_MARGIN` of the threshold (recomputed for that point)."""
    assert len(got) == len(expected) > 0
    flips = 0
    for ref, ours in zip(expected, got, strict=True):
        assert ours.keys() == ref.keys()
        assert ours["crop_box"] == ref["crop_box"]
        assert ours["point_coords"] == ref["point_coords"]
        assert abs(ours["predicted_iou"] - ref["predicted_iou"]) < 1e-4
        assert abs(ours["stability_score"] - ref["stability_score"]) < 1e-3
        ref_mask, our_mask = amg_record_mask(ref), amg_record_mask(ours)
        assert our_mask.sum() == ours["area"] and ref_mask.sum() == ref["area"]
        differ = ref_mask != our_mask
        if differ.any():
            logits = official_record_logits(official, reference, image, ref)
            assert np.all(np.abs(logits[differ]) < AMG_MASK_MARGIN), "masks differ away from the threshold"
            flips += int(differ.sum())
        else:
            assert ours["bbox"] == ref["bbox"] and ours["area"] == ref["area"]
            if not isinstance(ref["segmentation"], np.ndarray):
                assert ours["segmentation"] == ref["segmentation"]  # RLE dicts, COCO strings included
    print(f"\n[amg {tag}] {len(got)} masks, {flips} pixels differ (all within {AMG_MASK_MARGIN} of the threshold)")
