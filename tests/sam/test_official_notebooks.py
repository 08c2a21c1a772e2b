"""The official notebooks' calls, with `segment_anything` replaced by `alignsam.sam`, against the official package.

`predictor_example.ipynb` and `automatic_mask_generator_example.ipynb` are run as written (coordinates
scaled to the test photographs) by functions that take the package as an argument, once with the official
`segment_anything` and its model, once with `alignsam.sam` and our model loaded from the same weights. The
import paths are the official ones: `<package>.SamPredictor`, `<package>.utils.transforms.ResizeLongestSide`,
`<package>.sam_model_registry` / `build_sam_vit_b`, and the `<package>.utils.amg` helpers.

Tolerances are those of tests/sam/test_parity_official.py: IoU predictions within 1e-4, low-resolution
logits within 1e-3, masks equal except where the official full-size logit is within 1e-3 of the threshold.
The default run uses a small SAM (256 px); the extended tier the official vit_b through `sam_model_registry`
(vit_b's parity itself is in the slow tier: test_parity_official.py, test_parity_hf.py).
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

import alignsam.sam
from tests.sam.sam_testing import (
    compare_amg_records,
    official_from_config,
    randomize_,
    region_masks_pair,
    tiny_config,
)

IOU_TOL = 1e-4
LOGIT_TOL = 1e-3
MASK_MARGIN = 1e-3


def predictor_notebook(package: ModuleType, sam: Any, image: np.ndarray, image2: np.ndarray) -> dict[str, Any]:
    """predictor_example.ipynb, cell by cell (the truck's coordinates divided by 3 for the 600 x 400 photo);
    returns every prediction the notebook shows, keyed by what it prompts with."""
    # from segment_anything import SamPredictor; from segment_anything.utils.transforms import ResizeLongestSide
    SamPredictor = package.SamPredictor
    ResizeLongestSide = importlib.import_module(f"{package.__name__}.utils.transforms").ResizeLongestSide
    results: dict[str, Any] = {}

    sam.to(device="cpu")
    predictor = SamPredictor(sam)
    predictor.set_image(image)

    input_point = np.array([[167, 125]])
    input_label = np.array([1])
    masks, scores, logits = predictor.predict(
        point_coords=input_point, point_labels=input_label, multimask_output=True, return_logits=True
    )
    results["one point"] = (masks, scores, logits)

    input_point = np.array([[167, 125], [375, 208]])
    input_label = np.array([1, 1])
    mask_input = logits[np.argmax(scores), :, :]  # Choose the model's best mask
    results["two points + mask input"] = predictor.predict(
        point_coords=input_point,
        point_labels=input_label,
        mask_input=mask_input[None, :, :],
        multimask_output=False,
        return_logits=True,
    )
    input_label = np.array([1, 0])
    results["point + background point"] = predictor.predict(
        point_coords=input_point,
        point_labels=input_label,
        mask_input=mask_input[None, :, :],
        multimask_output=False,
        return_logits=True,
    )

    input_box = np.array([142, 200, 233, 292])
    results["box"] = predictor.predict(
        point_coords=None, point_labels=None, box=input_box[None, :], multimask_output=False, return_logits=True
    )
    input_point = np.array([[192, 250]])
    input_label = np.array([0])
    results["box + point"] = predictor.predict(
        point_coords=input_point, point_labels=input_label, box=input_box, multimask_output=False, return_logits=True
    )

    input_boxes = torch.tensor(
        [[25, 92, 575, 283], [142, 200, 233, 292], [458, 183, 550, 267], [413, 225, 467, 250]],
        device=predictor.device,
    )
    transformed_boxes = predictor.transform.apply_boxes_torch(input_boxes, image.shape[:2])
    masks, scores, low_res = predictor.predict_torch(
        point_coords=None, point_labels=None, boxes=transformed_boxes, multimask_output=False, return_logits=True
    )
    results["predict_torch, 4 boxes"] = (masks.cpu().numpy(), scores.cpu().numpy(), low_res.cpu().numpy())

    # End-to-end batched inference
    image1_boxes = torch.tensor([[25, 92, 575, 283], [142, 200, 233, 292]], device=sam.device)
    image2_boxes = torch.tensor([[30, 20, 250, 290], [200, 40, 440, 200], [10, 150, 120, 290]], device=sam.device)
    resize_transform = ResizeLongestSide(sam.image_encoder.img_size)

    def prepare_image(image: np.ndarray, transform: Any, device: Any) -> torch.Tensor:
        image = transform.apply_image(image)
        image = torch.as_tensor(image, device=device.device)
        return image.permute(2, 0, 1).contiguous()

    batched_input = [
        {
            "image": prepare_image(image, resize_transform, sam),
            "boxes": resize_transform.apply_boxes_torch(image1_boxes, image.shape[:2]),
            "original_size": image.shape[:2],
        },
        {
            "image": prepare_image(image2, resize_transform, sam),
            "boxes": resize_transform.apply_boxes_torch(image2_boxes, image2.shape[:2]),
            "original_size": image2.shape[:2],
        },
    ]
    batched_output = sam(batched_input, multimask_output=False)
    results["batched images"] = [{k: v.cpu().numpy() for k, v in out.items()} for out in batched_output]
    results["mask input"], results["predictor"] = mask_input, predictor  # for the tests' own checks
    return results


def amg_notebook(package: ModuleType, sam: Any, image: np.ndarray) -> list[dict[str, Any]]:
    """automatic_mask_generator_example.ipynb's `mask_generator_2`: crops, fewer points per crop and the
    small-region clean-up as written; 16 points per side instead of 32 and the IoU and stability thresholds
    lowered (0 and 0.3 instead of 0.86 and 0.92) so that masks of random weights pass in seconds."""
    mask_generator_2 = package.SamAutomaticMaskGenerator(
        model=sam,
        points_per_side=16,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.3,
        crop_n_layers=1,
        crop_n_points_downscale_factor=2,
        min_mask_region_area=100,  # Requires open-cv to run post-processing (the official one)
    )
    return mask_generator_2.generate(image)


# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def second_photo() -> np.ndarray:
    from skimage import data

    return data.chelsea()  # 300 x 451


def _pair(official: Any, folder: Path, kind: str) -> tuple[Any, Any]:
    """The official model (random weights) and ours loaded from its `.pth` by the notebook's call."""
    torch.manual_seed(0)
    reference = official.sam_model_registry["vit_b"]() if kind == "vit_b" else official_from_config(tiny_config())
    randomize_(reference, seed=21, logit_gain=4.0)
    path = folder / f"sam_{kind}_random.pth"
    torch.save(reference.state_dict(), path)
    if kind == "vit_b":
        sam = alignsam.sam.sam_model_registry["vit_b"](checkpoint=path)
        assert torch.equal(
            alignsam.sam.build_sam_vit_b(checkpoint=path).mask_decoder.iou_token.weight,
            sam.mask_decoder.iou_token.weight,
        )
    else:  # a small SAM has no registry entry (and its decoder's head count is not in the tensor shapes)
        sam = alignsam.sam.SamModel.from_pretrained(path, config=tiny_config())
    return reference.eval(), sam


@pytest.fixture(scope="module", params=["small", pytest.param("vit_b", marks=[pytest.mark.slow, pytest.mark.extended])])
def notebook_results(
    request: pytest.FixtureRequest,
    official: Any,
    tmp_path_factory: pytest.TempPathFactory,
    photo: np.ndarray,
    second_photo: np.ndarray,
) -> tuple[dict[str, Any], dict[str, Any]]:
    reference, sam = _pair(official, tmp_path_factory.mktemp("notebook"), request.param)
    expected = predictor_notebook(official, reference, photo, second_photo)
    got = predictor_notebook(alignsam.sam, sam, photo, second_photo)
    return expected, got


def _check(expected: tuple, got: tuple, tag: str, logit_tol: float = LOGIT_TOL) -> None:
    """(full-size logits, IoUs, low-res logits) of one prediction against the official ones."""
    ref_logits, ref_iou, ref_low = (np.asarray(t) for t in expected)
    logits, iou, low = (np.asarray(t) for t in got)
    assert logits.shape == ref_logits.shape and iou.shape == ref_iou.shape and low.shape == ref_low.shape, tag
    iou_diff, low_diff = np.abs(iou - ref_iou).max(), np.abs(low - ref_low).max()
    near = np.abs(ref_logits) < MASK_MARGIN
    masks, ref_masks = logits > 0, ref_logits > 0
    print(
        f"\n[notebook] {tag:28s} iou diff {iou_diff:.2g}  low-res logit diff {low_diff:.2g}  "
        f"mask flips {int((masks != ref_masks).sum())} (near-threshold px {int(near.sum())})"
    )
    assert iou_diff < IOU_TOL and low_diff < logit_tol, tag
    np.testing.assert_array_equal(masks[~near], ref_masks[~near])
    assert ref_masks.any() and not ref_masks.all(), tag  # a comparison that can fail


MASK_INPUT_CHAIN_TOL = 1e-2
"""The notebook feeds each model its own previous logits as `mask_input`. The two first predictions differ
by float32 rounding (vit_b: 6e-5), and the mask-input convolutions of random weights amplify an input
difference about 25-fold (vit_b: 1.7e-3 after the chain). The parity tolerance applies to the same mask
input, checked on its own below."""


@pytest.mark.parametrize("name", ["one point", "box", "box + point", "predict_torch, 4 boxes"])
def test_predictor_notebook(notebook_results: tuple[dict, dict], name: str) -> None:
    expected, got = notebook_results
    _check(expected[name], got[name], name)


@pytest.mark.parametrize(
    ("name", "labels"), [("two points + mask input", [1, 1]), ("point + background point", [1, 0])]
)
def test_predictor_notebook_mask_input(notebook_results: tuple[dict, dict], name: str, labels: list[int]) -> None:
    expected, got = notebook_results
    _check(expected[name], got[name], f"{name} (chained)", logit_tol=MASK_INPUT_CHAIN_TOL)
    same_input = got["predictor"].predict(
        point_coords=np.array([[167, 125], [375, 208]]),
        point_labels=np.array(labels),
        mask_input=expected["mask input"][None, :, :],  # the official model's previous logits
        multimask_output=False,
        return_logits=True,
    )
    _check(expected[name], same_input, f"{name} (same mask input)")


def test_predictor_notebook_shapes(notebook_results: tuple[dict, dict], photo: np.ndarray) -> None:
    """The shapes the notebook prints: one prompt gives C x H x W, the 4 transformed boxes 4 x 1 x H x W."""
    _, got = notebook_results
    assert got["one point"][0].shape == (3, *photo.shape[:2])
    assert got["box"][0].shape == (1, *photo.shape[:2])  # box=input_box[None, :] is one box
    assert got["predict_torch, 4 boxes"][0].shape == (4, 1, *photo.shape[:2])


def test_batched_inference_notebook(notebook_results: tuple[dict, dict]) -> None:
    """`sam(batched_input, multimask_output=False)`: masks, iou_predictions and low_res_logits per image."""
    from alignsam.sam.transforms import ResizeLongestSide, masks_to_original_size

    expected, got = notebook_results
    for i, (ref, ours) in enumerate(zip(expected["batched images"], got["batched images"], strict=True)):
        assert ours.keys() == ref.keys() == {"masks", "iou_predictions", "low_res_logits"}
        assert ours["masks"].dtype == bool and ours["masks"].shape == ref["masks"].shape
        assert np.abs(ours["iou_predictions"] - ref["iou_predictions"]).max() < IOU_TOL
        low_diff = np.abs(ours["low_res_logits"] - ref["low_res_logits"]).max()
        assert low_diff < LOGIT_TOL
        # The official full-size logits, for the pixels a mask may flip at (the official postprocessing).
        size = 4 * ref["low_res_logits"].shape[-1]
        original = ref["masks"].shape[-2:]
        input_size = ResizeLongestSide(size).target_size(original)
        full = masks_to_original_size(torch.from_numpy(ref["low_res_logits"]), (size, size), input_size, original)
        near = np.abs(full.numpy()) < MASK_MARGIN
        flips = int((ours["masks"] != ref["masks"]).sum())
        print(f"\n[notebook] batched image {i}: low-res logit diff {low_diff:.2g}, mask flips {flips}")
        np.testing.assert_array_equal(ours["masks"][~near], ref["masks"][~near])
        assert ref["masks"].any() and not ref["masks"].all()


def test_point_outside_the_image_as_official(official: Any, tmp_path: Path, photo: np.ndarray) -> None:
    """The official predictor takes points outside the image; ours gives the same numbers, with a warning."""
    reference, sam = _pair(official, tmp_path, "small")
    ref_predictor, predictor = official.SamPredictor(reference), alignsam.sam.SamPredictor(sam)
    ref_predictor.set_image(photo)
    predictor.set_image(photo)
    prompt = {"point_coords": np.array([[700, 125], [300, -40]]), "point_labels": np.array([1, 0])}
    expected = ref_predictor.predict(**prompt, return_logits=True)
    with pytest.warns(UserWarning, match=r"Point \(700, 125\) \(and 1 more\) lies outside the 600 x 400 image"):
        got = predictor.predict(**prompt, return_logits=True)
    _check(expected, got, "points outside the image")


def test_amg_notebook(official: Any) -> None:
    from PIL import Image
    from skimage import data

    image = np.asarray(Image.fromarray(data.rocket()).resize((320, 214)))
    reference, sam = region_masks_pair(tiny_config())
    expected = amg_notebook(official, reference, image)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about in the notebook's call
        got = amg_notebook(alignsam.sam, sam, image)
    compare_amg_records(official, reference, image, expected, got, "notebook parameters")
    assert len({tuple(r["crop_box"]) for r in got}) > 1, "no mask came from a crop"
    assert set(got[0]) == {
        "segmentation",
        "area",
        "bbox",
        "predicted_iou",
        "point_coords",
        "stability_score",
        "crop_box",
    }


# ---------------------------------------------------------------------------------------------------------
# The aliases themselves.


def _public_names(module: ModuleType) -> set[str]:
    """What a module defines itself (functions and classes), not what it imports."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module.__name__
    }


def test_aliases_cover_the_official_names(official: Any) -> None:
    from segment_anything.utils import amg as official_amg
    from segment_anything.utils import transforms as official_transforms

    from alignsam.sam import amg, transforms
    from alignsam.sam.utils import amg as amg_alias
    from alignsam.sam.utils import transforms as transforms_alias

    for official_module, alias, implementation in (
        (official_amg, amg_alias, amg),
        (official_transforms, transforms_alias, transforms),
    ):
        names = _public_names(official_module)
        assert names and names <= set(alias.__all__), names - set(alias.__all__)
        for name in alias.__all__:  # re-exports, not copies
            assert getattr(alias, name) is getattr(implementation, name), name
        assert not _public_names(alias), "an alias module must not define code of its own"
    for name in ("build_sam", "build_sam_vit_h", "build_sam_vit_l", "build_sam_vit_b", "sam_model_registry"):
        assert hasattr(official, name) and hasattr(alignsam.sam, name), name
    assert set(official.sam_model_registry) == set(alignsam.sam.sam_model_registry)
    assert alignsam.sam.build_sam is alignsam.sam.build_sam_vit_h


def test_amg_aliases_compute_what_the_official_helpers_compute(official: Any) -> None:
    """The helpers the official scripts call, on the same inputs (the full comparisons are in
    tests/sam/test_amg_utils.py)."""
    from segment_anything.utils import amg as ref

    from alignsam.sam.utils import amg

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 40, 60, generator=gen) * 4
    masks = logits > 0
    assert torch.equal(amg.batched_mask_to_box(masks), ref.batched_mask_to_box(masks))
    torch.testing.assert_close(
        amg.calculate_stability_score(logits, 0.0, 1.0), ref.calculate_stability_score(logits, 0.0, 1.0)
    )
    rles = amg.mask_to_rle_pytorch(masks)
    assert rles == ref.mask_to_rle_pytorch(masks)
    assert [amg.area_from_rle(r) for r in rles] == [ref.area_from_rle(r) for r in rles]
    np.testing.assert_array_equal(amg.rle_to_mask(rles[0]), ref.rle_to_mask(rles[0]))
    box = torch.tensor([10.0, 20.0, 50.0, 70.0])
    assert torch.equal(amg.box_xyxy_to_xywh(box), ref.box_xyxy_to_xywh(box))
    assert [list(b) for b in amg.batch_iterator(2, [1, 2, 3])] == [list(b) for b in ref.batch_iterator(2, [1, 2, 3])]
    for got_grid, ref_grid in zip(
        amg.build_all_layer_point_grids(8, 1, 2), ref.build_all_layer_point_grids(8, 1, 2), strict=True
    ):
        np.testing.assert_array_equal(got_grid, ref_grid)
    assert amg.generate_crop_boxes((400, 600), 1, 512 / 1500) == ref.generate_crop_boxes((400, 600), 1, 512 / 1500)
    mask = masks[0].numpy()
    for mode in ("holes", "islands"):
        got_mask, got_changed = amg.remove_small_regions(mask, 30, mode)
        ref_mask, ref_changed = ref.remove_small_regions(mask, 30, mode)
        np.testing.assert_array_equal(got_mask, ref_mask)
        assert got_changed == ref_changed
