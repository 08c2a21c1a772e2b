"""Training-time image preprocessing: the model's own `AlignImageProcessor`, with ALIGN's augmentation.

ALIGN (§4.1) resizes to 346 x 346, then takes a random 289 x 289 crop and a random horizontal flip during
training, and the central crop at evaluation. Here the sizes come from the model's processor (`size` is
the resize, `crop_size` the crop), and the pixel scaling is the processor's own, so a trained model sees at
evaluation exactly the distribution it was trained on, minus the jitter.
"""

from __future__ import annotations

import numpy as np

from alignsam.align.processing import AlignImageProcessor
from alignsam.io.images import ImageInput, load_image


class TrainTransform:
    """Image -> `3 x H x W` float32 with a random crop and an optional random horizontal flip.

    Args:
        processor: the model's image processor (resize, crop size, rescaling).
        hflip: flip half of the images left-right (the paper does; turn it off when captions say
            "left" and "right", as the synthetic ones sometimes do).
        grayscale: share of images turned grey (ITU-R 601 luma in all three channels), as open_clip's
            `gray_scale_prob`: on those, colour words cannot be matched, so the shapes must be.
        augment: False gives the processor's deterministic centre crop (evaluation).
    """

    def __init__(
        self, processor: AlignImageProcessor, *, hflip: bool = True, grayscale: float = 0.0, augment: bool = True
    ) -> None:
        self.processor = processor
        self.hflip = hflip
        self.grayscale = grayscale
        self.augment = augment and processor.do_resize
        # The same scaling as `processor`, applied to the already resized and cropped array.
        settings = {**processor.to_dict(), "do_resize": False, "do_center_crop": False}
        self._scale = AlignImageProcessor.from_dict(settings)

    def __call__(self, image: ImageInput, rng: np.random.Generator) -> np.ndarray:
        """One image (a PIL image, or anything `load_image` reads) -> `3 x H x W` float32.

        Raises `ImageError` when it cannot be read. `rng` draws the crop and the flip.
        """
        pil = load_image(image)
        if not self.augment:
            return self.processor.preprocess(pil)
        h, w = self.processor.size
        arr = np.asarray(pil.resize((w, h), resample=self.processor.resample))  # H x W x 3
        if self.processor.do_center_crop:
            ch, cw = self.processor.crop_size
            if h < ch or w < cw:  # a crop larger than the resize: the processor's padded centre crop
                return self._finish(self.processor.preprocess(pil), rng, scaled=True)
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            arr = arr[top : top + ch, left : left + cw]
        return self._finish(arr, rng, scaled=False)

    def _finish(self, arr: np.ndarray, rng: np.random.Generator, *, scaled: bool) -> np.ndarray:
        flip = self.hflip and rng.random() < 0.5
        grey = self.grayscale > 0 and rng.random() < self.grayscale
        if scaled:  # 3 x H x W, already scaled
            arr = arr[:, :, ::-1] if flip else arr
            return np.ascontiguousarray(np.repeat(_luma(arr, 0)[None], 3, 0) if grey else arr)
        if flip:
            arr = arr[:, ::-1]
        if grey:  # H x W x 3 uint8
            arr = np.repeat(np.rint(_luma(arr.astype(np.float32), 2)).astype(np.uint8)[:, :, None], 3, 2)
        return self._scale.preprocess(np.ascontiguousarray(arr))


def _luma(arr: np.ndarray, axis: int) -> np.ndarray:
    """ITU-R 601 luma of the RGB channels on `axis` (what PIL's convert("L") computes)."""
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    return np.tensordot(arr, weights, axes=([axis], [0]))
