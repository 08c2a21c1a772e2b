"""The Segment Anything model, assembled from its three built towers, with SAM's pre- and post-processing.

`SamModel` holds no inference state (the predictor caches image embeddings) and has no `no_grad` inside
(but `get_image_embeddings`, as in transformers), so the same object serves inference and fine-tuning. Pre-
and post-processing follow the configuration's image size, so smaller SAMs (e.g. 256 px) work the same way
as the published 1024 px ones.

`forward` answers three calling conventions: this library's prompt sets (`point_coords`, `point_labels`,
`boxes`, `mask_inputs`), the official list of records, and transformers' `SamModel` arguments
(`input_points`, `input_labels`, `input_boxes`, `input_masks`; translated in `alignsam.sam.hf_prompts`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, overload

import torch
import torch.nn.functional as F
from torch import nn

from alignsam.errors import InputError, PromptError
from alignsam.io.resolve import ModelSource, Ref, resolve_model
from alignsam.outputs import ModelOutput
from alignsam.sam import hf_prompts, pretrained
from alignsam.sam.modeling.config import ImageFormat, SamConfig
from alignsam.sam.modeling.image_encoder import ImageEncoderViT
from alignsam.sam.modeling.mask_decoder import MaskDecoder
from alignsam.sam.modeling.prompt_encoder import PromptEncoder
from alignsam.sam.transforms import masks_to_original_size


@dataclasses.dataclass
class SamOutput(ModelOutput):
    """What `SamModel.forward` returns.

    Attributes:
        low_res_logits: `B x M x 4h x 4w` mask logits (M = 3 with multimask output, else 1), 256 x 256 for the
            published models; pass `postprocess_masks` to get masks at the original image size.
        iou_predictions: `B x M` predicted mask IoUs.
        image_embeddings: `B_img x C x h x w`, the encoder's output (or the embeddings that were passed in).
    """

    low_res_logits: torch.Tensor
    iou_predictions: torch.Tensor
    image_embeddings: torch.Tensor | None = None


@dataclasses.dataclass
class SamSegmentationOutput(ModelOutput):
    """What `SamModel.forward` returns for transformers' arguments (transformers' `SamImageSegmentationOutput`).

    Attributes:
        iou_scores: `B x P x M` predicted mask IoUs (B images, P point batches, M = 3 or 1 masks).
        pred_masks: `B x P x M x 4h x 4w` low-resolution mask logits; `SamProcessor.post_process_masks`
            brings them to the original image size.
    """

    iou_scores: torch.Tensor
    pred_masks: torch.Tensor


class SamModel(nn.Module):
    """Segment Anything: `image_encoder`, `prompt_encoder` and `mask_decoder`, built beforehand.

    Build one with `SamModel.from_config(config)`, `SamModel.from_pretrained(id_or_path)` or
    `sam_model_registry["vit_b"](checkpoint=...)`. Attribute names follow the official `Sam` class
    (`image_encoder.img_size`, `preprocess`, `postprocess_masks`, `mask_threshold`, `image_format`), so code
    written for the official model keeps working.
    """

    def __init__(
        self,
        image_encoder: ImageEncoderViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        *,
        pixel_mean: tuple[float, ...] = (123.675, 116.28, 103.53),
        pixel_std: tuple[float, ...] = (58.395, 57.12, 57.375),
        mask_threshold: float = 0.0,
        image_format: ImageFormat = "RGB",
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.config = SamConfig(
            image_encoder=image_encoder.config,
            prompt_encoder=prompt_encoder.config,
            mask_decoder=mask_decoder.config,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
            mask_threshold=mask_threshold,
            image_format=image_format,
        )
        self.mask_threshold = mask_threshold
        self.image_format = image_format
        # Settings the checkpoint's folder recommends (file name -> JSON object, e.g. the demo's `amg.json`
        # for the automatic mask generator); filled by `from_pretrained`, written back by `save_pretrained`.
        self.recommended: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_config(cls, config: SamConfig) -> SamModel:
        """Build the towers of `config` with random weights (PyTorch's default initialisation)."""
        grid = config.image_encoder.grid_size
        size = config.image_encoder.image_size
        return cls(
            ImageEncoderViT(config.image_encoder),
            PromptEncoder(config.prompt_encoder, image_embedding_size=(grid, grid), input_image_size=(size, size)),
            MaskDecoder(config.mask_decoder),
            pixel_mean=config.pixel_mean,
            pixel_std=config.pixel_std,
            mask_threshold=config.mask_threshold,
            image_format=config.image_format,
        )

    @classmethod
    def from_pretrained(
        cls,
        ref: Ref | ModelSource,
        *,
        config: SamConfig | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> SamModel:
        """Load a model from a hub id (or a short name: `vit_b`), a directory, a weights file (an official
        `.pth`) or a bundled model (`demo`); see `alignsam.sam.pretrained`. `config` replaces the
        checkpoint's own configuration."""
        source = resolve_model(ref, "sam", revision=revision, cache_dir=cache_dir)
        model = pretrained.load(source, cls.from_config, config=config, dtype=dtype, device=device)
        model.recommended = source.recommended(pretrained.RECOMMENDED_FILES)
        return model

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write `config.json`, `model.safetensors` (this library's layout) and the recommended settings
        into `directory`."""
        return pretrained.save(self, self.config, directory, self.recommended)

    @property
    def device(self) -> torch.device:
        return self.mask_decoder.iou_token.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mask_decoder.iou_token.weight.dtype

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise resized `B x 3 x h x w` images (0..255) and zero-pad them bottom/right to the input size.

        The padding is applied after normalisation, so padded pixels are 0 in normalised space.
        """
        size = self.config.image_size
        h, w = x.shape[-2:]
        if h > size or w > size:
            raise InputError(f"Images must be resized to at most {size} px per side first (got {h} x {w}).")
        mean = torch.tensor(self.config.pixel_mean, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.config.pixel_std, device=x.device).view(-1, 1, 1)
        x = (x - mean) / std
        return F.pad(x, (0, size - w, 0, size - h))

    def postprocess_masks(
        self, masks: torch.Tensor, input_size: tuple[int, ...], original_size: tuple[int, ...]
    ) -> torch.Tensor:
        """Low-resolution logits `B x M x 4h x 4w` -> logits `B x M x H x W` at the original image size.

        Upscales to the padded input size, removes the padding (`input_size` is the resized image's (h, w)),
        then resizes to `original_size` (H, W); both steps bilinear, as the official model does.
        """
        size = self.config.image_size
        return masks_to_original_size(masks, (size, size), input_size, original_size)

    @torch.no_grad()
    def get_image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """transformers' name: the image encoder's `B x C x h x w` embeddings of `B x 3 x S x S` pixel values,
        without gradients as there (call `model.image_encoder` for a trainable pass)."""
        return self.image_encoder(pixel_values)

    def embed_prompts(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_inputs: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt encoder's sparse `B x T x C` and dense `B x C x h x w` embeddings (see `forward`)."""
        if point_coords is None and boxes is None and mask_inputs is None:
            raise PromptError("Give at least one prompt: points, boxes or mask_inputs.")
        if (point_coords is None) != (point_labels is None):
            raise PromptError("point_coords and point_labels go together; pass both or neither.")
        points = (point_coords, point_labels) if point_coords is not None and point_labels is not None else None
        return self.prompt_encoder(points=points, boxes=boxes, masks=mask_inputs)

    @torch.no_grad()
    def forward_batched(self, batched_input: list[dict[str, Any]], multimask_output: bool) -> list[dict[str, Any]]:
        """The official `Sam.forward`: several images, each with its own prompts, in one call (without
        gradients, as the official one).

        Each record holds `image` (`3 x h x w`, already resized with `ResizeLongestSide`, 0..255),
        `original_size` (H, W) and optionally `point_coords` (`B x N x 2`), `point_labels` (`B x N`),
        `boxes` (`B x 4`) and `mask_inputs` (`B x 1 x 256 x 256`), prompts in the resized frame. The images
        go through the encoder as one batch. Returns per image `masks` (`B x C x H x W` bool),
        `iou_predictions` (`B x C`) and `low_res_logits` (`B x C x 256 x 256`). `model(batched_input,
        multimask_output)` with a list calls this, as the official model does.
        """
        pixels = torch.stack([self.preprocess(record["image"]) for record in batched_input])
        image_embeddings = self.image_encoder(pixels.to(self.dtype))
        outputs = []
        for record, embedding in zip(batched_input, image_embeddings, strict=True):
            points = (record["point_coords"], record["point_labels"]) if "point_coords" in record else None
            sparse, dense = self.prompt_encoder(
                points=points, boxes=record.get("boxes"), masks=record.get("mask_inputs")
            )
            low_res_logits, iou_predictions = self.mask_decoder(
                image_embeddings=embedding.unsqueeze(0),
                image_pe=self.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
            )
            masks = self.postprocess_masks(low_res_logits, record["image"].shape[-2:], record["original_size"])
            outputs.append(
                {
                    "masks": masks > self.mask_threshold,
                    "iou_predictions": iou_predictions,
                    "low_res_logits": low_res_logits,
                }
            )
        return outputs

    @overload
    def forward(self, pixel_values: list[dict[str, Any]], multimask_output: bool) -> list[dict[str, Any]]: ...

    @overload
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        multimask_output: bool = True,
        *,
        image_embeddings: torch.Tensor | None = None,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        input_points: torch.Tensor | None = None,
        input_labels: torch.Tensor | None = None,
        input_boxes: torch.Tensor | None = None,
        input_masks: torch.Tensor | None = None,
        original_sizes: torch.Tensor | None = None,
        reshaped_input_sizes: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> SamOutput | SamSegmentationOutput: ...

    def forward(
        self,
        pixel_values: torch.Tensor | list[dict[str, Any]] | None = None,
        multimask_output: bool = True,
        *,
        image_embeddings: torch.Tensor | None = None,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        input_points: torch.Tensor | None = None,
        input_labels: torch.Tensor | None = None,
        input_boxes: torch.Tensor | None = None,
        input_masks: torch.Tensor | None = None,
        original_sizes: torch.Tensor | None = None,
        reshaped_input_sizes: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> SamOutput | SamSegmentationOutput | list[dict[str, Any]]:
        """Masks for prompts on images (trainable end to end; nothing is cached).

        Give either `pixel_values` (`B_img x 3 x S x S`, from `preprocess` or `SamProcessor`) or precomputed
        `image_embeddings` (`B_img x C x h x w`). Prompts are in the padded input frame (coordinates already
        resized with `ResizeLongestSide`), in one of two conventions:

        - this library's B prompt sets, where B equals B_img (one set per image) or B_img is 1 (every set on
          the same image); returns `SamOutput(low_res_logits B x M x 4h x 4w, iou_predictions B x M, ...)`:
          point_coords `B x N x 2` (x, y), point_labels `B x N` (see `prompt_encoder`), boxes `B x 4` XYXY,
          mask_inputs `B x 1 x 4h x 4w` low-resolution logits (see `mask_to_logits`);
        - transformers' (`input_points` `B_img x P x N x 2`, `input_labels` `B_img x P x N`, `input_boxes`
          `B_img x P x 4`, `input_masks` `B_img x 1 x 4h x 4w`; see `alignsam.sam.hf_prompts`), also taken
          when no prompt is given; returns `SamSegmentationOutput(iou_scores B_img x P x M, pred_masks
          B_img x P x M x 4h x 4w)`. `original_sizes`, `reshaped_input_sizes` and `labels` are accepted, and
          not used, so that `model(**processor(...))` works.

        `multimask_output`: three masks per prompt set instead of one.
        """
        if isinstance(pixel_values, list):  # the official list-of-records call
            return self.forward_batched(pixel_values, multimask_output)
        if (pixel_values is None) == (image_embeddings is None):
            raise InputError("Pass exactly one of pixel_values and image_embeddings.")
        ours = any(p is not None for p in (point_coords, point_labels, boxes, mask_inputs))
        theirs = any(p is not None for p in (input_points, input_labels, input_boxes, input_masks))
        if ours and theirs:
            raise InputError(
                "Give prompts in one convention: point_coords/point_labels/boxes/mask_inputs (alignsam) or "
                "input_points/input_labels/input_boxes/input_masks (transformers)."
            )
        if not ours:
            prompts = hf_prompts.TransformersPrompts(input_points, input_labels, input_boxes, input_masks)
            return self._forward_transformers(pixel_values, image_embeddings, prompts, multimask_output)
        sparse, dense = self.embed_prompts(point_coords, point_labels, boxes, mask_inputs)
        if image_embeddings is None:
            assert pixel_values is not None
            image_embeddings = self.image_encoder(pixel_values)
        low_res_logits, iou_predictions = self.mask_decoder(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )
        return SamOutput(low_res_logits, iou_predictions, image_embeddings)

    def _forward_transformers(
        self,
        pixel_values: torch.Tensor | None,
        image_embeddings: torch.Tensor | None,
        prompts: hf_prompts.TransformersPrompts,
        multimask_output: bool,
    ) -> SamSegmentationOutput:
        """`forward` for transformers' arguments: their B x P requests decoded as B * P prompt sets."""
        images = image_embeddings if image_embeddings is not None else pixel_values
        assert images is not None
        sets = prompts.flatten(num_images=images.shape[0])  # checked before the encoder runs
        if image_embeddings is None:
            image_embeddings = self.image_encoder(images)
        sparse, dense = self.prompt_encoder(points=sets.points, boxes=sets.boxes, masks=sets.mask_inputs)
        low_res_logits, iou_predictions = self.mask_decoder(
            image_embeddings=sets.image_embeddings(image_embeddings),
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sets.broadcast(sparse),
            dense_prompt_embeddings=sets.broadcast(dense),
            multimask_output=multimask_output,
        )
        pred_masks, iou_scores = sets.to_transformers(low_res_logits, iou_predictions)
        return SamSegmentationOutput(iou_scores=iou_scores, pred_masks=pred_masks)
