"""Data readers: COCO (compressed and uncompressed RLE, polygons), PNG mask folders, corrupt samples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignsam.errors import InputError
from alignsam.io.rle import encode_rle, encode_uncompressed_rle
from alignsam.synthetic import SceneConfig, SceneGenerator
from alignsam.train.sam.data import (
    CocoDataset,
    MaskFolderDataset,
    SampleError,
    instance_masks,
    open_dataset,
    polygons_to_mask,
)
from alignsam.train.sam.prepare import TrainingSet, batch_indices, coverage_targets, mask_boxes, prepare


def _scene_masks(index: int) -> tuple[np.ndarray, np.ndarray]:
    scene = SceneGenerator(SceneConfig(image_size=64, max_objects=3), seed=3)[index]
    return scene.image, scene.masks


def test_coco_folder_reads_the_written_masks(scenes: Path) -> None:
    data = open_dataset(str(scenes))
    assert len(data) == 12
    for i in (0, 5, 11):
        image, masks = _scene_masks(i)
        sample = data.load(i)
        np.testing.assert_array_equal(sample.image, image)
        np.testing.assert_array_equal(sample.masks, masks)


def test_png_mask_folder_per_object_and_id_maps(scenes: Path, tmp_path: Path) -> None:
    root = tmp_path / "pngs"
    shutil.copytree(scenes / "images", root / "images")
    shutil.copytree(scenes / "masks", root / "masks")
    # image 1: one instance-id PNG instead of one PNG per object; an 8-bit palette map
    image, masks = _scene_masks(1)
    for p in (root / "masks").glob("00000001_*.png"):
        p.unlink()
    ids = np.zeros(image.shape[:2], np.uint8)
    for k, m in enumerate(masks):
        ids[m] = 10 * (k + 1)
    Image.fromarray(ids).save(root / "masks" / "00000001.png")
    # image 2: a colour id map
    image2, masks2 = _scene_masks(2)
    for p in (root / "masks").glob("00000002_*.png"):
        p.unlink()
    colours = np.zeros((*image2.shape[:2], 3), np.uint8)
    for k, m in enumerate(masks2):
        colours[m] = (255, 40 * k, 7)
    Image.fromarray(colours).save(root / "masks" / "00000002.png")
    # image 3: no masks at all -> skipped and counted
    for p in (root / "masks").glob("00000003_*.png"):
        p.unlink()

    data = MaskFolderDataset(root)
    assert len(data) == 11 and data.skipped == {"no_masks": 1}
    names = [item[0].name for item in data.items]
    np.testing.assert_array_equal(data.load(names.index("00000000.png")).masks, _scene_masks(0)[1])
    np.testing.assert_array_equal(data.load(names.index("00000001.png")).masks, masks)
    np.testing.assert_array_equal(data.load(names.index("00000002.png")).masks, masks2)
    assert open_dataset(str(root)).describe().startswith("mask folder")


def test_instance_masks_of_an_id_map() -> None:
    ids = np.array([[0, 3, 3], [7, 7, 0]])
    masks = instance_masks(ids)
    assert len(masks) == 2
    np.testing.assert_array_equal(masks[0], ids == 3)
    np.testing.assert_array_equal(masks[1], ids == 7)


def _coco(tmp_path: Path, segmentations: list[object], size: tuple[int, int] = (40, 50)) -> Path:
    h, w = size
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(tmp_path / "a.png")
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "height": h, "width": w}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": 1, "segmentation": s, "iscrowd": 0}
            for i, s in enumerate(segmentations)
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    return path


def test_coco_rle_compressed_and_uncompressed(tmp_path: Path) -> None:
    mask = np.zeros((40, 50), bool)
    mask[5:20, 10:30] = True
    mask[30:35, 2:4] = True
    path = _coco(tmp_path, [encode_rle(mask), encode_uncompressed_rle(~mask)])
    sample = CocoDataset(path).load(0)
    np.testing.assert_array_equal(sample.masks[0], mask)
    np.testing.assert_array_equal(sample.masks[1], ~mask)


def test_polygons_match_pycocotools(tmp_path: Path) -> None:
    from pycocotools import mask as mask_utils

    polygons = [[10.0, 5.0, 40.0, 8.0, 30.0, 33.0, 12.0, 25.0], [2.0, 2.0, 8.0, 2.0, 5.0, 9.0]]
    ours = polygons_to_mask(polygons, 40, 50)
    rles = mask_utils.frPyObjects(polygons, 40, 50)
    theirs = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    iou = (ours & theirs).sum() / (ours | theirs).sum()
    assert iou > 0.96, iou  # rasterisers differ on a few edge pixels
    exact = 562.0 + 21.0  # shoelace areas of the two polygons
    assert abs(int(ours.sum()) - exact) < 0.04 * exact and abs(int(theirs.sum()) - exact) < 0.04 * exact
    sample = CocoDataset(_coco(tmp_path, [polygons])).load(0)
    np.testing.assert_array_equal(sample.masks[0], ours)


def test_corrupt_samples_are_skipped_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    good = np.zeros((40, 50), bool)
    good[5:20, 10:30] = True
    for name in ("ok.png", "truncated.png", "other_size.png"):
        Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(root / name)
    data = (root / "truncated.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    doc = {
        "images": [
            {"id": 1, "file_name": "ok.png", "height": 40, "width": 50},
            {"id": 2, "file_name": "missing.png", "height": 40, "width": 50},
            {"id": 3, "file_name": "truncated.png", "height": 40, "width": 50},
            {"id": 4, "file_name": "ok.png", "height": 40, "width": 50},  # an RLE that does not decode
            {"id": 5, "file_name": "ok.png", "height": 40, "width": 50},  # only an empty mask
            {"id": 6, "file_name": "other_size.png", "height": 80, "width": 50},
            {"id": 7, "file_name": "ok.png", "height": 40, "width": 50},  # a one-point polygon
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "segmentation": encode_rle(good)},
            {"id": 2, "image_id": 2, "segmentation": encode_rle(good)},
            {"id": 3, "image_id": 3, "segmentation": encode_rle(good)},
            {"id": 4, "image_id": 4, "segmentation": {"size": [40, 50], "counts": "garbage!"}},
            {"id": 5, "image_id": 5, "segmentation": encode_rle(np.zeros((40, 50), bool))},
            {"id": 6, "image_id": 6, "segmentation": encode_rle(good)},
            {"id": 7, "image_id": 7, "segmentation": [[1.0, 2.0]]},
            {"id": 8, "image_id": 1, "segmentation": encode_rle(good), "iscrowd": 1},
            {"id": 9, "image_id": 99, "segmentation": encode_rle(good)},
        ],
    }
    (root / "annotations.json").write_text(json.dumps(doc))
    dataset = open_dataset(str(root))
    assert dataset.skipped == {"crowd_annotation": 1, "orphan_annotation": 1}
    reasons = []
    for i in range(len(dataset)):
        try:
            dataset.load(i)
            reasons.append("ok")
        except SampleError as err:
            reasons.append(err.reason)
    assert reasons == ["ok", "missing_image", "bad_image", "bad_mask", "no_masks", "size_mismatch", "bad_mask"]
    # the training view returns the reason instead of raising
    view = TrainingSet(dataset, 64, 16, max_masks=4, seed=0)
    assert [v if isinstance(v, str) else "ok" for v in (view[(i, 0)] for i in range(len(dataset)))] == reasons


def test_missing_or_unreadable_sources_are_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        open_dataset(str(tmp_path / "nowhere"))
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(InputError, match="not a readable COCO"):
        open_dataset(str(tmp_path / "x.json"))
    with pytest.raises(InputError, match="images/ and masks/"):
        open_dataset(str(tmp_path))


def test_targets_follow_the_image_resize_and_padding() -> None:
    # a 60 x 30 (H x W) image for a 64 px model: resized to 64 x 32, padded right; 16 x 16 targets
    mask = np.zeros((1, 60, 30), bool)
    mask[0, :30, :] = True  # the top half
    cov = coverage_targets(mask, 64, 16)[0]
    assert cov.shape == (16, 16)
    # bilinear resizing blurs the edge a little (60 -> 64 rows)
    assert np.allclose(cov[:8, :8], 1.0, atol=0.02) and np.allclose(cov[8:, :], 0.0, atol=0.02)
    assert np.all(cov[:, 8:].numpy() == 0.0)  # the padding
    # coverage keeps sub-cell edges: a mask ending half way through a cell row covers it by half
    half = np.zeros((1, 64, 64), bool)
    half[0, :, :34] = True  # column cell 8 spans pixels 32..35
    assert float(coverage_targets(half, 64, 16)[0, 0, 8]) == pytest.approx(0.5)
    np.testing.assert_array_equal(mask_boxes(mask), [[0, 0, 30, 30]])


def test_prepare_keeps_a_seeded_subset_and_resizes_boxes() -> None:
    from alignsam.train.sam.data import Sample

    masks = np.zeros((5, 40, 80), bool)
    for k in range(5):
        masks[k, 4 * k : 4 * k + 3, 10 * k : 10 * k + 5] = True
    sample = Sample(np.zeros((40, 80, 3), np.uint8), masks)
    a = prepare(sample, 0, 64, 16, max_masks=3, rng=np.random.default_rng(1))
    b = prepare(sample, 0, 64, 16, max_masks=3, rng=np.random.default_rng(1))
    assert a.targets.shape == (3, 16, 16) and a.input_size == (32, 64) and a.image is not None
    assert a.image.shape == (3, 32, 64)
    assert a.targets.equal(b.targets)
    # boxes scale by 64 / 80 = 0.8
    all_boxes = prepare(sample, 0, 64, 16).boxes
    np.testing.assert_allclose(all_boxes[1].numpy(), [8.0, 3.2, 12.0, 5.6], atol=1e-5)


def test_batch_order_is_a_function_of_seed_and_step() -> None:
    first = [batch_indices(s, 4, 10, seed=0) for s in range(5)]
    assert first == [batch_indices(s, 4, 10, seed=0) for s in range(5)]
    # every epoch visits each sample once
    flat = [i for b in first for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert first != [batch_indices(s, 4, 10, seed=1) for s in range(5)]
