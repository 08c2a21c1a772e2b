"""ALIGN's two towers as ONNX graphs, each returning the L2-normalised embedding and the raw one.

- `align-image`: `pixel_values` B x 3 x H x W (what `AlignImageProcessor` gives: resize, centre crop,
  `x / 127.5 - 1`; H x W the crop size) -> `image_embeds` B x D (normalised) and `image_features` B x D (the
  pooled EfficientNet features, `get_image_features`).
- `align-text`: `input_ids`, `attention_mask`, `token_type_ids`, each B x L int64 (WordPiece ids with [CLS]
  and [SEP], padding masked) -> `text_embeds` B x D (normalised) and `text_features` B x D (the projected
  [CLS] state, `get_text_features`). B and L are dynamic.

The text graph runs BERT on the padded grid (`Bert.forward`), not the packed fast path, whose gathers
depend on the values of the mask; the [CLS] state is the same either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alignsam.align.modeling.align import AlignModel
from alignsam.align.modeling.bert import Bert
from alignsam.align.modeling.efficientnet import EfficientNet
from alignsam.align.processing import DEFAULT_MAX_LENGTH, AlignProcessor
from alignsam.export.common import ExportError, Tensor


def check_plain(model: AlignModel) -> None:
    """The towers must be the plain modules: a fused or compiled stand-in (`FastPath`) cannot be traced."""
    if not isinstance(model.vision_model.efficientnet, EfficientNet) or not isinstance(model.text_model.bert, Bert):
        raise ExportError(
            "This ALIGN model was prepared for speed (fused or compiled towers); export a freshly loaded model."
        )


class AlignImageGraph(nn.Module):
    """`pixel_values` -> (`image_embeds`, `image_features`)."""

    def __init__(self, model: AlignModel) -> None:
        super().__init__()
        self.efficientnet = model.vision_model.efficientnet

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.efficientnet
        assert isinstance(net, EfficientNet)
        features = net.pool(net(pixel_values))
        return F.normalize(features, dim=-1), features


class AlignTextGraph(nn.Module):
    """(`input_ids`, `attention_mask`, `token_type_ids`) -> (`text_embeds`, `text_features`)."""

    def __init__(self, model: AlignModel) -> None:
        super().__init__()
        self.bert = model.text_model.bert
        self.text_projection = model.text_projection

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.text_projection(self.bert(input_ids, attention_mask, token_type_ids)[:, 0])
        return F.normalize(features, dim=-1), features


def image_size(model: AlignModel, processor: AlignProcessor | None) -> tuple[int, int]:
    """(H, W) of `pixel_values`: the processor's output size, else the configuration's image size."""
    if processor is not None:
        return processor.image_processor.output_size
    size = model.config.vision_config.image_size
    return size, size


def image_contract(model: AlignModel, size: tuple[int, int]) -> tuple[list[Tensor], list[Tensor]]:
    d = model.config.projection_dim
    inputs = [Tensor("pixel_values", ("batch", 3, *size), "float32", "preprocessed pixels (preprocessor_config.json)")]
    outputs = [
        Tensor("image_embeds", ("batch", d), "float32", "L2-normalised image embeddings"),
        Tensor("image_features", ("batch", d), "float32", "the pooled features before normalisation"),
    ]
    return inputs, outputs


def text_contract(model: AlignModel) -> tuple[list[Tensor], list[Tensor]]:
    d = model.config.projection_dim
    inputs = [
        Tensor("input_ids", ("batch", "sequence"), "int64", "WordPiece ids with [CLS] ... [SEP], right-padded"),
        Tensor("attention_mask", ("batch", "sequence"), "int64", "1 for tokens, 0 for padding"),
        Tensor("token_type_ids", ("batch", "sequence"), "int64", "segment ids (0 for a single text)"),
    ]
    outputs = [
        Tensor("text_embeds", ("batch", d), "float32", "L2-normalised text embeddings"),
        Tensor("text_features", ("batch", d), "float32", "the projected [CLS] state before normalisation"),
    ]
    return inputs, outputs


def example_image_inputs(size: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    return ((torch.rand(2, 3, *size, generator=gen) * 2 - 1).to(device),)


def example_text_inputs(model: AlignModel, device: torch.device) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    cfg = model.config.text_config
    length = min(8, cfg.max_position_embeddings)
    ids = torch.randint(0, cfg.vocab_size, (3, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, length // 2 :] = 0  # padding in the trace, so the mask is a real input
    return ids.to(device), mask.to(device), torch.zeros_like(ids).to(device)


def processor_description(processor: AlignProcessor | None, part: str) -> dict[str, object]:
    """How a caller without alignsam prepares the inputs (written into `alignsam_onnx.json`)."""
    if part == "align-image":
        settings = processor.image_processor.to_dict() if processor is not None else None
        return {
            "preprocessor_config": "preprocessor_config.json" if processor is not None else None,
            "steps": "resize to size (PIL bilinear, aspect ratio not kept), centre crop to crop_size, "
            "x * rescale_factor - 1 (rescale_offset), channels first; no mean/std unless do_normalize",
            "settings": settings,
        }
    tokenizer = processor.tokenizer if processor is not None else None
    return {
        "tokenizer": "tokenizer.json" if tokenizer is not None else None,
        "steps": "uncased BERT WordPiece ([CLS] text [SEP]), truncated to max_length tokens, right-padded with "
        "the [PAD] id; attention_mask 1 on tokens; token_type_ids 0",
        "max_length": DEFAULT_MAX_LENGTH,
        "pad_token_id": tokenizer.pad_token_id if tokenizer is not None else None,
    }
