"""SAM's prompt encoder: points and boxes to sparse tokens, mask logits to a dense embedding.

Point labels (the official ones, plus two documented extensions):

| label | meaning |
| --- | --- |
| 1 | foreground point |
| 0 | background point |
| -1 | "not a point": the padding point SAM appends when there is no box |
| 2, 3 | top-left and bottom-right box corners given as points (as the official ONNX export does) |
| -10 | ignored padding (Hugging Face's label for ragged point lists): a zero token |

Coordinates are pixels in the padded model input frame (`input_image_size`), `(x, y)` order.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from alignsam.layers import LayerNorm2d, get_activation
from alignsam.sam.modeling.config import PromptEncoderConfig

NOT_A_POINT = -1
IGNORED_POINT = -10


class PromptEncoder(nn.Module):
    """Embeds points, boxes and low-resolution mask logits for the mask decoder."""

    def __init__(
        self,
        config: PromptEncoderConfig,
        *,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
    ) -> None:
        """
        Args:
            image_embedding_size: (h, w) of the image embedding, e.g. (64, 64).
            input_image_size: (H, W) of the padded model input, e.g. (1024, 1024); coordinates are normalised by it.
        """
        super().__init__()
        self.config = config
        self.embed_dim = config.embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.pe_layer = PositionEmbeddingRandom(config.embed_dim // 2)
        # 0: background point, 1: foreground point, 2: box top-left, 3: box bottom-right.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, config.embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, config.embed_dim)
        self.mask_downscaling = MaskDownscaling(config)
        self.no_mask_embed = nn.Embedding(1, config.embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of every cell of the image embedding: `1 x C x h x w`."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            points: coordinates `B x N x 2` (x, y) and labels `B x N`, or None.
            boxes: `B x 4` boxes (x0, y0, x1, y1), or None.
            masks: `B x 1 x 4h x 4w` mask logits, or None.
        Returns:
            sparse embeddings `B x T x C` (T = N + 1 padding point without boxes, N + 2 with) and dense
            embeddings `B x C x h x w`.
        """
        bs = _batch_size(points, boxes, masks)
        sparse = []
        if points is not None:
            coords, labels = points
            sparse.append(self._embed_points(coords, labels, pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        weight = self.no_mask_embed.weight
        if sparse:
            sparse_embeddings = torch.cat(sparse, dim=1)
        else:
            sparse_embeddings = weight.new_empty((bs, 0, self.embed_dim))
        if masks is not None:
            dense_embeddings = self.mask_downscaling(masks)
        else:
            h, w = self.image_embedding_size
            dense_embeddings = weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse_embeddings, dense_embeddings

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # to the pixel centre
        if pad:
            # Without a box SAM appends one "not a point" token; the decoder was trained with it.
            points = torch.cat([points, points.new_zeros((points.shape[0], 1, 2))], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), NOT_A_POINT)], dim=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)  # B x N x C
        labels = labels[..., None]
        embedding = torch.where(labels == NOT_A_POINT, self.not_a_point_embed.weight, embedding)
        embedding = embedding.masked_fill(labels == IGNORED_POINT, 0.0)
        for i, point_embedding in enumerate(self.point_embeddings):
            assert isinstance(point_embedding, nn.Embedding)
            embedding = torch.where(labels == i, embedding + point_embedding.weight, embedding)
        return embedding

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = (boxes + 0.5).reshape(-1, 2, 2)  # B x 2 x 2, to the pixel centres
        embedding = self.pe_layer.forward_with_coords(corners, self.input_image_size)  # B x 2 x C
        top_left, bottom_right = self.point_embeddings[2], self.point_embeddings[3]
        assert isinstance(top_left, nn.Embedding) and isinstance(bottom_right, nn.Embedding)
        corner_embeddings = torch.cat([top_left.weight, bottom_right.weight])
        return embedding + corner_embeddings


def _batch_size(
    points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None, masks: torch.Tensor | None
) -> int:
    if points is not None:
        return points[0].shape[0]
    if boxes is not None:
        return boxes.shape[0]
    if masks is not None:
        return masks.shape[0]
    return 1


class PositionEmbeddingRandom(nn.Module):
    """Fourier features with a fixed random matrix: `(x, y)` in [0, 1] -> `[sin(2pi v G), cos(2pi v G)]`.

    The matrix is a persistent buffer: it comes with the checkpoint and is never re-sampled or trained.
    """

    positional_encoding_gaussian_matrix: torch.Tensor

    def __init__(self, num_pos_feats: int, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """`... x 2` coordinates in [0, 1] -> `... x 2F` features."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of the centres of an `h x w` grid: `C x h x w`."""
        h, w = size
        matrix = self.positional_encoding_gaussian_matrix
        grid = torch.ones((h, w), device=matrix.device, dtype=matrix.dtype)
        y_embed = (grid.cumsum(dim=0) - 0.5) / h
        x_embed = (grid.cumsum(dim=1) - 0.5) / w
        return self._pe_encoding(torch.stack([x_embed, y_embed], dim=-1)).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """`B x N x 2` pixel coordinates in an `image_size` (H, W) frame -> `B x N x C`."""
        h, w = image_size
        coords = coords / coords.new_tensor([w, h])
        return self._pe_encoding(coords.to(self.positional_encoding_gaussian_matrix.dtype))


class MaskDownscaling(nn.Module):
    """`B x 1 x 4h x 4w` mask logits -> `B x C x h x w`: two stride-2 convs with LayerNorm2d, then a 1x1."""

    def __init__(self, config: PromptEncoderConfig) -> None:
        super().__init__()
        hidden = config.mask_in_chans
        self.conv1 = nn.Conv2d(1, hidden // 4, kernel_size=2, stride=2)
        self.norm1 = LayerNorm2d(hidden // 4, eps=config.layer_norm_eps)
        self.conv2 = nn.Conv2d(hidden // 4, hidden, kernel_size=2, stride=2)
        self.norm2 = LayerNorm2d(hidden, eps=config.layer_norm_eps)
        self.conv3 = nn.Conv2d(hidden, config.embed_dim, kernel_size=1)
        self.act = get_activation(config.act)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.conv1(masks)))
        x = self.act(self.norm2(self.conv2(x)))
        return self.conv3(x)
