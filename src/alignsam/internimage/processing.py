"""InternImage's evaluation preprocessing and its ImageNet-1k labels.

Preprocessing is the official evaluation transform (`classification/dataset/build.py` with `TEST.CROP` on,
`classification/config.py` defaults), written with PIL and numpy instead of torchvision:

1. resize so that the short side is the image size (224 for T/S/B, 384 for L/XL; not 256), the long side
   `int(size * long / short)`, bicubic (PIL's, antialiased, as torchvision on PIL images);
2. centre crop to size x size (torchvision's offsets: `int(round((h - size) / 2))`);
3. to float in [0, 1], then `(x - mean) / std` with the ImageNet mean (0.485, 0.456, 0.406) and std
   (0.229, 0.224, 0.225).

Labels come from the checkpoint where it has them (`id2label` in its `config.json`, or a `labels.txt` with
one name per line); otherwise a 1000-class model gets the ImageNet-1k class names shipped with alignsam
(`alignsam/internimage/imagenet1k_classes.txt`: the Keras/PyTorch-hub list of the public class names, underscores
as spaces), and any other model "class 0", "class 1", ...
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from importlib import resources
from typing import cast

import numpy as np
import torch
from PIL import Image

from alignsam.errors import AlignSamError, CheckpointError, InputError
from alignsam.internimage.modeling.config import InternImageConfig
from alignsam.io.checkpoints import CONFIG_NAME
from alignsam.io.hub import CacheDir
from alignsam.io.images import ImageInput, load_image
from alignsam.io.resolve import ModelSource, Ref, resolve_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LABELS_FILE = "labels.txt"
IMAGENET_CLASSES_FILE = "imagenet1k_classes.txt"


class InternImageProcessor:
    """Images (paths, bytes, PIL images, arrays; see `alignsam.io.images`) -> `pixel_values`
    `N x 3 x size x size` float32, the official evaluation preprocessing (module docstring)."""

    def __init__(
        self,
        image_size: int = 224,
        *,
        resample: int = Image.Resampling.BICUBIC,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
            raise InputError(f"image_size must be a positive integer, got {image_size!r}.")
        self.image_size = image_size
        self.resample = int(resample)
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)

    @classmethod
    def for_config(cls, config: InternImageConfig) -> InternImageProcessor:
        """The processor of a model: its `image_size`."""
        return cls(config.image_size)

    def preprocess(self, image: ImageInput) -> np.ndarray:
        """One image -> `3 x size x size` float32 array."""
        pil = load_image(image)
        size = self.image_size
        w, h = pil.size
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(size * long / short)
        new_w, new_h = (size, new_long) if w <= h else (new_long, size)
        if new_long * size > RESIZE_PIXELS:
            # Why: a 1 x 20000 image would be resized to 224 x 4.5 million (3 GB) to keep its middle 224
            # columns; resize only the part the crop keeps (PIL's box: the same sample positions, though
            # PIL's edge handling differs by a few levels, so ordinary aspect ratios keep the exact path).
            top, left = round((new_h - size) / 2.0), round((new_w - size) / 2.0)
            sx, sy = w / new_w, h / new_h
            box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
            pil = pil.resize((size, size), resample=self.resample, box=box)
        elif (new_w, new_h) != (w, h):
            pil = pil.resize((new_w, new_h), resample=self.resample)
        arr = _center_crop(np.asarray(pil), size)
        x = arr.astype(np.float32) / np.float32(255)
        x = (x - self.mean) / self.std
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def __call__(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        """One image or a list -> `pixel_values` `N x 3 x size x size` (float32)."""
        batch: list[ImageInput] = list(images) if isinstance(images, list | tuple) else [cast(ImageInput, images)]
        if not batch:
            raise InputError("No images given.")
        return torch.from_numpy(np.stack([self.preprocess(im) for im in batch]))


RESIZE_PIXELS = 1 << 26
"""Above this many pixels in the resized image (aspect ratios beyond ~1300:1 at 224), only the centre crop is
resized."""


def _center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """torchvision's `center_crop` on `H x W x C`: zero padding where the image is smaller, then the crop
    at `int(round((H - size) / 2))`, `int(round((W - size) / 2))`."""
    h, w = arr.shape[:2]
    if h < size or w < size:
        ph, pw = max(size - h, 0), max(size - w, 0)
        arr = np.pad(arr, ((ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2), (0, 0)))
        h, w = arr.shape[:2]
    top, left = round((h - size) / 2.0), round((w - size) / 2.0)  # half to even, as torchvision
    return arr[top : top + size, left : left + size]


@functools.lru_cache(maxsize=1)
def _imagenet_classes() -> tuple[str, ...]:
    text = resources.files("alignsam.internimage").joinpath(IMAGENET_CLASSES_FILE).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in class-index order."""
    return list(_imagenet_classes())


def read_labels(ref: Ref | ModelSource, *, revision: str | None = None, cache_dir: CacheDir = None) -> list[str] | None:
    """Class names stored with a checkpoint: `id2label` in its `config.json`, else its `labels.txt`; None
    when it has neither or `ref` does not resolve. The reference resolves as for `InternImage.from_pretrained`
    (`alignsam.io.resolve.resolve_model`): a folder is read, a weights file's own folder, a hub model from its
    cache only (the one at `cache_dir` when given), never the network."""
    try:
        source = resolve_model(ref, "internimage", revision=revision, cache_dir=cache_dir)
    except AlignSamError:  # nothing at that reference: no labels there
        return None
    if source.kind == "file":  # a weights file: what its folder holds
        source = dataclasses.replace(source, kind="folder", location=str(source.folder))
    id2label = source.settings(CONFIG_NAME, {"id2label"}).get("id2label")
    if id2label is None:
        path = source.local_file(LABELS_FILE)
        if path is None:
            return None
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not isinstance(id2label, dict) or not id2label:
        raise CheckpointError(f"The id2label of '{ref}' is not a mapping of class indices to names.")
    try:
        pairs = sorted((int(k), str(v)) for k, v in id2label.items())
    except ValueError as err:
        raise CheckpointError(f"The id2label of '{ref}' has a key that is not a class index: {err}") from err
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise CheckpointError(f"The id2label of '{ref}' does not number its classes 0..{len(pairs) - 1}.")
    return [name for _, name in pairs]


def labels_for(
    ref: Ref | ModelSource | None, num_classes: int, *, revision: str | None = None, cache_dir: CacheDir = None
) -> list[str]:
    """The class names to show for a model: the checkpoint's own (`read_labels`), else the ImageNet-1k
    names for 1000 classes, else "class i". A stored list of the wrong length is an error."""
    stored = read_labels(ref, revision=revision, cache_dir=cache_dir) if ref is not None else None
    if stored is not None:
        if len(stored) != num_classes:
            raise CheckpointError(f"'{ref}' stores {len(stored)} class names for a model with {num_classes} classes.")
        return stored
    if num_classes == 1000:
        return imagenet_labels()
    return [f"class {i}" for i in range(num_classes)]
