"""transformers' SAM processor: images and prompts in, the model's inputs out, and masks back to image size.

    processor = SamProcessor.from_pretrained("vit_b")  # facebook/sam-vit-base; or "demo", a folder, a .pth
    inputs = processor(image, input_points=[[[450, 600]]], return_tensors="pt")
    outputs = model(**inputs)
    masks = processor.image_processor.post_process_masks(
        outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )

The same inputs, nesting, shapes and dtypes as transformers' `SamProcessor` with its PIL image processor:

- **Images** (PIL images, `H x W x C` or `C x H x W` arrays and tensors, paths, or lists of them): the
  longest side resized to `size["longest_edge"]` with PIL bilinear (`ResizeLongestSide`, the same rounding),
  rescaled by 1/255 (in float64, then float32), normalised with the mean and std in float32, zero-padded
  bottom/right to `pad_size`. `pixel_values` equal transformers' bit for bit (tested on photographs).
- **Prompts**, in the original image's pixels, moved to the resized frame (`ResizeLongestSide.apply_coords`):
  `input_points` nested `[image][point batch][point][x, y]` (or `[image][point][x, y]`: one point batch),
  `input_labels` `[image][point batch][point]`, `input_boxes` `[image][box][x0, y0, x1, y1]`. Out come
  `input_points` `B x P x N x 2` (float64), `input_labels` `B x P x N` (int64) and `input_boxes` `B x P x 4`
  (float64). When images have different numbers of points, the shorter lists are padded with points
  (-10, -10) labelled -10, which the prompt encoder ignores.
- **Segmentation maps** (optional): resized with PIL nearest to `mask_size["longest_edge"]`, zero-padded to
  `mask_pad_size`, returned as `labels` (`B x L x L` int64). `SamModel` accepts and ignores them, as
  transformers' does.

Where transformers fails, this processor works: point lists that differ by more than one point are padded
(transformers pads the labels with one -10 only and then cannot stack them), points of different lengths
without labels get labels 1 and -10, and numpy arrays are accepted as prompts. Bad input is a `PromptError`
or `InputError` (both `ValueError`s, as transformers raises) that names the problem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from alignsam.errors import ConfigError, InputError, PromptError
from alignsam.io.files import read_json_object, write_text_atomic
from alignsam.io.hub import CacheDir
from alignsam.io.images import ImageInput, load_image, load_image_array
from alignsam.io.resolve import ModelSource, Ref, resolve_model
from alignsam.outputs import BatchFeature
from alignsam.sam import pretrained
from alignsam.sam.modeling.config import SamConfig
from alignsam.sam.transforms import ResizeLongestSide, masks_to_original_size

TensorType = Literal["pt", "np"] | None
PAD_LABEL = -10
"""transformers' label (and coordinate value) of padding points."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SamImageProcessor:
    """Images -> `pixel_values`, `original_sizes`, `reshaped_input_sizes`; masks -> the original image size.

    The settings are transformers' (`preprocessor_config.json`); `from_config` derives them from a model's
    configuration (image size, mask-input size, pixel mean and std).
    """

    def __init__(
        self,
        size: int | Mapping[str, int] = 1024,
        pad_size: int | Mapping[str, int] | None = None,
        mask_size: int | Mapping[str, int] = 256,
        mask_pad_size: int | Mapping[str, int] | None = None,
        *,
        do_resize: bool = True,
        resample: int = Image.Resampling.BILINEAR,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        do_pad: bool = True,
    ) -> None:
        """
        Args:
            size: the longest side after resizing (`{"longest_edge": n}` or n).
            pad_size: the padded input, `{"height": h, "width": w}` or n (default: `size` squared).
            mask_size, mask_pad_size: the same for segmentation maps (default 256, the mask-input size).
        """
        self.size = {"longest_edge": _longest_edge(size, "size")}
        self.pad_size = _height_width(pad_size if pad_size is not None else self.size["longest_edge"], "pad_size")
        self.mask_size = {"longest_edge": _longest_edge(mask_size, "mask_size")}
        default_mask_pad = self.mask_size["longest_edge"]
        self.mask_pad_size = _height_width(
            mask_pad_size if mask_pad_size is not None else default_mask_pad, "mask_pad_size"
        )
        self.do_resize = bool(do_resize)
        self.resample = int(resample)
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        self.do_pad = bool(do_pad)
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ConfigError("image_mean and image_std need 3 values each, the std values positive.")

    @property
    def transform(self) -> ResizeLongestSide:
        """The resize (and coordinate transform) of this processor."""
        return ResizeLongestSide(self.size["longest_edge"])

    @classmethod
    def from_config(cls, config: SamConfig) -> SamImageProcessor:
        """The processor a model of `config` expects (its image size and normalisation)."""
        return cls(
            size=config.image_size,
            mask_size=config.mask_input_size,
            image_mean=[m / 255 for m in config.pixel_mean],
            image_std=[s / 255 for s in config.pixel_std],
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SamImageProcessor:
        """From transformers' `preprocessor_config.json` content (unknown keys are ignored)."""
        known = set(cls().to_dict()) - {"image_processor_type", "processor_class", "do_convert_rgb"}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError) as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"The image processor settings are invalid: {err}") from err

    @classmethod
    def from_pretrained(
        cls, ref: Ref | ModelSource, *, revision: str | None = None, cache_dir: CacheDir = None
    ) -> SamImageProcessor:
        """A model's `preprocessor_config.json` (or `processor_config.json`), else the defaults of its
        configuration: a bundled model (`demo`), a short name, a folder, a weights file or a hub id."""
        source = resolve_model(ref, "sam", revision=revision, cache_dir=cache_dir)
        if source.path is None or source.path.is_dir():
            path = source.find(["preprocessor_config.json", "processor_config.json"], required=False)
            if path is not None:
                data = read_json_object(path, ConfigError)
                if path.name == "processor_config.json":
                    data = data.get("image_processor", data)
                return cls.from_dict(data)
        return cls.from_config(pretrained.read_model_config(source))

    def to_dict(self) -> dict[str, Any]:
        """transformers' `preprocessor_config.json` content."""
        return {
            "image_processor_type": "SamImageProcessor",
            "size": dict(self.size),
            "pad_size": dict(self.pad_size),
            "mask_size": dict(self.mask_size),
            "mask_pad_size": dict(self.mask_pad_size),
            "do_resize": self.do_resize,
            "resample": self.resample,
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "do_pad": self.do_pad,
            "do_convert_rgb": True,
        }

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write `preprocessor_config.json` (readable by transformers too) into `directory`."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        payload = {**self.to_dict(), "processor_class": "SamProcessor"}
        write_text_atomic(out / "preprocessor_config.json", json.dumps(payload, indent=2) + "\n")
        return out

    def __call__(
        self, images: Any, segmentation_maps: Any = None, *, return_tensors: TensorType = "pt"
    ) -> BatchFeature:
        return self.preprocess(images, segmentation_maps, return_tensors=return_tensors)

    def preprocess(
        self, images: Any, segmentation_maps: Any = None, *, return_tensors: TensorType = "pt"
    ) -> BatchFeature:
        """`pixel_values` `B x 3 x S x S` (float32), `original_sizes` and `reshaped_input_sizes` `B x 2`
        (int64, (height, width)), and `labels` `B x L x L` (int64) for `segmentation_maps`."""
        arrays = [_rgb_array(image) for image in _image_list(images, "images")]
        pixels, originals, reshaped = [], [], []
        for array in arrays:
            originals.append(array.shape[:2])
            resized = self._resize(array, self.size["longest_edge"], self.resample)
            reshaped.append(resized.shape[:2])
            pixels.append(self._pad(self._normalise(resized).transpose(2, 0, 1), self.pad_size))
        if len({p.shape for p in pixels}) > 1:
            raise InputError("Images of different sizes need do_pad=True to be batched.")
        data = {
            "pixel_values": np.stack(pixels),
            "original_sizes": np.array(originals, dtype=np.int64),
            "reshaped_input_sizes": np.array(reshaped, dtype=np.int64),
        }
        if segmentation_maps is not None:
            maps = _image_list(segmentation_maps, "segmentation_maps")
            if len(maps) != len(arrays):
                raise InputError(f"Got {len(maps)} segmentation maps for {len(arrays)} images; give one per image.")
            data["labels"] = np.stack([self._segmentation_map(m) for m in maps])
        return _convert(data, return_tensors)

    def post_process_masks(
        self,
        masks: Sequence[torch.Tensor | np.ndarray] | torch.Tensor,
        original_sizes: Any,
        reshaped_input_sizes: Any,
        mask_threshold: float = 0.0,
        binarize: bool = True,
        pad_size: Mapping[str, int] | None = None,
    ) -> list[torch.Tensor]:
        """The model's `pred_masks` (`B x P x M x 4h x 4w`, or a list of `P x M x 4h x 4w`) -> one tensor per
        image, `P x M x H x W` at its original size: bool (`> mask_threshold`), or logits with
        `binarize=False`. `original_sizes` and `reshaped_input_sizes` are the processor's (`B x 2`)."""
        padded = _height_width(pad_size if pad_size is not None else self.pad_size, "pad_size")
        originals, reshaped = _size_list(original_sizes), _size_list(reshaped_input_sizes)
        if not len(originals) == len(reshaped) <= len(masks):
            raise InputError(
                f"post_process_masks got masks for {len(masks)} images, {len(originals)} original sizes and "
                f"{len(reshaped)} reshaped input sizes."
            )
        out = []
        for image_masks, original, input_size in zip(masks, originals, reshaped, strict=False):
            logits = torch.as_tensor(image_masks)
            if logits.ndim != 4:
                raise InputError(f"Each image's masks must be P x M x h x w logits, got {tuple(logits.shape)}.")
            full = masks_to_original_size(logits, (padded["height"], padded["width"]), input_size, original)
            out.append(full > mask_threshold if binarize else full)
        return out

    def _resize(self, array: np.ndarray, longest_edge: int, resample: int) -> np.ndarray:
        if not self.do_resize:
            return array
        h, w = ResizeLongestSide.get_preprocess_shape(array.shape[0], array.shape[1], longest_edge)
        return np.asarray(Image.fromarray(array).resize((w, h), resample))

    def _normalise(self, array: np.ndarray) -> np.ndarray:
        """transformers' order and precision: rescale in float64 then float32, normalise in float32."""
        x = (array.astype(np.float64) * self.rescale_factor).astype(np.float32) if self.do_rescale else array
        x = x.astype(np.float32)
        if self.do_normalize:
            mean, std = np.array(self.image_mean, np.float32), np.array(self.image_std, np.float32)
            x = (x - mean) / std
        return x

    def _pad(self, chw: np.ndarray, size: Mapping[str, int]) -> np.ndarray:
        if not self.do_pad:
            return chw
        h, w = chw.shape[-2:]
        if h > size["height"] or w > size["width"]:
            raise InputError(f"An image of {h} x {w} does not fit the pad size {size['height']} x {size['width']}.")
        return np.pad(chw, ((0, 0), (0, size["height"] - h), (0, size["width"] - w)))

    def _segmentation_map(self, seg: Any) -> np.ndarray:
        array = np.asarray(seg.detach().cpu() if isinstance(seg, torch.Tensor) else seg)
        if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
            array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:2])
        if array.ndim != 2 or array.size == 0:
            raise InputError(f"A segmentation map must be H x W, got shape {array.shape}.")
        if array.dtype == bool:
            array = array.astype(np.uint8)
        if not np.array_equal(array, np.round(array)) or array.min() < 0 or array.max() > 255:
            raise InputError("Segmentation map values must be whole numbers in 0..255 (class ids or 0/1).")
        resized = self._resize(array.astype(np.uint8), self.mask_size["longest_edge"], Image.Resampling.NEAREST)
        return self._pad(resized[None], self.mask_pad_size)[0].astype(np.int64)


class SamProcessor:
    """transformers' `SamProcessor`: `processor(images, input_points=..., input_labels=..., input_boxes=...)`.

    `processor.image_processor` is the `SamImageProcessor`; see the module docstring for shapes and nesting.
    """

    point_pad_value = PAD_LABEL

    def __init__(self, image_processor: SamImageProcessor | None = None) -> None:
        self.image_processor = image_processor or SamImageProcessor()

    @property
    def target_size(self) -> int:
        """The longest side of the resized image."""
        return self.image_processor.size["longest_edge"]

    @classmethod
    def from_pretrained(
        cls, ref: Ref | ModelSource, *, revision: str | None = None, cache_dir: CacheDir = None
    ) -> SamProcessor:
        """See `SamImageProcessor.from_pretrained`: the model's processor settings, else its configuration's."""
        return cls(SamImageProcessor.from_pretrained(ref, revision=revision, cache_dir=cache_dir))

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        return self.image_processor.save_pretrained(directory)

    def __call__(
        self,
        images: Any = None,
        text: None = None,
        segmentation_maps: Any = None,
        input_points: Any = None,
        input_labels: Any = None,
        input_boxes: Any = None,
        *,
        return_tensors: TensorType = "pt",
        point_pad_value: int = PAD_LABEL,
    ) -> BatchFeature:
        """The image processor's outputs plus `input_points`, `input_labels` and `input_boxes` (see the module
        docstring). Coordinates are `(x, y)` pixels of each original image."""
        if text is not None:
            raise InputError("SAM takes no text prompt; give input_points, input_labels or input_boxes.")
        if images is None:
            raise InputError("SamProcessor needs the images: prompts are moved with each image's resize.")
        encoding = self.image_processor(images, segmentation_maps, return_tensors=return_tensors)
        sizes = [tuple(s) for s in np.asarray(encoding["original_sizes"]).tolist()]
        points = _per_image(input_points, "input_points", depth=2)
        labels = _per_image(input_labels, "input_labels", depth=1)
        boxes = _per_image(input_boxes, "input_boxes", depth=2)
        if labels is not None and points is None:
            raise PromptError("input_labels were given without input_points.")
        if points is not None:
            points = [self._to_resized_frame(p, s) for p, s in zip(points, _sizes_for(points, sizes), strict=True)]
            points, labels = _pad_points(points, labels, point_pad_value)
            encoding["input_points"] = _stack(points, "input_points", return_tensors, leading_dims=4)
        if labels is not None:
            encoding["input_labels"] = _stack(labels, "input_labels", return_tensors, leading_dims=3)
        if boxes is not None:
            # transformers reads boxes as float32 first; the same rounding keeps the numbers equal.
            boxes = [b.astype(np.float32) for b in boxes]
            for b in boxes:
                if b.shape[-1] != 4 or b.ndim != 2:
                    raise PromptError(f"Each image's input_boxes must be a list of [x0, y0, x1, y1], got {b.shape}.")
            transform = self.image_processor.transform
            boxes = [transform.apply_boxes(b, s) for b, s in zip(boxes, _sizes_for(boxes, sizes), strict=True)]
            encoding["input_boxes"] = _stack(boxes, "input_boxes", return_tensors, leading_dims=3)
        return encoding

    def post_process_masks(self, *args: Any, **kwargs: Any) -> list[torch.Tensor]:
        """`self.image_processor.post_process_masks`."""
        return self.image_processor.post_process_masks(*args, **kwargs)

    def _to_resized_frame(self, points: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        if points.shape[-1] != 2 or points.ndim not in (2, 3):
            raise PromptError(
                "Each image's input_points must be [[x, y], ...] or [[[x, y], ...], ...] (point batches), "
                f"got shape {points.shape}."
            )
        return self.image_processor.transform.apply_coords(points, original_size)


# ---------------------------------------------------------------------------------------------------------
# Images.


def _image_list(images: Any, what: str) -> list[Any]:
    """A batch as a list: a list or tuple, a 4-D array or tensor, or one image."""
    if isinstance(images, list | tuple):
        if not images:
            raise InputError(f"The list of {what} is empty.")
        return list(images)
    if isinstance(images, np.ndarray | torch.Tensor) and images.ndim == 4:
        return list(images)
    return [images]


def _rgb_array(image: ImageInput | torch.Tensor) -> np.ndarray:
    """One image as `H x W x 3` uint8, read as transformers reads it: a PIL image as stored (no EXIF
    rotation; files and bytes are turned upright, as transformers' `load_image` does), arrays and tensors
    channels-first when their first axis has 1, 3 or 4 entries, else channels-last."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.ndim == 3 and image.shape[0] in (1, 3, 4):
            image = np.moveaxis(image, 0, -1)
        return load_image_array(image)
    return np.asarray(load_image(image, exif_orientation=not isinstance(image, Image.Image)))


def _convert(data: dict[str, np.ndarray], return_tensors: TensorType) -> BatchFeature:
    if return_tensors == "pt":
        return BatchFeature({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in data.items()})
    if return_tensors in ("np", None):
        return BatchFeature(data)
    raise InputError(f"return_tensors must be 'pt', 'np' or None, not {return_tensors!r}.")


def _longest_edge(value: int | Mapping[str, int], name: str) -> int:
    if isinstance(value, Mapping):
        if "longest_edge" not in value:
            raise ConfigError(f"The processor's {name} must be {{'longest_edge': n}}, got {dict(value)}.")
        value = value["longest_edge"]
    if int(value) < 1:
        raise ConfigError(f"The processor's {name} must be positive, got {value}.")
    return int(value)


def _height_width(value: int | Mapping[str, int], name: str) -> dict[str, int]:
    if isinstance(value, Mapping):
        if not {"height", "width"} <= set(value):
            raise ConfigError(f"The processor's {name} must be {{'height': h, 'width': w}}, got {dict(value)}.")
        return {"height": int(value["height"]), "width": int(value["width"])}
    return {"height": int(value), "width": int(value)}


def _size_list(sizes: Any) -> list[tuple[int, int]]:
    if isinstance(sizes, torch.Tensor):
        sizes = sizes.detach().cpu().numpy()
    return [(int(h), int(w)) for h, w in np.asarray(sizes).reshape(-1, 2)]


# ---------------------------------------------------------------------------------------------------------
# Prompts: transformers' nesting rules.


def _per_image(value: Any, name: str, depth: int) -> list[np.ndarray] | None:
    """A nested list (or array, or tensor) with one entry per image -> one array per image."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple) or not value or not isinstance(value[0], list | tuple):
        raise PromptError(f"{name} must be nested lists with one entry per image (e.g. [[[x, y]]] for one point).")
    try:
        arrays = [np.array(entry) for entry in value]
    except ValueError as err:  # ragged inside one image
        raise PromptError(f"{name}: the lists of one image must have equal lengths ({err}).") from err
    for array in arrays:
        if array.dtype == object or array.ndim < depth or not np.issubdtype(array.dtype, np.number):
            raise PromptError(f"{name} must hold numbers nested as documented, got an entry of shape {array.shape}.")
        if not np.isfinite(array).all():
            raise PromptError(f"{name} holds NaN or infinite values.")
    return arrays


def _sizes_for(prompts: list[np.ndarray], sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Each prompt entry's image size; as in transformers, entries for more images than were given all use
    the first image's size."""
    return sizes if len(prompts) == len(sizes) else [sizes[0]] * len(prompts)


def _pad_points(
    points: list[np.ndarray], labels: list[np.ndarray] | None, pad_value: int
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Pad every image's points to the longest list with `pad_value` points labelled `pad_value`."""
    if labels is not None:
        if len(labels) != len(points):
            raise PromptError(f"input_labels has {len(labels)} entries for {len(points)} images' input_points.")
        for p, lab in zip(points, labels, strict=True):
            if lab.shape != p.shape[:-1]:
                raise PromptError(f"input_labels must have one label per point: shape {p.shape[:-1]}, got {lab.shape}.")
    if len({p.shape for p in points}) == 1:
        return points, labels
    if len({p.shape[:-2] for p in points}) > 1:
        raise PromptError("Every image needs the same number of point batches; pad the point batches yourself.")
    n = max(p.shape[-2] for p in points)
    if labels is None:  # transformers' model would read the padding as foreground points
        labels = [np.ones(p.shape[:-1], dtype=np.int64) for p in points]
    padded_points, padded_labels = [], []
    for p, lab in zip(points, labels, strict=True):
        missing = n - p.shape[-2]
        padded_points.append(np.concatenate([p, np.full((*p.shape[:-2], missing, 2), pad_value, p.dtype)], -2))
        padded_labels.append(np.concatenate([lab, np.full((*lab.shape[:-1], missing), pad_value, lab.dtype)], -1))
    return padded_points, padded_labels


def _stack(arrays: list[np.ndarray], name: str, return_tensors: TensorType, leading_dims: int) -> Any:
    """Stack the per-image arrays; with tensors, add transformers' point-batch axis of 1 where it is missing."""
    if len({a.shape for a in arrays}) > 1:
        shapes = [a.shape for a in arrays]
        raise PromptError(f"{name}: every image needs the same number of entries, got shapes {shapes}.")
    stacked = np.stack(arrays)
    if return_tensors != "pt":
        return stacked
    tensor = torch.from_numpy(stacked)
    return tensor.unsqueeze(1) if tensor.ndim != leading_dims else tensor
