"""SamPredictor on a tiny model: the official API, several images at once, masks as input, bad input."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import alignsam
from alignsam.errors import AlignSamError, ImageError, InputError, PromptError
from alignsam.sam import SamModel, SamPredictor, mask_to_logits
from tests.sam.sam_testing import randomize_, tiny_config


@pytest.fixture(scope="module")
def model() -> SamModel:
    torch.manual_seed(0)
    return randomize_(SamModel.from_config(tiny_config()).eval(), seed=7, logit_gain=4.0)


@pytest.fixture
def predictor(model: SamModel, photo: np.ndarray) -> SamPredictor:
    p = SamPredictor(model)
    p.set_image(photo)
    return p


POINT: dict[str, Any] = {"point_coords": np.array([[300, 200]]), "point_labels": np.array([1])}


def test_predict_outputs(predictor: SamPredictor) -> None:
    masks, scores, logits = predictor.predict(**POINT)
    assert masks.shape == (3, 400, 600) and masks.dtype == bool
    assert scores.shape == (3,) and logits.shape == (3, 64, 64) and logits.dtype == np.float32
    raw = predictor.predict(**POINT, return_logits=True).masks
    np.testing.assert_array_equal(raw > 0, masks)
    one = predictor.predict(**POINT, multimask_output=False)
    assert one.masks.shape == (1, 400, 600)
    assert predictor.get_image_embedding().shape == (1, 64, 16, 16)
    assert predictor.original_size == (400, 600) and predictor.input_size == (171, 256)


def test_predict_torch_many_boxes_equals_one_by_one(predictor: SamPredictor) -> None:
    boxes = np.array([[10, 10, 200, 150], [300, 100, 590, 390], [0, 0, 600, 400]])
    transformed = torch.as_tensor(predictor.transform.apply_boxes(boxes, (400, 600)), dtype=torch.float)
    masks, scores, low = predictor.predict_torch(None, None, boxes=transformed, multimask_output=False)
    assert masks.shape == (3, 1, 400, 600) and scores.shape == (3, 1) and low.shape == (3, 1, 64, 64)
    for i, box in enumerate(boxes):
        single = predictor.predict(box=box, multimask_output=False)
        np.testing.assert_allclose(single.low_res_logits, low[i].numpy(), atol=1e-5)
    # The same K boxes through predict (K x 4) keep the K axis.
    batched = predictor.predict(box=boxes, multimask_output=False)
    assert batched.masks.shape == (3, 1, 400, 600)
    np.testing.assert_allclose(batched.low_res_logits, low.numpy(), atol=1e-5)


def test_several_images_in_one_batch(model: SamModel, photo: np.ndarray) -> None:
    from skimage import data

    images = [photo, data.astronaut(), data.camera()]  # 400x600 RGB, 512x512 RGB, 512x512 grayscale
    prompts = [
        POINT,
        {"box": np.array([50, 60, 400, 500]), "point_coords": np.array([[200, 200]]), "point_labels": np.array([0])},
        {"point_coords": np.array([[100, 100], [300, 400]]), "point_labels": np.array([1, 1])},
    ]
    batch = SamPredictor(model)
    batch.set_images(images, batch_size=3)
    assert batch.num_images == 3 and batch.get_image_embedding(2).shape == (1, 64, 16, 16)
    results = batch.predict_batch([*prompts[:2], None])
    assert results[2] is None
    results = batch.predict_batch(prompts)
    single = SamPredictor(model)
    for i, (image, prompt) in enumerate(zip(images, prompts, strict=True)):
        single.set_image(image)
        torch.testing.assert_close(single.get_image_embedding(), batch.get_image_embedding(i), atol=1e-5, rtol=1e-5)
        expected = single.predict(**prompt)
        got = results[i]
        assert got is not None
        np.testing.assert_allclose(got.iou_predictions, expected.iou_predictions, atol=1e-5)
        np.testing.assert_allclose(got.low_res_logits, expected.low_res_logits, atol=1e-4)
        assert got.masks.shape == expected.masks.shape == (3, *image.shape[:2])
        # predict(image_index=i) on the batch equals too.
        np.testing.assert_allclose(batch.predict(**prompt, image_index=i).low_res_logits, got.low_res_logits, atol=1e-5)
    with pytest.raises(InputError, match="2 prompts for 3 images"):
        batch.predict_batch(prompts[:2])
    with pytest.warns(UserWarning, match=r"Point \(900, 10\) lies outside the 512 x 512 image"):
        batch.predict_batch([POINT, {"point_coords": [[900, 10]], "point_labels": [1]}, None])
    with pytest.raises(InputError, match="out of range"):
        batch.predict(**POINT, image_index=3)
    with pytest.raises(InputError, match="non-empty list"):
        batch.set_images([])
    with pytest.raises(InputError, match="non-empty list"):
        batch.set_images(photo)


def test_same_prompt_signature_across_images_is_batched(model: SamModel, photo: np.ndarray) -> None:
    batch = SamPredictor(model)
    batch.set_images(np.stack([photo, photo[::-1]]), batch_size=2)  # an N x H x W x 3 array works too
    results = batch.predict_batch([POINT, POINT])
    assert results[0] is not None and results[1] is not None
    assert not np.allclose(results[0].low_res_logits, results[1].low_res_logits)  # different images
    np.testing.assert_allclose(batch.predict(**POINT).low_res_logits, results[0].low_res_logits, atol=1e-5)


def test_image_inputs(model: SamModel, photo: np.ndarray) -> None:
    p = SamPredictor(model)
    p.set_image(photo)
    reference = p.get_image_embedding().clone()
    p.set_image(np.ascontiguousarray(photo[..., ::-1]), image_format="BGR")
    torch.testing.assert_close(p.get_image_embedding(), reference)
    p.set_image(Image.fromarray(photo))
    torch.testing.assert_close(p.get_image_embedding(), reference)
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    p.set_image(buffer.getvalue())
    torch.testing.assert_close(p.get_image_embedding(), reference)
    # Grayscale is documented to become RGB (three equal channels).
    gray = photo.mean(axis=2).astype(np.uint8)
    p.set_image(gray)
    q = SamPredictor(model)
    q.set_image(np.repeat(gray[..., None], 3, axis=2))
    torch.testing.assert_close(p.get_image_embedding(), q.get_image_embedding())
    with pytest.raises(InputError, match="RGB' or 'BGR"):
        p.set_image(photo, image_format="RGBA")


def test_tiny_and_huge_images(model: SamModel) -> None:
    p = SamPredictor(model)
    p.set_image(np.full((1, 1, 3), 200, dtype=np.uint8))  # documented: upscaled to the input size
    masks, scores, _ = p.predict(point_coords=np.array([[0, 0]]), point_labels=np.array([1]))
    assert masks.shape == (3, 1, 1) and np.isfinite(scores).all()
    huge = np.broadcast_to(np.zeros((1, 1, 3), dtype=np.uint8), (20000, 20000, 3))  # a view: no memory
    with pytest.raises(ImageError, match="max_pixels=None"):
        p.set_image(huge)
    with pytest.raises(ImageError, match="no pixels"):
        p.set_image(np.zeros((0, 5, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ({}, "empty"),
        ({"point_coords": np.zeros((0, 2)), "point_labels": np.zeros(0)}, "N >= 1"),
        ({"point_coords": [[10, 10]]}, "go together"),
        ({"point_coords": [[10, 10]], "point_labels": [1, 0]}, "one label per point"),
        ({"point_coords": [[10, 10]], "point_labels": [5]}, "1 \\(foreground\\) or 0"),
        ({"point_coords": [[np.nan, 10]], "point_labels": [1]}, "NaN"),
        ({"point_coords": [10, 10], "point_labels": [1]}, "N x 2"),
        ({"box": [300, 10, 100, 200]}, "x1 < x0"),
        ({"box": [10, 300, 100, 200]}, "y1 < y0"),
        ({"box": [10, 10, 700, 200]}, "clip it first"),
        ({"box": [10, 10, 100]}, "4 numbers"),
        ({"mask_input": np.zeros((1, 64, 64), dtype=bool)}, "mask_to_logits"),
        ({"mask_input": np.zeros((1, 256, 256))}, "1 x 64 x 64"),
        ({"box": np.zeros((2, 4)), "point_coords": [[1, 1]], "point_labels": [1]}, "disagree"),
    ],
)
def test_bad_prompts_are_clear_errors(predictor: SamPredictor, prompt: dict, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        predictor.predict(**prompt)


def test_point_outside_the_image_is_used_with_a_warning(predictor: SamPredictor) -> None:
    """The official predictor takes any coordinate; so do we, and say so."""
    inside = predictor.predict(point_coords=np.array([[590, 10]]), point_labels=np.array([1]))
    with pytest.warns(UserWarning, match=r"Point \(601, 10\) lies outside the 600 x 400 image; it is used as given"):
        right = predictor.predict(point_coords=np.array([[601, 10]]), point_labels=np.array([1]))
    with pytest.warns(UserWarning, match=r"Point \(-1, 10\) \(and 1 more\) lies outside"):
        predictor.predict(point_coords=np.array([[-1, 10], [300, 500], [1, 1]]), point_labels=np.array([1, 0, 1]))
    assert right.masks.shape == (3, 400, 600)
    assert not np.allclose(right.low_res_logits, inside.low_res_logits)  # the coordinate reached the model
    with pytest.raises(PromptError, match="NaN or infinite"):
        predictor.predict(point_coords=np.array([[np.inf, 10]]), point_labels=np.array([1]))


def test_one_box_as_1_x_4_is_one_prompt(predictor: SamPredictor) -> None:
    """`box=input_box[None, :]` (the official notebook's call) returns what `box=input_box` returns."""
    box = np.array([100, 80, 450, 320])
    flat, row = predictor.predict(box=box), predictor.predict(box=box[None, :])
    assert row.masks.shape == flat.masks.shape == (3, 400, 600)
    np.testing.assert_array_equal(row.low_res_logits, flat.low_res_logits)
    two = predictor.predict(box=np.stack([box, box]))
    assert two.masks.shape == (2, 3, 400, 600)  # K > 1 boxes keep their K axis
    with_points = predictor.predict(box=box[None, :], point_coords=np.array([[[200, 200]]]), point_labels=[[1]])
    assert with_points.masks.shape == (1, 3, 400, 600)  # the points' K axis


def test_padding_point_may_lie_anywhere(predictor: SamPredictor) -> None:
    out = predictor.predict(point_coords=np.array([[300, 200], [-5, 9999]]), point_labels=np.array([1, -1]))
    assert out.masks.shape == (3, 400, 600)


def test_predict_before_set_image(model: SamModel) -> None:
    p = SamPredictor(model)
    with pytest.raises(InputError, match="set_image"):
        p.predict(**POINT)
    with pytest.raises(AlignSamError):
        p.get_image_embedding()


def test_reset_image(predictor: SamPredictor) -> None:
    predictor.reset_image()
    assert not predictor.is_image_set and predictor.features is None
    with pytest.raises(InputError):
        predictor.predict(**POINT)


def test_predict_torch_shape_errors(predictor: SamPredictor) -> None:
    with pytest.raises(PromptError, match="empty"):
        predictor.predict_torch(None, None)
    with pytest.raises(PromptError, match="B x N x 2"):
        predictor.predict_torch(torch.zeros(2, 2), torch.zeros(2))
    with pytest.raises(PromptError, match="disagree"):
        predictor.predict_torch(torch.zeros(2, 1, 2), torch.ones(2, 1), boxes=torch.zeros(3, 4))


def test_set_torch_image_matches_set_image(model: SamModel, photo: np.ndarray) -> None:
    a = SamPredictor(model)
    a.set_image(photo)
    b = SamPredictor(model)
    resized = torch.as_tensor(b.transform.apply_image(photo)).permute(2, 0, 1)[None]
    b.set_torch_image(resized, photo.shape[:2])
    torch.testing.assert_close(a.get_image_embedding(), b.get_image_embedding())
    np.testing.assert_array_equal(a.predict(**POINT).masks, b.predict(**POINT).masks)
    with pytest.raises(InputError, match="longest side 256"):
        b.set_torch_image(torch.zeros(1, 3, 100, 100), (100, 100))


def test_mask_to_logits(predictor: SamPredictor) -> None:
    masks, scores, low = predictor.predict(**POINT)
    best = masks[np.argmax(scores)]
    logits = mask_to_logits(best, image_size=256)
    assert logits.shape == (1, 64, 64) and logits.dtype == np.float32
    assert logits.max() <= 10 and logits.min() >= -10
    np.testing.assert_array_equal(predictor.mask_to_logits(best), logits)
    # Round trip: the low-res mask it describes is the one SAM predicted, up to the boundary cells.
    inside = low[np.argmax(scores)] > 0
    visible = np.zeros_like(inside)
    visible[: int(np.ceil(171 / 4)), :] = True  # cells of the resized image (the rest is padding)
    agreement = ((logits[0] > 0) == inside)[visible].mean()
    assert agreement > 0.9, agreement
    assert (logits[0][~visible] == -10).all()
    refined = predictor.predict(**POINT, mask_input=logits, multimask_output=False)
    assert refined.masks.shape == (1, 400, 600)
    assert alignsam.mask_to_logits is mask_to_logits
    with pytest.raises(InputError, match="H x W"):
        mask_to_logits(np.zeros((2, 3, 4)))
    with pytest.raises(InputError, match="\\[0, 1\\]"):
        mask_to_logits(np.full((4, 4), 3.0))
