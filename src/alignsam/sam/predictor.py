"""`SamPredictor`: compute an image's embedding once, then answer many prompts on it cheaply.

The official API (`set_image`, `predict`, `predict_torch`, `get_image_embedding`, `reset_image`) plus
several images at once:

    predictor.set_images([image_a, image_b], batch_size=2)    # one encoder batch
    results = predictor.predict_batch([{"point_coords": pts, "point_labels": lbl}, {"box": box}])
    masks_a, scores_a, logits_a = results[0]

`set_images` resizes every image on its own (as `set_image` would) and runs the encoder in batches of
`batch_size`; `predict_batch` takes one prompt (or one K-set batch of prompts) per image and runs the
prompt sets of all images that have the same shape of prompt in one decoder batch. The results equal those
of `set_image` + `predict` per image up to float rounding. The predictor is the inference wrapper: it
runs under `torch.no_grad()`; the model itself stays trainable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from alignsam.errors import InputError, PromptError
from alignsam.fast import FastPath
from alignsam.io.images import DEFAULT_MAX_PIXELS, ImageInput, load_image_array
from alignsam.layers import shallow_copy
from alignsam.sam.fast.prepare import prepare_sam
from alignsam.sam.modeling.sam import SamModel
from alignsam.sam.prompts import PromptArrays, check_prompts, mask_to_logits
from alignsam.sam.transforms import ResizeLongestSide

_PROMPT_KEYS = ("point_coords", "point_labels", "box", "mask_input")


class Prediction(NamedTuple):
    """Masks `C x H x W` (bool, or float logits), IoU predictions `C`, low-res logits `C x L x L`.

    With a K-set prompt each field gains a leading K axis. A tuple, so `masks, scores, logits = ...` works.
    """

    masks: np.ndarray
    iou_predictions: np.ndarray
    low_res_logits: np.ndarray


class SamPredictor:
    """Caches image embeddings of a `SamModel` and predicts masks for prompts on them."""

    def __init__(
        self,
        sam_model: SamModel,
        *,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        fast: FastPath | None = None,
        backend: str = "torch",
    ) -> None:
        """
        Args:
            sam_model: the model (kept as `self.model`; move or cast it before creating the predictor).
            max_pixels: larger images are refused with an `ImageError` (None: no limit).
            fast: speed options (see `alignsam.fast.FastPath`), applied with `prepare_sam` to a copy of the
                model that shares its weights (the model itself is not changed): `precision="bf16"` runs the
                image encoder under bfloat16 autocast (the embedding is kept in float32 and the prompt decoder
                runs in float32), `compile=True` wraps it in `torch.compile`, `onednn_matmul` (on by default)
                runs float32 linear layers, and large bf16 attention, on oneDNN's matrix multiply, and
                `sam.prompt_batch` (on by default) decodes many prompts on one image with the image side
                computed once (`alignsam.sam.fast.mask_decoder`; float32 whatever the precision).
            backend: "torch" (default) or "onnxruntime": the prompt encoder and mask decoder exported to ONNX
                (once, cached; see `alignsam.export.runtime`) and run on ONNX Runtime for `predict`,
                `predict_batch`, `predict_torch` and `decode_torch`; the image encoder stays on PyTorch.
        """
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        self.max_pixels = max_pixels
        self.fast = fast or FastPath()
        self._fast_model = prepare_sam(shallow_copy(sam_model), self.fast)  # the model's weights, fast twins
        self.backend = backend
        self._onnx_decoder: Any = None
        if backend != "torch":
            from alignsam.export.runtime import OnnxSamDecoder, check_backend

            check_backend(backend)
            self._onnx_decoder = OnnxSamDecoder.from_model(sam_model)
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def original_size(self) -> tuple[int, int]:
        """(H, W) of the (first) image that was set."""
        return self._sizes(0)[0]

    @property
    def input_size(self) -> tuple[int, int]:
        """(h, w) of the (first) image after resizing, before padding."""
        return self._sizes(0)[1]

    @property
    def num_images(self) -> int:
        return 0 if self.features is None else self.features.shape[0]

    def reset_image(self) -> None:
        """Forget the images that were set."""
        self.is_image_set = False
        self.features: torch.Tensor | None = None
        self.original_sizes: list[tuple[int, int]] = []
        self.input_sizes: list[tuple[int, int]] = []

    def set_image(self, image: ImageInput, image_format: str = "RGB") -> None:
        """Compute the embedding of one image.

        Args:
            image: `H x W x 3` uint8 array (the official input), or anything `alignsam.io.load_image`
                reads: a path, bytes, a PIL image, a grayscale / RGBA / 16-bit array (converted to RGB).
            image_format: "RGB" or "BGR", the channel order of an array.
        """
        self.set_images([image], image_format=image_format)

    def set_images(
        self, images: Sequence[ImageInput] | np.ndarray, image_format: str = "RGB", batch_size: int = 1
    ) -> None:
        """Compute the embeddings of several images, `batch_size` images per encoder call.

        Args:
            images: a list of images (each as `set_image` takes them, sizes may differ) or an
                `N x H x W x 3` uint8 array.
        """
        if image_format not in ("RGB", "BGR"):
            raise InputError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}.")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}.")
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        if isinstance(images, np.ndarray | str | bytes) or not len(images):
            raise InputError("set_images expects a non-empty list of images (use set_image for one).")
        self.reset_image()
        features, originals, inputs = [], [], []
        for start in range(0, len(images), batch_size):
            batch = []
            for image in images[start : start + batch_size]:
                array = load_image_array(image, max_pixels=self.max_pixels)
                if image_format != self.model.image_format:
                    array = np.ascontiguousarray(array[..., ::-1])
                resized = self.transform.apply_image(array)
                originals.append((array.shape[0], array.shape[1]))
                inputs.append((resized.shape[0], resized.shape[1]))
                tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)
                batch.append(self.model.preprocess(tensor[None])[0])
            features.append(self._encode(torch.stack(batch)))
        self.features = torch.cat(features)
        self.original_sizes, self.input_sizes = originals, inputs
        self.is_image_set = True

    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        """Compute the embedding of a `1 x 3 x h x w` image already resized with `self.transform`."""
        size = self.model.image_encoder.img_size
        shape = tuple(transformed_image.shape)
        if len(shape) != 4 or shape[0] != 1 or shape[1] != 3 or max(shape[2:]) != size:
            raise InputError(f"set_torch_image expects 1 x 3 x h x w with longest side {size}, got {shape}.")
        self.reset_image()
        self.features = self._encode(self.model.preprocess(transformed_image))
        self.original_sizes = [(int(original_image_size[0]), int(original_image_size[1]))]
        self.input_sizes = [(shape[2], shape[3])]
        self.is_image_set = True

    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        with self.fast.autocast(self.device):
            features = self._fast_model.image_encoder(pixel_values.to(self.model.dtype))
        return features.to(self.model.dtype)

    def get_image_embedding(self, image_index: int = 0) -> torch.Tensor:
        """The embedding of an image that was set: `1 x C x h x w` (256 x 64 x 64 for the published models)."""
        self._sizes(image_index)
        assert self.features is not None
        return self.features[image_index : image_index + 1]

    def mask_to_logits(self, mask: np.ndarray | torch.Tensor, logit_scale: float = 10.0) -> np.ndarray:
        """`alignsam.mask_to_logits` with this model's sizes: an `H x W` mask -> `1 x L x L` logits."""
        return mask_to_logits(
            mask, image_size=self.model.config.image_size, mask_size=self.model.config.mask_input_size,
            logit_scale=logit_scale,
        )  # fmt: skip

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        *,
        image_index: int = 0,
    ) -> Prediction:
        """Masks for one prompt on an image that was set; coordinates in the original image's pixels.

        Args:
            point_coords: `N x 2` points (x, y); point_labels: `N` labels, 1 foreground, 0 background. A
                point outside the image is used as given, with a `UserWarning`, as the official predictor.
            box: `4` (or `1 x 4`) box (x0, y0, x1, y1).
            mask_input: `1 x 256 x 256` low-resolution logits, e.g. from a previous prediction, or
                `mask_to_logits(mask)` for a binary mask.
            multimask_output: three masks (best for an ambiguous single click) instead of one (best for
                several points or a box).
            return_logits: full-size logits instead of boolean masks.
            image_index: which image of `set_images`.
        Returns:
            `Prediction(masks C x H x W, iou_predictions C, low_res_logits C x 256 x 256)`; with K-set
            prompts (`K x N x 2` points, `K x 4` boxes, ...) every field has a leading K axis.
        """
        original_size, _ = self._sizes(image_index)
        prompts = check_prompts(
            point_coords, point_labels, box, mask_input,
            image_size=original_size, mask_size=self.model.config.mask_input_size,
        )  # fmt: skip
        return self._predict_arrays([(image_index, prompts)], multimask_output, return_logits)[0]

    def predict_batch(
        self,
        prompts: Sequence[Mapping[str, Any] | None],
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> list[Prediction | None]:
        """One prompt (the keyword arguments of `predict`, as a dict) per image set with `set_images`.

        `None` skips an image (its result is None). Returns one `Prediction` per image.
        """
        if len(prompts) != self.num_images:
            raise InputError(f"predict_batch got {len(prompts)} prompts for {self.num_images} images that were set.")
        checked = []
        for i, prompt in enumerate(prompts):
            if prompt is None:
                continue
            unknown = sorted(set(prompt) - set(_PROMPT_KEYS))
            if unknown:
                raise PromptError(f"Prompt {i} has unknown keys {unknown}; known: {list(_PROMPT_KEYS)}.")
            args = [prompt.get(k) for k in _PROMPT_KEYS]
            try:
                arrays = check_prompts(
                    *args, image_size=self.original_sizes[i], mask_size=self.model.config.mask_input_size
                )
            except PromptError as err:
                raise PromptError(f"Prompt {i}: {err}") from err
            checked.append((i, arrays))
        results = self._predict_arrays(checked, multimask_output, return_logits)
        out: list[Prediction | None] = [None] * len(prompts)
        for (i, _), result in zip(checked, results, strict=True):
            out[i] = result
        return out

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        *,
        image_index: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks for B prompt sets on one image; prompts already in the resized frame (`self.transform`).

        Args:
            point_coords: `B x N x 2` (x, y); point_labels: `B x N`.
            boxes: `B x 4` XYXY; mask_input: `B x 1 x 256 x 256` logits.
        Returns:
            masks `B x C x H x W` (bool, or logits with `return_logits`), IoU predictions `B x C`,
            low-resolution logits `B x C x 256 x 256`.
        """
        original_size, input_size = self._sizes(image_index)
        low_res, iou_predictions = self.decode_torch(
            point_coords, point_labels, boxes, mask_input, multimask_output, image_index=image_index
        )
        masks = self.model.postprocess_masks(low_res, input_size, original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou_predictions, low_res

    @torch.no_grad()
    def decode_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        *,
        image_index: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`predict_torch` without the post-processing: low-resolution logits `B x C x 256 x 256` and IoU
        predictions `B x C` (then `model.postprocess_masks` gives full-size logits of the masks one keeps)."""
        self._sizes(image_index)
        _check_torch_prompts(point_coords, point_labels, boxes, mask_input)
        assert self.features is not None
        return self._decode(
            self.features[image_index : image_index + 1],
            point_coords=point_coords,
            point_labels=point_labels,
            boxes=boxes,
            mask_inputs=None if mask_input is None else mask_input.to(self.model.dtype),
            multimask_output=multimask_output,
        )

    def _decode(
        self, image_embeddings: torch.Tensor, *, multimask_output: bool, **prompts: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's low-resolution logits and IoUs for prompt sets on `1 or B` image embeddings."""
        if self._onnx_decoder is not None:
            return self._onnx_decoder(image_embeddings, multimask_output=multimask_output, **prompts)
        with self.fast.matmul(self.device):
            out = self._fast_model(image_embeddings=image_embeddings, multimask_output=multimask_output, **prompts)
        return out.low_res_logits, out.iou_predictions

    def _sizes(self, image_index: int) -> tuple[tuple[int, int], tuple[int, int]]:
        if not self.is_image_set:
            raise InputError("An image must be set with .set_image(...) before mask prediction.")
        if not 0 <= image_index < self.num_images:
            raise InputError(f"image_index {image_index} is out of range: {self.num_images} images are set.")
        return self.original_sizes[image_index], self.input_sizes[image_index]

    @torch.no_grad()
    def _predict_arrays(
        self, items: list[tuple[int, PromptArrays]], multimask_output: bool, return_logits: bool
    ) -> list[Prediction]:
        """Run prompt sets of (possibly) several images, one decoder batch per prompt signature."""
        assert self.features is not None
        groups: dict[tuple[int | None, bool, bool], list[int]] = {}
        for n, (_, prompts) in enumerate(items):
            groups.setdefault(prompts.signature(), []).append(n)
        low_res: dict[int, torch.Tensor] = {}
        ious: dict[int, torch.Tensor] = {}
        for members in groups.values():
            parts = [self._to_model_frame(*items[n]) for n in members]
            image_ids = torch.tensor([items[n][0] for n in members for _ in range(items[n][1].num_sets)])
            if bool((image_ids == image_ids[0]).all()):  # one image: one embedding for every prompt set
                image_ids = image_ids[:1]
            logits, predicted = self._decode(
                self.features[image_ids.to(self.features.device)],
                **{k: _cat([p[k] for p in parts]) for k in parts[0]},
                multimask_output=multimask_output,
            )
            start = 0
            for n in members:
                k = items[n][1].num_sets
                low_res[n], ious[n] = logits[start : start + k], predicted[start : start + k]
                start += k
        results = []
        for n, (image_index, prompts) in enumerate(items):
            original_size, input_size = self._sizes(image_index)
            masks = self.model.postprocess_masks(low_res[n], input_size, original_size)
            if not return_logits:
                masks = masks > self.model.mask_threshold
            fields = [_to_numpy(t) for t in (masks, ious[n], low_res[n])]
            results.append(Prediction(*(f if prompts.batched else f[0] for f in fields)))
        return results

    def _to_model_frame(self, image_index: int, prompts: PromptArrays) -> dict[str, torch.Tensor | None]:
        original_size = self.original_sizes[image_index]
        device = self.device
        coords = labels = boxes = masks = None
        if prompts.point_coords is not None and prompts.point_labels is not None:
            resized = self.transform.apply_coords(prompts.point_coords, original_size)
            coords = torch.as_tensor(resized, dtype=torch.float, device=device)
            labels = torch.as_tensor(prompts.point_labels, dtype=torch.int, device=device)
        if prompts.boxes is not None:
            resized = self.transform.apply_boxes(prompts.boxes, original_size)
            boxes = torch.as_tensor(resized, dtype=torch.float, device=device)
        if prompts.mask_input is not None:
            masks = torch.as_tensor(prompts.mask_input, dtype=self.model.dtype, device=device)
        return {"point_coords": coords, "point_labels": labels, "boxes": boxes, "mask_inputs": masks}


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return (t.float() if t.is_floating_point() else t).cpu().numpy()


def _cat(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    if parts[0] is None:
        return None
    return torch.cat([p for p in parts if p is not None])


def _check_torch_prompts(
    coords: torch.Tensor | None, labels: torch.Tensor | None, boxes: torch.Tensor | None, masks: torch.Tensor | None
) -> None:
    """Shape checks only (values are not inspected: no device syncs on this path)."""
    if coords is None and boxes is None and masks is None:
        raise PromptError("The prompt is empty: give point_coords (with point_labels), boxes, or mask_input.")
    if (coords is None) != (labels is None):
        raise PromptError("point_coords and point_labels go together: pass both.")
    sizes = {}
    if coords is not None and labels is not None:
        if coords.ndim != 3 or coords.shape[-1] != 2 or labels.shape != coords.shape[:2]:
            raise PromptError(
                "point_coords must be B x N x 2 and point_labels B x N; "
                f"got {tuple(coords.shape)} and {tuple(labels.shape)}."
            )
        sizes["points"] = coords.shape[0]
    if boxes is not None:
        if boxes.ndim != 2 or boxes.shape[-1] != 4:
            raise PromptError(f"boxes must be B x 4, got {tuple(boxes.shape)}.")
        sizes["boxes"] = boxes.shape[0]
    if masks is not None:
        if masks.ndim != 4 or masks.shape[1] != 1:
            raise PromptError(f"mask_input must be B x 1 x L x L logits, got {tuple(masks.shape)}.")
        sizes["mask_input"] = masks.shape[0]
    if len(set(sizes.values())) > 1:
        raise PromptError(f"The prompt parts disagree on the batch size: {sizes}.")
    if 0 in sizes.values():
        raise PromptError(f"The prompt has no prompt sets (B = 0): {sizes}.")
