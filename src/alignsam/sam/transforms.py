"""Resize images so the longest side is the model's input size, move points and boxes with them, and bring
low-resolution mask logits back to the original image.

`apply_image` resizes with PIL's bilinear filter (antialiased when shrinking), exactly what the official
code does through torchvision on a PIL image; the model was trained on images resized this way.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


class ResizeLongestSide:
    """Resize to longest side `target_length`; coordinates follow. Sizes are `(H, W)`, coordinates `(x, y)`."""

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        """`(H, W)` after scaling the longest side to `long_side_length` (rounded half up, at least 1).

        Why at least 1: a 1 x 20000 image scales its short side to 0.05 px, which rounds to an empty image.
        """
        scale = long_side_length * 1.0 / max(oldh, oldw)
        newh, neww = oldh * scale, oldw * scale
        return max(1, int(newh + 0.5)), max(1, int(neww + 0.5))

    def target_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        return self.get_preprocess_shape(original_size[0], original_size[1], self.target_length)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """`H x W x C` uint8 -> `h x w x C` uint8, PIL bilinear."""
        h, w = self.target_size((image.shape[0], image.shape[1]))
        return np.array(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """`... x 2` pixel coordinates in the original image -> the resized frame (float64)."""
        old_h, old_w = original_size
        new_h, new_w = self.target_size(original_size)
        coords = np.array(coords, dtype=float, copy=True)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """`B x 4` XYXY boxes -> the resized frame."""
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """`B x C x H x W` float -> resized, antialiased bilinear. Close to, but not exactly, `apply_image`."""
        h, w = self.target_size((image.shape[2], image.shape[3]))
        return F.interpolate(image, (h, w), mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """`... x 2` tensor version of `apply_coords` (float32)."""
        old_h, old_w = original_size
        new_h, new_w = self.target_size(original_size)
        coords = coords.to(torch.float).clone()
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """`B x 4` tensor version of `apply_boxes`."""
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)


def masks_to_original_size(
    masks: torch.Tensor, padded_size: tuple[int, int], input_size: tuple[int, ...], original_size: tuple[int, ...]
) -> torch.Tensor:
    """Low-resolution logits `B x M x 4h x 4w` -> logits `B x M x H x W` at the original image size.

    Upscales to the padded model input (`padded_size`), removes the padding (`input_size` is the resized
    image's (h, w)), then resizes to `original_size` (H, W); both steps bilinear, as the official model and
    transformers' `post_process_masks` do.
    """
    masks = F.interpolate(masks, padded_size, mode="bilinear", align_corners=False)
    masks = masks[..., : input_size[0], : input_size[1]]
    return F.interpolate(masks, (int(original_size[0]), int(original_size[1])), mode="bilinear", align_corners=False)
