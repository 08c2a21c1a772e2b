"""Samples to training tensors: the image resized as SAM resizes it, the masks as low-resolution targets.

SAM predicts masks as `L x L` logits over the padded `S x S` input (L = 4 x the embedding side: 256 for
the published 1024 px models). The ground truth is brought to that frame the way the image is: resized so
that the longest side is S, padded bottom/right, then averaged over each `S/L x S/L` cell. The targets keep
that *coverage* (the share of the cell inside the object, stored as 0..255) rather than a thresholded
mask, so the loss sees where inside a cell an edge runs, and masks upsampled from the logits put their
edges between cells where they belong.

The data order is a pure function of (seed, step), so a resumed run reads exactly what the interrupted one
would have read, with or without worker processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from alignsam.sam.transforms import ResizeLongestSide
from alignsam.train.sam.data import Dataset, Sample, SampleError


@dataclasses.dataclass
class Prepared:
    """One sample in the model's frame.

    Attributes:
        index: the sample's index in its dataset.
        image: `3 x h x w` uint8, resized so that the longest side is the model's input size (not padded);
            None when the sample's embedding comes from a cache.
        original_size: (H, W) of the image as read; input_size: (h, w) after resizing.
        targets: `N x L x L` uint8 coverage of each object's cells (255 = fully inside).
        boxes: `N x 4` float32 XYXY boxes in the resized frame (pixel edges: a mask in columns 3..7 has
            x0 = 3, x1 = 8).
    """

    index: int
    image: torch.Tensor | None
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    targets: torch.Tensor
    boxes: torch.Tensor


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """`N x H x W` bool -> `N x 4` float64 XYXY pixel-edge boxes (empty masks give zeros)."""
    n = masks.shape[0]
    out = np.zeros((n, 4))
    cols, rows = np.asarray(masks.any(axis=1)), np.asarray(masks.any(axis=2))  # N x W, N x H
    for i in range(n):
        xs, ys = np.flatnonzero(cols[i]), np.flatnonzero(rows[i])
        if xs.size:
            out[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return out


def coverage_targets(masks: np.ndarray | torch.Tensor, image_size: int, mask_size: int) -> torch.Tensor:
    """`N x H x W` masks -> `N x L x L` float coverage in [0, 1] of the padded low-resolution frame.

    Resized like the image (longest side `image_size`, bilinear with antialiasing), zero-padded
    bottom/right to `image_size`, and averaged over `image_size / mask_size` pixel cells.
    """
    m = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
    height, width = m.shape[-2:]
    h, w = ResizeLongestSide.get_preprocess_shape(height, width, image_size)
    x = m.float()[:, None]  # N x 1 x H x W
    if (h, w) != (height, width):
        x = F.interpolate(x, (h, w), mode="bilinear", align_corners=False, antialias=True)
    x = F.pad(x, (0, image_size - w, 0, image_size - h))
    return F.avg_pool2d(x, image_size // mask_size)[:, 0].clamp(0, 1)  # N x L x L


def prepare(
    sample: Sample,
    index: int,
    image_size: int,
    mask_size: int,
    *,
    max_masks: int | None = None,
    rng: np.random.Generator | None = None,
    with_image: bool = True,
) -> Prepared:
    """Resize `sample` for a model of input size `image_size` and mask size `mask_size`.

    With `max_masks`, a random subset (drawn with `rng`) of that many objects is kept, chosen before the
    masks are resized (an SA-1B image has about 100).
    """
    masks = sample.masks
    if max_masks is not None and masks.shape[0] > max_masks:
        rng = rng or np.random.default_rng(0)
        masks = masks[np.sort(rng.choice(masks.shape[0], max_masks, replace=False))]
    height, width = sample.image.shape[:2]
    transform = ResizeLongestSide(image_size)
    h, w = transform.target_size((height, width))
    image = None
    if with_image:
        resized = transform.apply_image(sample.image)
        image = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)  # 3 x h x w
    boxes = transform.apply_boxes(mask_boxes(masks), (height, width))
    targets = (coverage_targets(masks, image_size, mask_size) * 255).round().to(torch.uint8)
    return Prepared(index, image, (height, width), (h, w), targets, torch.as_tensor(boxes, dtype=torch.float32))


def batch_indices(step: int, batch_size: int, num_samples: int, seed: int) -> list[int]:
    """The dataset indices of optimiser step `step`: each epoch is a permutation seeded by (seed, epoch);
    steps take consecutive `batch_size` runs of the concatenated epochs."""
    out = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, num_samples)
        out.append(int(_permutation(seed, epoch, num_samples)[offset]))
    return out


_PERMUTATIONS: dict[tuple[int, int, int], np.ndarray] = {}


def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    key = (seed, epoch, n)
    if key not in _PERMUTATIONS:
        if len(_PERMUTATIONS) > 4:
            _PERMUTATIONS.clear()
        _PERMUTATIONS[key] = np.random.default_rng((seed, epoch)).permutation(n)
    return _PERMUTATIONS[key]


class StepBatches:
    """The batch sampler of a run: yields `[(index, step), ...]` for steps `start .. stop - 1`."""

    def __init__(self, start: int, stop: int, batch_size: int, num_samples: int, seed: int) -> None:
        self.start, self.stop, self.batch_size, self.num_samples, self.seed = start, stop, batch_size, num_samples, seed

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            yield [(i, step) for i in batch_indices(step, self.batch_size, self.num_samples, self.seed)]


class TrainingSet(torch.utils.data.Dataset):
    """Map-style view for the DataLoader: `ds[(index, step)]` is a `Prepared` sample, or the reason (a str)
    it was skipped. The object subset depends only on (seed, step, index)."""

    def __init__(
        self, data: Dataset, image_size: int, mask_size: int, max_masks: int, seed: int, with_images: bool = True
    ) -> None:
        self.data, self.image_size, self.mask_size = data, image_size, mask_size
        self.max_masks, self.seed, self.with_images = max_masks, seed, with_images

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]) -> Prepared | str:
        index, step = key
        try:
            sample = self.data.load(index)
        except SampleError as err:
            return err.reason
        rng = np.random.default_rng((self.seed, step, index))
        item = prepare(
            sample, index, self.image_size, self.mask_size,
            max_masks=self.max_masks, rng=rng, with_image=self.with_images,
        )  # fmt: skip
        # Objects that vanish at the low resolution (a few pixels of a large image) cannot be prompted.
        keep = item.targets.flatten(1).amax(1) > 0
        if not keep.any():
            return "tiny_masks"
        item.targets, item.boxes = item.targets[keep], item.boxes[keep]
        return item


def collate(items: list[Prepared | str]) -> list[Prepared | str]:
    return items
