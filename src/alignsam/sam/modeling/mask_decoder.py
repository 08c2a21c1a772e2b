"""SAM's mask decoder: output tokens + prompt tokens through the two-way transformer, then masks and IoUs.

The output tokens are one IoU token and `num_multimask_outputs + 1` mask tokens. Token 0 is the
"single, unambiguous" mask; tokens 1..3 are the three multimask outputs. Each mask token goes through its
own small MLP (a hypernetwork) to weights that are dotted with the upscaled image embedding.
"""

from __future__ import annotations

import torch
from torch import nn

from alignsam.errors import InputError
from alignsam.layers import LayerNorm2d, get_activation
from alignsam.sam.modeling.common import MLP
from alignsam.sam.modeling.config import MaskDecoderConfig
from alignsam.sam.modeling.transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Image and prompt embeddings -> low-resolution mask logits and predicted IoUs."""

    def __init__(self, config: MaskDecoderConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.transformer_dim
        self.num_mask_tokens = config.num_mask_tokens
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.transformer = TwoWayTransformer(config)
        self.output_upscaling = Upscaling(config)
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(dim, config.iou_head_hidden_dim, self.num_mask_tokens, config.iou_head_depth)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            image_embeddings: `1 x C x h x w` (shared by every prompt, as in the official code) or
                `B x C x h x w` (one image per prompt set).
            image_pe: `1 x C x h x w` positional encoding (`PromptEncoder.get_dense_pe()`).
            sparse_prompt_embeddings: `B x T x C`.
            dense_prompt_embeddings: `B x C x h x w`.
            multimask_output: return the three multimask outputs instead of the single-mask output.
        Returns:
            mask logits `B x M x 4h x 4w` and predicted IoUs `B x M`, with M = 3 or 1.
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        mask_slice = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, mask_slice], iou_pred[:, mask_slice]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All `num_mask_tokens` outputs: logits `B x (M+1) x 4h x 4w` and IoUs `B x (M+1)`."""
        b = sparse_prompt_embeddings.shape[0]
        check_image_batch(image_embeddings, b)
        tokens = self.prompt_tokens(sparse_prompt_embeddings)
        src = image_embeddings.expand(b, -1, -1, -1) + dense_prompt_embeddings  # B x C x h x w
        pos_src = image_pe.expand(b, -1, -1, -1)
        hs, src = self.transformer(src, pos_src, tokens)  # B x T x C, B x hw x C
        return self.heads(hs, src, image_pe.shape[-2:])

    def prompt_tokens(self, sparse_prompt_embeddings: torch.Tensor) -> torch.Tensor:
        """The output tokens (IoU, then masks) before each set of prompt tokens: `B x (2+M+T) x C`."""
        b = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)  # (1+M+1) x C
        return torch.cat([output_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings], dim=1)

    def heads(
        self, hs: torch.Tensor, image_tokens: torch.Tensor, size: tuple[int, int] | torch.Size
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformer's tokens `B x T x C` and image tokens `B x hw x C` -> all mask logits and IoUs."""
        b, _, c = image_tokens.shape
        h, w = size
        upscaled = self.output_upscaling(image_tokens.transpose(1, 2).reshape(b, c, h, w))  # B x C/8 x 4h x 4w
        hyper_in, iou_predictions = self.token_heads(hs)
        b, c8, hu, wu = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c8, hu * wu)).reshape(b, -1, hu, wu)
        return masks, iou_predictions

    def token_heads(self, hs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformer's tokens `B x T x C` -> each mask's hypernetwork weights `B x (M+1) x C/8` (a mask
        is their product with the upscaled image) and the IoU predictions `B x (M+1)`."""
        hyper_in = torch.stack([mlp(hs[:, 1 + i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        return hyper_in, self.iou_prediction_head(hs[:, 0, :])


def check_image_batch(image_embeddings: torch.Tensor, num_prompt_sets: int) -> None:
    if image_embeddings.shape[0] not in (1, num_prompt_sets):
        raise InputError(
            f"The mask decoder got {image_embeddings.shape[0]} image embeddings for {num_prompt_sets} prompt "
            "sets; pass one embedding shared by all prompts, or one per prompt set."
        )


class Upscaling(nn.Module):
    """Two stride-2 transposed convolutions: `B x C x h x w` -> `B x C/8 x 4h x 4w`."""

    def __init__(self, config: MaskDecoderConfig) -> None:
        super().__init__()
        dim = config.transformer_dim
        self.conv1 = nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2)
        self.norm = LayerNorm2d(dim // 4, eps=config.upscale_layer_norm_eps)
        self.conv2 = nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2)
        self.act = get_activation(config.upscale_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm(self.conv1(x)))
        return self.act(self.conv2(x))
