"""transformers' `SamModel` prompt arguments, translated to this library's prompt sets and back.

transformers groups prompts by image and by "point batch" (one mask request each):

| argument | shape | meaning |
| --- | --- | --- |
| `input_points` | `B x P x N x 2` | N points (x, y) per request, in the resized input frame |
| `input_labels` | `B x P x N` | 1 foreground, 0 background, -1 "not a point", -10 padding; default all 1 |
| `input_boxes` | `B x P x 4` | one box per request (P must equal the points' P when both are given) |
| `input_masks` | `B x 1 x L x L` | one mask-logit input per image, shared by its P requests |

The coordinates are the processor's: pixels of the resized image, whose frame is the padded model input's,
the frame of `SamModel`'s own prompts too. Our mask decoder takes B * P prompt sets, each with its own
image's embedding (or one embedding shared by all), so the translation is a flatten: image i's request p
becomes prompt set `i * P + p`, its mask input and embedding repeated P times. Label -10 gives a zero token
in our prompt encoder as in transformers'. The outputs are reshaped back to `B x P x M x L x L` logits
(`pred_masks`) and `B x P x M` IoUs (`iou_scores`).
"""

from __future__ import annotations

import dataclasses

import torch

from alignsam.errors import InputError, PromptError


@dataclasses.dataclass(frozen=True)
class PromptSets:
    """B x P requests flattened to B * P prompt sets, as `SamModel`'s prompt encoder and decoder take them.

    Attributes:
        num_images, point_batch: B and P.
        point_coords: `BP x N x 2`; point_labels: `BP x N`; boxes: `BP x 4`; mask_inputs: `BP x 1 x L x L`.
    """

    num_images: int
    point_batch: int
    point_coords: torch.Tensor | None = None
    point_labels: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    mask_inputs: torch.Tensor | None = None

    @property
    def num_sets(self) -> int:
        return self.num_images * self.point_batch

    @property
    def points(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """`(coords, labels)` as the prompt encoder takes them."""
        if self.point_coords is None or self.point_labels is None:
            return None
        return self.point_coords, self.point_labels

    def image_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        """`B x C x h x w` -> one embedding per prompt set (or the one shared embedding when B = 1)."""
        return embeddings if self.num_images == 1 else embeddings.repeat_interleave(self.point_batch, dim=0)

    def broadcast(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The prompt encoder's output for every prompt set: without any prompt it answers for one set."""
        if embeddings.shape[0] == self.num_sets:
            return embeddings
        return embeddings.expand(self.num_sets, *embeddings.shape[1:])

    def to_transformers(
        self, low_res_logits: torch.Tensor, iou_predictions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`BP x M x L x L` logits and `BP x M` IoUs -> `pred_masks` `B x P x M x L x L`, `iou_scores`
        `B x P x M`."""
        b, p = self.num_images, self.point_batch
        return low_res_logits.reshape(b, p, *low_res_logits.shape[1:]), iou_predictions.reshape(b, p, -1)


@dataclasses.dataclass(frozen=True)
class TransformersPrompts:
    """transformers' prompt arguments as `SamModel.forward` received them (see the module docstring)."""

    input_points: torch.Tensor | None = None
    input_labels: torch.Tensor | None = None
    input_boxes: torch.Tensor | None = None
    input_masks: torch.Tensor | None = None

    def flatten(self, *, num_images: int) -> PromptSets:
        """Check the arguments for `num_images` image embeddings and flatten them to prompt sets; a wrong
        shape is a `PromptError` (or `InputError`) that names it."""
        return _flatten(self.input_points, self.input_labels, self.input_boxes, self.input_masks, num_images)


def _flatten(
    input_points: torch.Tensor | None,
    input_labels: torch.Tensor | None,
    input_boxes: torch.Tensor | None,
    input_masks: torch.Tensor | None,
    num_images: int,
) -> PromptSets:
    if input_labels is not None and input_points is None:
        raise PromptError("input_labels were given without input_points.")
    point_batch = 1
    coords = labels = boxes = masks = None
    if input_points is not None:
        if input_points.ndim != 4 or input_points.shape[-1] != 2:
            raise PromptError(
                "input_points must be B x P x N x 2 (images, point batches, points, (x, y)); got "
                f"{tuple(input_points.shape)}. SamProcessor builds it from nested lists."
            )
        _check_images(input_points, "input_points", num_images)
        point_batch = input_points.shape[1]
        if input_labels is None:  # transformers' default: every point is a foreground point
            input_labels = torch.ones(input_points.shape[:-1], dtype=torch.int, device=input_points.device)
        if tuple(input_labels.shape) != tuple(input_points.shape[:-1]):
            raise PromptError(
                f"input_labels must be B x P x N, one label per point: {tuple(input_points.shape[:-1])}; got "
                f"{tuple(input_labels.shape)}."
            )
        coords = input_points.flatten(0, 1)
        labels = input_labels.flatten(0, 1)
    if input_boxes is not None:
        if input_boxes.ndim != 3 or input_boxes.shape[-1] != 4:
            raise PromptError(f"input_boxes must be B x P x 4 (x0, y0, x1, y1); got {tuple(input_boxes.shape)}.")
        _check_images(input_boxes, "input_boxes", num_images)
        if input_points is not None and input_boxes.shape[1] != point_batch:
            raise PromptError(
                f"Give one box per point batch: {point_batch} point batches but {input_boxes.shape[1]} boxes."
            )
        point_batch = input_boxes.shape[1]
        boxes = input_boxes.flatten(0, 1)
    if input_masks is not None:
        if input_masks.ndim == 3:
            input_masks = input_masks.unsqueeze(1)
        if input_masks.ndim != 4 or input_masks.shape[1] != 1:
            raise PromptError(f"input_masks must be B x 1 x L x L mask logits; got {tuple(input_masks.shape)}.")
        _check_images(input_masks, "input_masks", num_images)
        masks = input_masks if input_masks.is_floating_point() else input_masks.float()  # transformers documents Long
        masks = masks.repeat_interleave(point_batch, dim=0)
    return PromptSets(num_images, point_batch, coords, labels, boxes, masks)


def _check_images(tensor: torch.Tensor, name: str, num_images: int) -> None:
    if tensor.shape[0] != num_images:
        raise InputError(
            f"{name} is for {tensor.shape[0]} images but {num_images} images (or image embeddings) were given; "
            "several requests on one image go along the second axis (B x P x ...)."
        )
