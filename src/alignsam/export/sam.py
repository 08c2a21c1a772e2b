"""SAM's parts as ONNX graphs: the prompt decoder with the official demo's contract, a batched prompt
decoder for the ONNX Runtime backend, and the image encoder with its pre-processing.

The decoder follows the official `SamOnnxModel` (segment-anything `utils/onnx.py`) arithmetic for arithmetic,
so the official web demo and anything built for it run on our export:

- point labels select embeddings by multiplication instead of branches: -1 is the "not a point" token
  (the padding point a caller appends when there is no box), 0 / 1 background / foreground, 2 / 3 a box's
  top-left / bottom-right corner. Label -10 (ignored padding, our `PromptEncoder`'s extension) gives a zero
  token; any other label keeps the bare positional encoding, as in the official graph;
- the mask embedding is `has_mask_input * downscale(mask_input) + (1 - has_mask_input) * no_mask`;
- `return_single_mask` picks a mask without a branch: `iou + (num_points - 2.5) * [1000, 0, 0, 0]`, so one
  click (plus its padding point) picks the best of the three multimask outputs and more points pick the
  single-mask token;
- post-processing upscales the low-resolution logits to the model's input size, crops them to the resized
  image (`ResizeLongestSide` of `orig_im_size`) and resizes them to `orig_im_size`.

Sizes come from the model (1024 px input, 256 x 64 x 64 embedding and 256 x 256 mask input for the published
SAMs; 128 px, 128 x 16 x 16 and 64 x 64 for the bundled demo).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from alignsam.export.common import Tensor
from alignsam.sam.amg import calculate_stability_score
from alignsam.sam.modeling.prompt_encoder import IGNORED_POINT, NOT_A_POINT, PromptEncoder
from alignsam.sam.modeling.sam import SamModel

STABILITY_OFFSET = 1.0  # the official export's offset


def embed_points(prompt_encoder: PromptEncoder, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`B x N x 2` coordinates in the model's input frame and `B x N` (float) labels -> `B x N x C` tokens,
    labels applied by arithmetic (see the module docstring)."""
    embedding = prompt_encoder.pe_layer.forward_with_coords(coords + 0.5, prompt_encoder.input_image_size)
    labels = labels.unsqueeze(-1)  # B x N x 1
    embedding = embedding * ((labels != NOT_A_POINT) & (labels != IGNORED_POINT))
    embedding = embedding + prompt_encoder.not_a_point_embed.weight * (labels == NOT_A_POINT)
    for i, point_embedding in enumerate(prompt_encoder.point_embeddings):
        assert isinstance(point_embedding, nn.Embedding)
        embedding = embedding + point_embedding.weight * (labels == i)
    return embedding


def embed_mask(prompt_encoder: PromptEncoder, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
    """`B x 1 x 4h x 4w` logits and a `1` flag -> the dense embedding `B x C x h x w`."""
    no_mask = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
    return has_mask_input * prompt_encoder.mask_downscaling(mask_input) + (1 - has_mask_input) * no_mask


class SamDecoderGraph(nn.Module):
    """Prompt encoder + mask decoder + post-processing with the official demo's inputs and outputs.

    Inputs (float32): `image_embeddings` 1 x C x h x w, `point_coords` 1 x N x 2 (x, y in the resized frame
    whose longest side is the model's image size), `point_labels` 1 x N, `mask_input` 1 x 1 x 4h x 4w,
    `has_mask_input` 1, `orig_im_size` 2 (H, W). Outputs: `masks` 1 x M x H x W logits, `iou_predictions`
    1 x M, `low_res_masks` 1 x M x 4h x 4w (M = 1 with `return_single_mask`, else the 4 mask tokens: token 0
    is the single-mask output, 1-3 the multimask outputs). With `return_extra_metrics`, `stability_scores`
    1 x M and `areas` 1 x M (int64) come before `low_res_masks`.
    """

    def __init__(
        self,
        model: SamModel,
        *,
        return_single_mask: bool = False,
        use_stability_score: bool = False,
        return_extra_metrics: bool = False,
    ) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.image_size = model.config.image_size
        self.mask_threshold = model.mask_threshold
        self.return_single_mask = return_single_mask
        self.use_stability_score = use_stability_score
        self.return_extra_metrics = return_extra_metrics

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        sparse = embed_points(self.prompt_encoder, point_coords, point_labels)
        dense = embed_mask(self.prompt_encoder, mask_input, has_mask_input)
        masks, scores = self.mask_decoder.predict_masks(
            image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense
        )  # 1 x 4 x 4h x 4w, 1 x 4
        if self.use_stability_score:
            scores = calculate_stability_score(masks, self.mask_threshold, STABILITY_OFFSET)
        if self.return_single_mask:
            masks, scores = self.select_mask(masks, scores, point_coords.shape[1])
        upscaled = self.postprocess(masks, orig_im_size)
        if self.return_extra_metrics:
            stability = calculate_stability_score(upscaled, self.mask_threshold, STABILITY_OFFSET)
            areas = (upscaled > self.mask_threshold).sum((-1, -2))
            return upscaled, scores, stability, areas, masks
        return upscaled, scores, masks

    def select_mask(
        self, masks: torch.Tensor, scores: torch.Tensor, num_points: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The official branch-free choice: with two points (one click and the padding point) the best of the
        multimask outputs by score, with more the single-mask token. `1 x 1 x ...` each."""
        weight = torch.tensor([[1000.0] + [0.0] * (scores.shape[1] - 1)], device=scores.device)
        best = torch.argmax(scores + (num_points - 2.5) * weight, dim=1)  # B
        rows = torch.arange(masks.shape[0], device=masks.device)
        return masks[rows, best].unsqueeze(1), scores[rows, best].unsqueeze(1)

    def postprocess(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """`1 x M x 4h x 4w` logits -> `1 x M x H x W`, as `SamModel.postprocess_masks` with the resized size
        computed in the graph from `orig_im_size`."""
        size = self.image_size
        masks = F.interpolate(masks, (size, size), mode="bilinear", align_corners=False)
        original = orig_im_size.to(torch.float32)
        resized = torch.floor(original * (size / original.max()) + 0.5).to(torch.int64)  # ResizeLongestSide
        # Tensor-valued bounds, not int(): the dynamo exporter turns them into sizes known only at run time,
        # where an int() is a data-dependent guard it cannot export (the official script's failure on 2.9+).
        masks = masks[..., : resized[0], : resized[1]]
        hw = orig_im_size.to(torch.int64)
        size_hw: Any = (hw[0], hw[1])  # sizes from a tensor: the output size is an input of the graph
        return F.interpolate(masks, size=size_hw, mode="bilinear", align_corners=False)


class SamPromptDecoderGraph(nn.Module):
    """Prompt encoder + mask decoder for B prompt sets on one image, without post-processing: what the
    ONNX Runtime backend of `SamPredictor` runs (the predictor post-processes, as on the PyTorch path).

    Inputs (float32): `image_embeddings` 1 x C x h x w, `point_coords` B x N x 2 (model frame, padding
    point or box corners included), `point_labels` B x N, `mask_input` B x 1 x 4h x 4w, `has_mask_input` 1.
    Outputs: `iou_predictions` B x 4 and `low_res_masks` B x 4 x 4h x 4w, every mask token.
    """

    def __init__(self, model: SamModel) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sparse = embed_points(self.prompt_encoder, point_coords, point_labels)
        dense = embed_mask(self.prompt_encoder, mask_input, has_mask_input)
        masks, scores = self.mask_decoder.predict_masks(
            image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense
        )
        return scores, masks


class SamEncoderGraph(nn.Module):
    """SAM's image encoder, with its pre-processing unless `preprocess=False`.

    With pre-processing the input is `image`, B x 3 x h x w float32 RGB in 0..255, resized so that the longest
    side is the model's image size (`ResizeLongestSide`, PIL bilinear), h and w dynamic; the graph normalises
    with the model's pixel mean and std and zero-pads bottom and right to the square input. Without, the
    input is `pixel_values`, B x 3 x S x S, what `SamModel.preprocess` returns. The output is
    `image_embeddings`, B x C x h' x w' (what `SamPredictor.get_image_embedding()` holds).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: SamModel, *, preprocess: bool = True) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder
        self.preprocess = preprocess
        self.image_size = model.config.image_size
        self.register_buffer("mean", torch.tensor(model.config.pixel_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(model.config.pixel_std).view(1, -1, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.preprocess:
            h, w = image.shape[-2:]
            image = F.pad((image - self.mean) / self.std, (0, self.image_size - w, 0, self.image_size - h))
        return self.image_encoder(image)


# ---------------------------------------------------------------------------------------------------------
# The contracts, as the description file and the command line report them.


def decoder_contract(
    model: SamModel, *, return_single_mask: bool, return_extra_metrics: bool
) -> tuple[list[Tensor], list[Tensor]]:
    c, g, low = model.config.prompt_encoder.embed_dim, model.config.embedding_size, model.config.mask_input_size
    size = model.config.image_size
    m = 1 if return_single_mask else model.config.mask_decoder.num_mask_tokens
    inputs = [
        Tensor("image_embeddings", (1, c, g, g), "float32", "the image embedding (SamPredictor.get_image_embedding())"),
        Tensor(
            "point_coords", (1, "num_points", 2), "float32",
            f"x, y scaled so that the longest image side is {size}; a box is two points",
        ),
        Tensor(
            "point_labels", (1, "num_points"), "float32",
            "1 foreground, 0 background, 2 / 3 box top-left / bottom-right; without a box append (0, 0) with -1",
        ),
        Tensor("mask_input", (1, 1, low, low), "float32", "a previous low_res_masks, or zeros"),
        Tensor("has_mask_input", (1,), "float32", "1 when mask_input holds a mask, else 0"),
        Tensor("orig_im_size", (2,), "float32", "the original image's (H, W)"),
    ]  # fmt: skip
    outputs = [
        Tensor("masks", (1, m, "height", "width"), "float32", "mask logits at orig_im_size; > 0 is the mask"),
        Tensor("iou_predictions", (1, m), "float32", "predicted IoU of each mask (or its stability score)"),
    ]
    if return_extra_metrics:
        outputs += [
            Tensor("stability_scores", (1, m), "float32", "stability of each mask at the original size"),
            Tensor("areas", (1, m), "int64", "pixels of each mask at the original size"),
        ]
    outputs.append(Tensor("low_res_masks", (1, m, low, low), "float32", "low-resolution logits (next mask_input)"))
    return inputs, outputs


def prompt_decoder_contract(model: SamModel) -> tuple[list[Tensor], list[Tensor]]:
    c, g, low = model.config.prompt_encoder.embed_dim, model.config.embedding_size, model.config.mask_input_size
    m = model.config.mask_decoder.num_mask_tokens
    inputs = [
        Tensor("image_embeddings", (1, c, g, g), "float32", "the image embedding"),
        Tensor("point_coords", ("prompts", "num_points", 2), "float32", "x, y in the model's input frame"),
        Tensor("point_labels", ("prompts", "num_points"), "float32", "as in the official contract"),
        Tensor("mask_input", ("prompts", 1, low, low), "float32", "low-resolution mask logits, or zeros"),
        Tensor("has_mask_input", (1,), "float32", "1 when mask_input holds masks, else 0"),
    ]
    outputs = [
        Tensor("iou_predictions", ("prompts", m), "float32", "predicted IoU of every mask token"),
        Tensor("low_res_masks", ("prompts", m, low, low), "float32", "logits of every mask token (0: single mask)"),
    ]
    return inputs, outputs


def encoder_contract(model: SamModel, *, preprocess: bool) -> tuple[list[Tensor], list[Tensor]]:
    size, c, g = model.config.image_size, model.config.prompt_encoder.embed_dim, model.config.embedding_size
    if preprocess:
        image = Tensor(
            "image", ("batch", 3, "height", "width"), "float32",
            f"RGB 0..255, resized so that the longest side is {size} (height, width <= {size})",
        )  # fmt: skip
    else:
        image = Tensor("pixel_values", ("batch", 3, size, size), "float32", "normalised, zero-padded pixels")
    return [image], [Tensor("image_embeddings", ("batch", c, g, g), "float32", "the image embedding")]


def example_decoder_inputs(model: SamModel, num_points: int = 5) -> tuple[torch.Tensor, ...]:
    """Inputs of the official contract's shapes to trace with (the official script's dummies)."""
    c, g, low = model.config.prompt_encoder.embed_dim, model.config.embedding_size, model.config.mask_input_size
    size = model.config.image_size
    gen = torch.Generator().manual_seed(0)
    device = model.device
    return tuple(
        t.to(device)
        for t in (
            torch.randn(1, c, g, g, generator=gen),
            torch.randint(0, size, (1, num_points, 2), generator=gen).float(),
            torch.randint(0, 4, (1, num_points), generator=gen).float(),
            torch.randn(1, 1, low, low, generator=gen),
            torch.tensor([1.0]),
            torch.tensor([1.5 * size, 2.25 * size]).floor(),
        )
    )


def example_prompt_decoder_inputs(model: SamModel, prompts: int = 2, num_points: int = 5) -> tuple[torch.Tensor, ...]:
    c, g, low = model.config.prompt_encoder.embed_dim, model.config.embedding_size, model.config.mask_input_size
    gen = torch.Generator().manual_seed(0)
    return tuple(
        t.to(model.device)
        for t in (
            torch.randn(1, c, g, g, generator=gen),
            torch.randint(0, model.config.image_size, (prompts, num_points, 2), generator=gen).float(),
            torch.randint(0, 4, (prompts, num_points), generator=gen).float(),
            torch.randn(prompts, 1, low, low, generator=gen),
            torch.tensor([1.0]),
        )
    )


def example_encoder_inputs(model: SamModel, *, preprocess: bool) -> tuple[torch.Tensor, ...]:
    size = model.config.image_size
    gen = torch.Generator().manual_seed(0)
    if preprocess:  # a landscape image, smaller than the square on one side (traces the padding)
        image = torch.rand(2, 3, 3 * size // 4, size, generator=gen) * 255
    else:
        image = torch.randn(2, 3, size, size, generator=gen)
    return (image.to(model.device),)
