"""transformers' SAM documentation, run with `from alignsam import SamModel, SamProcessor`, against transformers.

transformers is the oracle: its `SamModel` is built from a small non-default configuration (256 px, so the
default test run stays quick; vit_b in the slow tier), given random weights of sensible scale (everything
the initialisers zero included), and saved with its `SamProcessor` by `save_pretrained`. Our `SamModel` and
`SamProcessor` load that folder with `from_pretrained`. Each test is one of the documentation's examples
(point prompt, box prompt, several points, several objects, batched images, image embeddings computed once,
segmentation maps, post-processing), run through both libraries with the same code.

Tolerances: processor outputs equal (pixel values bit for bit); `pred_masks`, `iou_scores` and the
full-size logits within 1e-4 (observed: at most about 2e-5 and 5e-7); masks after `post_process_masks`
equal wherever transformers' logit is at least 1e-4 from the threshold (see `check_same_outputs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import alignsam
from alignsam import SamModel, SamProcessor
from alignsam.errors import InputError, PromptError
from alignsam.sam.processing import SamImageProcessor
from tests.sam.sam_testing import randomize_

TOL = 1e-4

SMALL: dict[str, Any] = {
    "vision_config": {
        "hidden_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 3,
        "mlp_dim": 192,
        "image_size": 256,
        "window_size": 8,
        "global_attn_indexes": [1],
        "output_channels": 64,
        "num_pos_feats": 32,
    },
    "prompt_encoder_config": {"hidden_size": 64, "image_size": 256, "mask_input_channels": 8},
    "mask_decoder_config": {"hidden_size": 64, "mlp_dim": 128, "num_attention_heads": 4, "iou_head_hidden_dim": 32},
}


class Pair:
    """The same checkpoint in both libraries: `hf_model`, `hf_processor`, `model`, `processor`."""

    def __init__(self, folder: Path, config_kwargs: dict[str, Any]) -> None:
        from transformers import SamConfig as HFSamConfig
        from transformers import SamImageProcessorPil
        from transformers import SamModel as HFSamModel
        from transformers import SamProcessor as HFSamProcessor

        torch.manual_seed(0)
        self.hf_model = HFSamModel(HFSamConfig(**config_kwargs)).eval()
        randomize_(self.hf_model, seed=5, logit_gain=4.0)
        size = self.hf_model.config.vision_config.image_size
        mask = 4 * self.hf_model.config.prompt_encoder_config.image_embedding_size
        self.hf_processor = HFSamProcessor(
            image_processor=SamImageProcessorPil(
                size={"longest_edge": size},
                pad_size={"height": size, "width": size},
                mask_size={"longest_edge": mask},
                mask_pad_size={"height": mask, "width": mask},
            )
        )
        self.hf_model.save_pretrained(folder)
        self.hf_processor.save_pretrained(folder)
        self.model = SamModel.from_pretrained(folder)
        self.processor = SamProcessor.from_pretrained(folder)

    def run(self, images: Any, multimask_output: bool = True, **prompts: Any) -> tuple[Any, Any, Any, Any]:
        """The documentation's `inputs = processor(...)`, `outputs = model(**inputs)` in both libraries."""
        hf_inputs = self.hf_processor(images, return_tensors="pt", **prompts)
        inputs = self.processor(images, return_tensors="pt", **prompts)
        check_same_inputs(inputs, hf_inputs)
        with torch.no_grad():
            hf_outputs = self.hf_model(**hf_inputs, multimask_output=multimask_output)
            outputs = self.model(**inputs, multimask_output=multimask_output)
        return inputs, outputs, hf_inputs, hf_outputs


def check_same_inputs(inputs: Any, hf_inputs: Any) -> None:
    assert set(inputs) == set(hf_inputs), (set(inputs), set(hf_inputs))
    for key, expected in hf_inputs.items():
        got = inputs[key]
        assert got.shape == expected.shape and got.dtype == expected.dtype, (key, got.shape, expected.shape)
        assert torch.equal(got, expected), (key, (got.double() - expected.double()).abs().max())


def check_same_outputs(
    pair: Pair, inputs: Any, outputs: Any, hf_inputs: Any, hf_outputs: Any, tag: str
) -> list[torch.Tensor]:
    """pred_masks, iou_scores and the full-size logits within TOL; masks after post-processing equal wherever
    transformers' logit is at least TOL away from the threshold. Returns our masks.

    Why not equal everywhere: the two libraries compute the same function in different float32 operation
    orders (fused attention, reassociated products), so the logits differ by ~1e-5; a pixel whose logit lies
    within that of 0 can land on either side. Bilinear upscaling never increases the difference, so a flip
    can only happen where |logit| < TOL; every other pixel must agree.
    """
    assert outputs.pred_masks.shape == hf_outputs.pred_masks.shape
    assert outputs.iou_scores.shape == hf_outputs.iou_scores.shape
    mask_diff = (outputs.pred_masks - hf_outputs.pred_masks).abs().max().item()
    iou_diff = (outputs.iou_scores - hf_outputs.iou_scores).abs().max().item()
    sizes, hf_sizes = (
        (inputs["original_sizes"], inputs["reshaped_input_sizes"]),
        (
            hf_inputs["original_sizes"],
            hf_inputs["reshaped_input_sizes"],
        ),
    )
    masks = pair.processor.image_processor.post_process_masks(outputs.pred_masks.cpu(), *sizes)
    logits = pair.processor.image_processor.post_process_masks(outputs.pred_masks.cpu(), *sizes, binarize=False)
    hf_masks = pair.hf_processor.image_processor.post_process_masks(hf_outputs.pred_masks.cpu(), *hf_sizes)
    hf_logits = pair.hf_processor.image_processor.post_process_masks(
        hf_outputs.pred_masks.cpu(), *hf_sizes, binarize=False
    )
    flips = near = 0
    for got, expected, logit, hf_logit in zip(masks, hf_masks, logits, hf_logits, strict=True):
        assert got.dtype == torch.bool and got.shape == expected.shape
        assert torch.equal(got, logit > 0) and torch.equal(expected, hf_logit > 0)
        assert (logit - hf_logit).abs().max().item() < TOL
        far = hf_logit.abs() >= TOL
        assert torch.equal(got[far], expected[far])
        flips, near = flips + int((got != expected).sum()), near + int((~far).sum())
        coverage = got.float().mean(dim=(-1, -2))
        assert ((coverage > 0.01) & (coverage < 0.99)).any(), coverage  # masks that can differ
    print(
        f"\n[transformers api] {tag:28s} pred_masks {mask_diff:.2g}  iou_scores {iou_diff:.2g}  "
        f"mask flips {flips} (pixels with |logit| < {TOL:g}: {near})"
    )
    assert mask_diff < TOL and iou_diff < TOL
    return masks


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    return Pair(tmp_path_factory.mktemp("hf_sam_small"), SMALL)


@pytest.fixture(scope="module")
def raw_image(photo: np.ndarray) -> Image.Image:
    return Image.fromarray(photo).convert("RGB")  # 600 x 400


@pytest.fixture(scope="module")
def second_image() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.chelsea()).convert("RGB")  # 451 x 300


def test_imports_and_folder_settings(pair: Pair) -> None:
    assert alignsam.SamProcessor is SamProcessor
    assert pair.processor.image_processor.to_dict() | {"do_convert_rgb": True} == {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in pair.hf_processor.image_processor.to_dict().items()
        if k in pair.processor.image_processor.to_dict()
    }


def test_point_prompt(pair: Pair, raw_image: Image.Image) -> None:
    """The documentation's first example: one point, `model(**inputs)`, `post_process_masks`."""
    input_points = [[[450, 200]]]  # 2D location of a window in the image
    inputs, outputs, hf_inputs, hf_outputs = pair.run(raw_image, input_points=input_points)
    assert outputs.pred_masks.shape == (1, 1, 3, 64, 64) and outputs.iou_scores.shape == (1, 1, 3)
    masks = check_same_outputs(pair, inputs, outputs, hf_inputs, hf_outputs, "one point")
    assert masks[0].shape == (1, 3, 400, 600)
    assert outputs[0] is outputs.iou_scores and outputs["pred_masks"] is outputs.pred_masks


def test_point_prompt_single_mask(pair: Pair, raw_image: Image.Image) -> None:
    outputs = pair.run(raw_image, multimask_output=False, input_points=[[[450, 200]]])
    assert outputs[1].pred_masks.shape == (1, 1, 1, 64, 64)
    check_same_outputs(pair, *outputs, "one point, one mask")


def test_box_prompt(pair: Pair, raw_image: Image.Image) -> None:
    outputs = pair.run(raw_image, input_boxes=[[[100, 80, 450, 320]]])
    check_same_outputs(pair, *outputs, "box")


def test_several_points_one_mask(pair: Pair, raw_image: Image.Image) -> None:
    outputs = pair.run(raw_image, input_points=[[[450, 200], [100, 50], [500, 300]]], input_labels=[[1, 0, 1]])
    assert outputs[0]["input_points"].shape == (1, 1, 3, 2) and outputs[0]["input_labels"].shape == (1, 1, 3)
    check_same_outputs(pair, *outputs, "several points")


def test_points_without_labels_are_foreground(pair: Pair, raw_image: Image.Image) -> None:
    outputs = pair.run(raw_image, input_points=[[[450, 200], [500, 300]]])
    check_same_outputs(pair, *outputs, "points, no labels")


def test_several_objects_point_batches_and_boxes(pair: Pair, raw_image: Image.Image) -> None:
    """Several masks per image: P point batches (`[image][batch][point][xy]`) or P boxes, each with its box."""
    points = [[[[450, 200]], [[100, 50]], [[300, 300]]]]
    outputs = pair.run(raw_image, input_points=points)
    assert outputs[1].pred_masks.shape == (1, 3, 3, 64, 64)
    check_same_outputs(pair, *outputs, "3 point batches")
    boxes = [[[100, 80, 450, 320], [20, 20, 200, 150], [300, 100, 590, 390]]]
    outputs = pair.run(raw_image, input_boxes=boxes)
    assert outputs[1].iou_scores.shape == (1, 3, 3)
    check_same_outputs(pair, *outputs, "3 boxes")
    outputs = pair.run(raw_image, input_points=points, input_labels=[[[1], [0], [1]]], input_boxes=boxes)
    check_same_outputs(pair, *outputs, "3 point batches + boxes")


def test_batched_images(pair: Pair, raw_image: Image.Image, second_image: Image.Image) -> None:
    images = [raw_image, second_image]
    outputs = pair.run(images, input_points=[[[450, 200]], [[200, 150]]])
    assert outputs[1].pred_masks.shape == (2, 1, 3, 64, 64)
    masks = check_same_outputs(pair, *outputs, "2 images, a point each")
    assert masks[0].shape == (1, 3, 400, 600) and masks[1].shape == (1, 3, 300, 451)
    outputs = pair.run(images, input_boxes=[[[100, 80, 450, 320]], [[50, 20, 400, 280]]])
    check_same_outputs(pair, *outputs, "2 images, a box each")


def test_batched_images_with_padded_points(pair: Pair, raw_image: Image.Image, second_image: Image.Image) -> None:
    """Point lists of different lengths: padded with (-10, -10) points labelled -10."""
    outputs = pair.run(
        [raw_image, second_image], input_points=[[[450, 200], [100, 50]], [[200, 150]]], input_labels=[[1, 0], [1]]
    )
    inputs = outputs[0]
    assert inputs["input_labels"].tolist() == [[[1, 0]], [[1, -10]]]
    assert inputs["input_points"][1, 0, 1].tolist() == [-10.0, -10.0]
    check_same_outputs(pair, *outputs, "2 images, padded points")


def test_padding_by_more_than_one_point(pair: Pair, raw_image: Image.Image, second_image: Image.Image) -> None:
    """transformers pads the labels with a single -10 and then cannot stack them; we pad every missing point.
    The result equals transformers' model on inputs padded by hand."""
    images = [raw_image, second_image]
    points, labels = [[[450, 200], [100, 50], [500, 300]], [[200, 150]]], [[1, 0, 1], [1]]
    with pytest.raises(ValueError):
        pair.hf_processor(images, input_points=points, input_labels=labels, return_tensors="pt")
    inputs = pair.processor(images, input_points=points, input_labels=labels, return_tensors="pt")
    assert inputs["input_labels"].tolist() == [[[1, 0, 1]], [[1, -10, -10]]]
    hf_inputs = pair.hf_processor(
        images,
        input_points=[points[0], [*points[1], [0, 0], [0, 0]]],
        input_labels=[[1, 0, 1], [1, -10, -10]],
        return_tensors="pt",
    )
    hf_inputs["input_points"][1, 0, 1:] = -10.0
    check_same_inputs(inputs, hf_inputs)
    with torch.no_grad():
        outputs, hf_outputs = pair.model(**inputs), pair.hf_model(**hf_inputs)
    check_same_outputs(pair, inputs, outputs, hf_inputs, hf_outputs, "padded by 2 points")
    # Without labels the padding points still get -10 (transformers' model would make them foreground).
    unlabelled = pair.processor(images, input_points=points, return_tensors="pt")
    assert unlabelled["input_labels"].tolist() == [[[1, 1, 1]], [[1, -10, -10]]]


def test_image_embeddings_once(pair: Pair, raw_image: Image.Image) -> None:
    """`get_image_embeddings`, then `image_embeddings=` in place of `pixel_values`, as the docs show."""
    embeddings = []
    outputs = []
    for processor, model in ((pair.processor, pair.model), (pair.hf_processor, pair.hf_model)):
        inputs = processor(raw_image, return_tensors="pt")
        image_embeddings = model.get_image_embeddings(inputs["pixel_values"])
        inputs = processor(raw_image, input_points=[[[450, 200]]], return_tensors="pt")
        inputs.pop("pixel_values", None)
        inputs.update({"image_embeddings": image_embeddings})
        with torch.no_grad():
            outputs.append((inputs, model(**inputs)))
        embeddings.append(image_embeddings)
    assert not embeddings[0].requires_grad and embeddings[0].shape == (1, 64, 16, 16)
    diff = (embeddings[0] - embeddings[1]).abs().max().item()
    print(f"\n[transformers api] image embeddings max |diff| {diff:.2g}")
    assert diff < TOL
    (inputs, out), (hf_inputs, hf_out) = outputs
    check_same_outputs(pair, inputs, out, hf_inputs, hf_out, "image_embeddings=")


def test_mask_input_from_a_previous_prediction(pair: Pair, raw_image: Image.Image) -> None:
    results = []
    for processor, model in ((pair.processor, pair.model), (pair.hf_processor, pair.hf_model)):
        inputs = processor(raw_image, input_points=[[[450, 200]]], return_tensors="pt")
        with torch.no_grad():
            first = model(**inputs)
            best = first.pred_masks[0, 0, first.iou_scores[0, 0].argmax()][None, None]  # 1 x 1 x 64 x 64
            inputs = processor(
                raw_image, input_points=[[[450, 200], [100, 50]]], input_labels=[[1, 0]], return_tensors="pt"
            )
            results.append((inputs, model(**inputs, input_masks=best, multimask_output=False)))
    (inputs, out), (hf_inputs, hf_out) = results
    check_same_outputs(pair, inputs, out, hf_inputs, hf_out, "points + input_masks")


def test_segmentation_maps(pair: Pair, raw_image: Image.Image) -> None:
    """The documentation's second example: `segmentation_maps` become `labels`, which the model ignores."""
    rng = np.random.default_rng(0)
    for segmentation_map in (
        Image.fromarray((rng.random((400, 600)) > 0.5).astype(np.uint8) * 255).convert("1"),
        rng.integers(0, 5, (400, 600)).astype(np.uint8),
    ):
        outputs = pair.run(raw_image, input_points=[[[450, 200]]], segmentation_maps=segmentation_map)
        assert outputs[0]["labels"].shape == (1, 64, 64) and outputs[0]["labels"].dtype == torch.int64
        check_same_outputs(pair, *outputs, "with segmentation_maps")


def test_post_process_masks_logits_and_threshold(pair: Pair, raw_image: Image.Image) -> None:
    inputs, _, hf_inputs, hf_outputs = pair.run(raw_image, input_points=[[[450, 200]]])
    for kwargs in ({"binarize": False}, {"mask_threshold": 0.5}):
        ours = pair.processor.post_process_masks(
            hf_outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"], **kwargs
        )
        ref = pair.hf_processor.post_process_masks(
            hf_outputs.pred_masks, hf_inputs["original_sizes"], hf_inputs["reshaped_input_sizes"], **kwargs
        )
        assert torch.equal(ours[0], ref[0]), kwargs  # the same function of the same logits


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda im: np.asarray(im), id="HWC array"),
        pytest.param(lambda im: torch.from_numpy(np.array(im)).permute(2, 0, 1), id="CHW tensor"),
        pytest.param(lambda im: im.convert("L"), id="grayscale PIL"),
        pytest.param(lambda im: im.convert("RGBA"), id="RGBA PIL"),
    ],
)
def test_image_inputs_like_transformers(pair: Pair, raw_image: Image.Image, convert: Any) -> None:
    image = convert(raw_image)
    inputs = pair.processor(image, input_boxes=[[[10, 20, 300, 200]]], return_tensors="pt")
    check_same_inputs(inputs, pair.hf_processor(image, input_boxes=[[[10, 20, 300, 200]]], return_tensors="pt"))


def test_pixel_values_match_the_predictor_preprocessing(pair: Pair, photo: np.ndarray) -> None:
    """One resize and normalisation in the library: the processor's pixels equal `SamModel.preprocess` of
    `ResizeLongestSide`'s image within float32 rounding of the two normalisation orders."""
    pixels = pair.processor(photo)["pixel_values"]
    transform = pair.processor.image_processor.transform
    resized = torch.as_tensor(transform.apply_image(photo)).permute(2, 0, 1)[None].float()
    diff = (pair.model.preprocess(resized) - pixels).abs().max().item()
    print(f"\n[transformers api] processor vs SamModel.preprocess max |diff| {diff:.2g}")
    assert diff < 1e-5


def test_saved_processor_reads_in_transformers(pair: Pair, tmp_path: Path, raw_image: Image.Image) -> None:
    from transformers import SamProcessor as HFSamProcessor

    pair.processor.save_pretrained(tmp_path)
    reloaded = HFSamProcessor.from_pretrained(tmp_path)
    expected = reloaded(raw_image, input_points=[[[1, 2]]], return_tensors="pt")
    check_same_inputs(pair.processor(raw_image, input_points=[[[1, 2]]]), expected)


@pytest.mark.slow
def test_vit_b_points_and_boxes(tmp_path_factory: pytest.TempPathFactory, raw_image: Image.Image) -> None:
    """The default configuration (vit_b, 1024 px): two requests, each a point and a box, in one call."""
    big = Pair(tmp_path_factory.mktemp("hf_sam_vit_b"), {})
    outputs = big.run(
        raw_image, input_points=[[[[450, 200]], [[100, 50]]]], input_boxes=[[[100, 80, 450, 320], [20, 20, 200, 150]]]
    )
    assert outputs[1].pred_masks.shape == (1, 2, 3, 256, 256)
    check_same_outputs(big, *outputs, "vit_b points + boxes")


# ---------------------------------------------------------------------------------------------------------
# Our own folders and files, and bad input.


def test_demo_from_pretrained(photo: np.ndarray) -> None:
    """`SamProcessor.from_pretrained("demo")`: the settings come from the demo's config.json (128 px)."""
    model, processor = SamModel.from_pretrained("demo"), SamProcessor.from_pretrained("demo")
    settings = processor.image_processor
    assert settings.size == {"longest_edge": 128} and settings.pad_size == {"height": 128, "width": 128}
    assert settings.mask_size == {"longest_edge": model.config.mask_input_size}
    inputs = processor(photo, input_points=[[[300, 200]]], input_boxes=[[[100, 80, 450, 320]]])
    assert inputs["pixel_values"].shape == (1, 3, 128, 128) and inputs["reshaped_input_sizes"].tolist() == [[85, 128]]
    with torch.no_grad():
        outputs = model(**inputs)
    masks = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])
    assert masks[0].shape == (1, 3, 400, 600)
    # The same prompt through this library's own convention gives the same logits.
    with torch.no_grad():
        own = model(
            inputs["pixel_values"],
            point_coords=inputs["input_points"][0].float(),
            point_labels=inputs["input_labels"][0] if "input_labels" in inputs else torch.ones(1, 1, dtype=torch.int),
            boxes=inputs["input_boxes"][0].float(),
        )
    torch.testing.assert_close(own.low_res_logits, outputs.pred_masks[0], rtol=0, atol=1e-5)


def test_processor_from_a_pth_file(tmp_path: Path) -> None:
    from tests.sam.sam_testing import official_from_config, tiny_config

    path = tmp_path / "tiny.pth"
    torch.save(official_from_config(tiny_config()).state_dict(), path)
    processor = SamProcessor.from_pretrained(path)
    assert processor.image_processor.size == {"longest_edge": 256}
    assert processor.image_processor.mask_size == {"longest_edge": 64}
    assert SamImageProcessor.from_pretrained(path).to_dict() == processor.image_processor.to_dict()


def test_forward_conventions_and_errors(pair: Pair) -> None:
    model = pair.model
    embeddings = torch.randn(2, 64, 16, 16)
    points = torch.tensor([[[[100.0, 50.0]]], [[[30.0, 60.0]]]])  # 2 x 1 x 1 x 2
    with torch.no_grad():
        out = model(image_embeddings=embeddings, input_points=points)
        # The same prompts as this library's prompt sets, one per image.
        own = model(image_embeddings=embeddings, point_coords=points[:, 0], point_labels=torch.ones(2, 1))
        assert model(image_embeddings=embeddings).pred_masks.shape == (2, 1, 3, 64, 64)  # no prompt, as transformers
    torch.testing.assert_close(out.pred_masks[:, 0], own.low_res_logits, rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="one convention"):
        model(image_embeddings=embeddings, input_points=points, boxes=torch.zeros(2, 4))
    with pytest.raises(PromptError, match="B x P x N x 2"):
        model(image_embeddings=embeddings, input_points=points[:, 0])
    with pytest.raises(InputError, match="for 2 images but 1"):
        model(image_embeddings=embeddings[:1], input_points=points)
    with pytest.raises(PromptError, match="one box per point batch"):
        model(image_embeddings=embeddings, input_points=points, input_boxes=torch.zeros(2, 2, 4))
    with pytest.raises(PromptError, match="one label per point"):
        model(image_embeddings=embeddings, input_points=points, input_labels=torch.ones(2, 1, 2))
    with pytest.raises(PromptError, match="without input_points"):
        model(image_embeddings=embeddings, input_labels=torch.ones(2, 1, 1))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"input_points": [450, 200]}, PromptError, "one entry per image"),
        ({"input_points": [[[1, 2, 3]]]}, PromptError, r"\[\[x, y\], \.\.\.\]"),
        ({"input_points": [[[1, float("nan")]]]}, PromptError, "NaN"),
        ({"input_labels": [[1]]}, PromptError, "without input_points"),
        ({"input_points": [[[1, 2]]], "input_labels": [[1, 0]]}, PromptError, "one label per point"),
        ({"input_boxes": [[1, 2, 3, 4]]}, PromptError, "nested"),
        ({"input_boxes": [[[1, 2, 3]]]}, PromptError, r"\[x0, y0, x1, y1\]"),
        ({"text": "a cat"}, InputError, "no text"),
        ({"return_tensors": "tf"}, InputError, "return_tensors"),
    ],
)
def test_processor_errors(pair: Pair, raw_image: Image.Image, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        pair.processor(raw_image, **kwargs)


def test_processor_batch_errors(pair: Pair, raw_image: Image.Image, second_image: Image.Image) -> None:
    images = [raw_image, second_image]
    with pytest.raises(PromptError, match="same number of entries"):
        pair.processor(images, input_boxes=[[[1, 2, 3, 4]], [[1, 2, 3, 4], [5, 6, 7, 8]]])
    with pytest.raises(PromptError, match="same number of point batches"):
        pair.processor(images, input_points=[[[[1, 2]]], [[[1, 2]], [[3, 4]]]])
    with pytest.raises(InputError, match="2 segmentation maps for 1 images"):
        pair.processor(raw_image, segmentation_maps=[np.zeros((4, 4), np.uint8)] * 2)
    with pytest.raises(InputError, match="needs the images"):
        pair.processor(input_points=[[[1, 2]]])
