"""Our numpy COCO RLE against pycocotools (the reference; the library itself never imports it)."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from alignsam.io.rle import mask_runs, string_to_runs
from alignsam.synthetic import SceneConfig, SceneGenerator, decode_rle, encode_rle

# pycocotools' decode still passes copy=False to numpy 2 (its problem, not ours).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")


def _reference(mask: np.ndarray) -> dict:
    return coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = [
        np.zeros((7, 5), bool),
        np.ones((7, 5), bool),
        np.eye(6, dtype=bool),
        np.pad(np.ones((1, 1), bool), ((0, 4), (0, 4))),  # only the first pixel
        np.pad(np.ones((1, 1), bool), ((4, 0), (4, 0))),  # only the last pixel
        (np.indices((9, 11)).sum(0) % 2).astype(bool),  # a checkerboard: many 1-pixel runs
        rng.random((40, 33)) < 0.5,
        rng.random((64, 64)) < 0.02,
    ]
    big = np.zeros((700, 900), bool)  # long runs and large negative deltas (multi-group varints)
    big[100:650, 50:120] = True
    big[3:5, 400:890] = True
    big[690:, 10] = True
    out.append(big)
    return out


@pytest.mark.parametrize("mask", _masks(), ids=lambda m: f"{m.shape}-{int(m.sum())}")
def test_encode_and_decode_match_pycocotools(mask):
    ours, ref = encode_rle(mask), _reference(mask)
    assert ours["size"] == list(ref["size"])
    assert ours["counts"] == ref["counts"].decode()
    assert np.array_equal(decode_rle(ours), mask)
    assert np.array_equal(coco_mask.decode({"size": ours["size"], "counts": ours["counts"].encode()}), mask)
    assert coco_mask.area(ref) == mask.sum() == sum(mask_runs(mask)[1::2])
    assert sum(string_to_runs(ours["counts"])) == mask.size


def test_scene_masks_match_pycocotools_including_boxes():
    gen = SceneGenerator(SceneConfig(image_size=97, max_objects=6), seed=3)
    for i in range(30):
        for obj in gen[i].objects:
            rle = encode_rle(obj.mask)
            ref = _reference(obj.mask)
            assert rle["counts"] == ref["counts"].decode()
            x0, y0, x1, y1 = obj.bbox
            assert coco_mask.toBbox(ref).tolist() == [x0, y0, x1 - x0, y1 - y0]


def test_uncompressed_runs_and_size_errors():
    mask = np.eye(4, dtype=bool)
    assert np.array_equal(decode_rle({"size": [4, 4], "counts": mask_runs(mask)}), mask)
    with pytest.raises(ValueError, match="cover"):
        decode_rle({"size": [5, 4], "counts": encode_rle(mask)["counts"]})
