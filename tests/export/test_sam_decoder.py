"""The exported SAM decoder (the official demo's contract) on ONNX Runtime against our PyTorch model.

Tolerances, against the model's own prompt encoder, decoder and `postprocess_masks`, for 1, 2, 5 and 9
points, a box, both, and with and without a mask input: the decoder's mask logits (`low_res_masks`) and IoU
predictions within 1e-4 (measured: 2.3e-5 and 8e-7 at most); the full-size `masks`, two bilinear resizes
of those logits later, within 1e-5 of the largest logit (measured: 6.1e-6; 1.2e-4 on the demo's logits of ~35). Float32
resizes differ by that much whoever computes them: torch's own float32 and float64 resizes of the same logits
differ by 3e-6 of the largest, ONNX Runtime's by as much again (sampling positions rounded another way).
The quantized decoder's masks: mean IoU >= 0.95 with the float decoder's on the demo SAM's held-out scenes
(measured: 0.995, lowest 0.929, over 54 prompts).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from alignsam.sam import SamModel, SamPredictor
from alignsam.sam.amg import calculate_stability_score
from alignsam.sam.transforms import ResizeLongestSide
from alignsam.synthetic import SceneGenerator
from tests.export.conftest import landscape, ort_session, random_embedding

ORIGINAL = (300, 451)  # (H, W): the resized image is 171 x 256 in a 256 px model, 85 x 128 in the demo's
TOLERANCE = 1e-4
RESIZED = 1e-5  # of the largest logit, for full-size masks (see the module docstring)


def close(what: str, got: np.ndarray, expected: np.ndarray) -> None:
    """`got` equals `expected` within the tolerance of output `what`."""
    bound = RESIZED * float(np.abs(expected).max()) if what == "masks" else TOLERANCE
    assert np.abs(got - expected).max() <= bound, (what, float(np.abs(got - expected).max()), bound)
    if what == "masks":  # and the masks themselves: at most one pixel in 10,000 flips at the threshold
        assert np.mean((got > 0) != (expected > 0)) <= 1e-4, what


def prompts(
    model: SamModel, num_points: int, box: bool, mask: bool, seed: int
) -> tuple[dict[str, torch.Tensor | None], dict[str, np.ndarray]]:
    """The same prompt as the model's arguments (model frame) and as the official contract's feed: the
    points, then a box's corners labelled 2 and 3, or the padding point (0, 0) labelled -1."""
    gen = torch.Generator().manual_seed(seed)
    h, w = ResizeLongestSide.get_preprocess_shape(*ORIGINAL, model.config.image_size)
    scale = torch.tensor([w, h], dtype=torch.float32)
    coords = torch.rand(1, num_points, 2, generator=gen) * scale
    labels = torch.randint(0, 2, (1, num_points), generator=gen)
    boxes = None
    if box:
        corners = torch.sort(torch.rand(2, 2, generator=gen) * scale, dim=0).values  # top-left, bottom-right
        boxes = corners.reshape(1, 4)
    low = model.config.mask_input_size
    mask_input = torch.randn(1, 1, low, low, generator=gen) * 5 if mask else None
    if box:
        assert boxes is not None
        feed_coords = torch.cat([coords, boxes.reshape(1, 2, 2)], dim=1)
        feed_labels = torch.cat([labels, torch.tensor([[2, 3]])], dim=1)
    else:
        feed_coords = torch.cat([coords, torch.zeros(1, 1, 2)], dim=1)
        feed_labels = torch.cat([labels, torch.tensor([[-1]])], dim=1)
    feed = {
        "point_coords": feed_coords.numpy().astype(np.float32),
        "point_labels": feed_labels.numpy().astype(np.float32),
        "mask_input": (mask_input if mask_input is not None else torch.zeros(1, 1, low, low)).numpy(),
        "has_mask_input": np.array([1.0 if mask else 0.0], np.float32),
        "orig_im_size": np.array(ORIGINAL, np.float32),
    }
    ours = {
        "point_coords": coords if num_points else None,
        "point_labels": labels if num_points else None,
        "boxes": boxes,
        "mask_inputs": mask_input,
    }
    return ours, feed


@torch.no_grad()
def reference(model: SamModel, embedding: torch.Tensor, **prompt: torch.Tensor | None) -> list[np.ndarray]:
    """Every mask token through the model's own prompt encoder, decoder and post-processing:
    masks `1 x 4 x H x W`, IoUs `1 x 4`, low-resolution logits `1 x 4 x L x L`."""
    sparse, dense = model.embed_prompts(prompt["point_coords"], prompt["point_labels"], prompt["boxes"],
                                        prompt["mask_inputs"])  # fmt: skip
    low, iou = model.mask_decoder.predict_masks(embedding, model.prompt_encoder.get_dense_pe(), sparse, dense)
    input_size = ResizeLongestSide.get_preprocess_shape(*ORIGINAL, model.config.image_size)
    masks = model.postprocess_masks(low, input_size, ORIGINAL)
    return [masks.numpy(), iou.numpy(), low.numpy()]


CASES = [(n, box, mask) for n in (0, 1, 2, 5, 9) for box in (False, True) for mask in (False, True) if n or box]


@pytest.mark.parametrize("name", ["tiny", "demo"])
@pytest.mark.parametrize(("num_points", "box", "mask"), CASES)
def test_official_contract_matches_pytorch(
    name: str, num_points: int, box: bool, mask: bool, sams: dict[str, SamModel], exported: Callable[..., Path]
) -> None:
    model = sams[name]
    session = ort_session(exported("sam-decoder", model))
    embedding = random_embedding(model, seed=num_points)
    ours, feed = prompts(model, num_points, box, mask, seed=10 * num_points + 2 * box + mask)
    expected = reference(model, embedding, **ours)
    got = session.run(None, {"image_embeddings": embedding.numpy(), **feed})
    assert got[0].shape == (1, 4, *ORIGINAL)
    assert expected[0].std() > 0.1 and np.ptp(expected[1]) > 1e-3  # logits that vary: the check can fail
    for what, a, b in zip(("masks", "iou_predictions", "low_res_masks"), got, expected, strict=True):
        assert a.shape == b.shape, what
        close(what, a, b)


def test_the_prompt_and_mask_inputs_change_the_masks(tiny_sam: SamModel, exported: Callable[..., Path]) -> None:
    """Guards the comparison above: each input moves the output far beyond the tolerance."""
    session = ort_session(exported("sam-decoder", tiny_sam))
    embedding = random_embedding(tiny_sam).numpy()
    _, base = prompts(tiny_sam, 2, False, True, seed=0)
    out = session.run(None, {"image_embeddings": embedding, **base})[0]
    changes = {
        "points": {**base, "point_coords": base["point_coords"] + 20},
        "labels": {**base, "point_labels": 1 - base["point_labels"].clip(0, 1)},
        "has_mask_input": {**base, "has_mask_input": np.zeros(1, np.float32)},
    }
    for what, feed in changes.items():
        moved = session.run(None, {"image_embeddings": embedding, **feed})[0]
        assert np.abs(moved - out).max() > 100 * TOLERANCE, what


def test_torchscript_exporter_matches_too(tiny_sam: SamModel, exported: Callable[..., Path]) -> None:
    """An opset below 18 goes through the TorchScript exporter; the graph computes the same."""
    path = exported("sam-decoder", tiny_sam, opset=17)
    assert onnx.load(str(path)).opset_import[0].version == 17
    session = ort_session(path)
    embedding = random_embedding(tiny_sam)
    for num_points, box, mask in [(1, False, False), (5, True, True), (9, False, True)]:
        ours, feed = prompts(tiny_sam, num_points, box, mask, seed=num_points)
        got = session.run(None, {"image_embeddings": embedding.numpy(), **feed})
        expected = reference(tiny_sam, embedding, **ours)
        for what, a, b in zip(("masks", "iou_predictions", "low_res_masks"), got, expected, strict=True):
            close(what, a, b)


@pytest.mark.parametrize(("num_points", "box"), [(1, False), (0, True), (2, False), (5, True)])
def test_single_mask_is_chosen_as_the_official_export_does(
    num_points: int, box: bool, tiny_sam: SamModel, exported: Callable[..., Path]
) -> None:
    """With two points in all (one click and its padding point, or a box's corners) the best multimask
    output by predicted IoU, with more the single-mask token 0."""
    session = ort_session(exported("sam-decoder", tiny_sam, return_single_mask=True))
    embedding = random_embedding(tiny_sam, seed=3)
    ours, feed = prompts(tiny_sam, num_points, box, False, seed=num_points + 7)
    masks, iou, low = reference(tiny_sam, embedding, **ours)
    total = feed["point_coords"].shape[1]
    best = 1 + int(iou[0, 1:].argmax()) if total <= 2 else 0
    got = session.run(None, {"image_embeddings": embedding.numpy(), **feed})
    assert [g.shape[1] for g in got] == [1, 1, 1]
    close("masks", got[0][0, 0], masks[0, best])
    close("iou_predictions", got[1][0, 0], iou[0, best])
    close("low_res_masks", got[2][0, 0], low[0, best])


def test_stability_score_and_extra_metrics(tiny_sam: SamModel, exported: Callable[..., Path]) -> None:
    session = ort_session(exported("sam-decoder", tiny_sam, use_stability_score=True, return_extra_metrics=True))
    names = [o.name for o in session.get_outputs()]
    assert names == ["masks", "iou_predictions", "stability_scores", "areas", "low_res_masks"]
    embedding = random_embedding(tiny_sam)
    _, feed = prompts(tiny_sam, 2, False, False, seed=1)
    masks, scores, stability, areas, low = session.run(None, {"image_embeddings": embedding.numpy(), **feed})
    expected_scores = calculate_stability_score(torch.from_numpy(low), 0.0, 1.0).numpy()
    assert np.allclose(scores, expected_scores, atol=1e-6)
    assert np.allclose(stability, calculate_stability_score(torch.from_numpy(masks), 0.0, 1.0).numpy(), atol=1e-6)
    assert areas.dtype == np.int64 and np.array_equal(areas, (masks > 0).sum((-1, -2)))
    assert 0 < areas.min() < masks[0, 0].size  # masks that are neither empty nor full


def test_gelu_approximate(tiny_sam: SamModel, exported: Callable[..., Path]) -> None:
    """tanh GELU: no Erf in the graph, outputs close to (and not equal to) the exact GELU's; the caller's
    model keeps its exact GELU."""
    exact, approximate = exported("sam-decoder", tiny_sam), exported("sam-decoder", tiny_sam, gelu_approximate=True)
    ops = {path: {node.op_type for node in onnx.load(str(path)).graph.node} for path in (exact, approximate)}
    assert "Erf" in ops[exact] and "Erf" not in ops[approximate]
    assert all(m.approximate == "none" for m in tiny_sam.modules() if isinstance(m, torch.nn.GELU))
    embedding = random_embedding(tiny_sam).numpy()
    _, feed = prompts(tiny_sam, 2, True, True, seed=5)
    a = ort_session(exact).run(None, {"image_embeddings": embedding, **feed})[0]
    b = ort_session(approximate).run(None, {"image_embeddings": embedding, **feed})[0]
    assert 1e-6 < np.abs(a - b).max() < 0.05 * np.abs(a).max()


# ---------------------------------------------------------------------------------------------------------
# The official demo's way of feeding the decoder, against SamPredictor.predict.


def _demo_feed(
    predictor: SamPredictor, image: np.ndarray, points: np.ndarray, labels: np.ndarray, box: np.ndarray | None = None,
    mask_input: np.ndarray | None = None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """What the official notebook (`onnx_model_example.ipynb`) and web demo pass, built the same way:
    original-image coordinates, plus the box corners (labels 2, 3) or the padding point (0, 0) with label
    -1, through `transform.apply_coords`; a zero mask and `has_mask_input` 0 without a previous mask."""
    if box is not None:
        coords = np.concatenate([points, box.reshape(2, 2)])[None, :, :]
        all_labels = np.concatenate([labels, np.array([2, 3])])[None, :].astype(np.float32)
    else:
        coords = np.concatenate([points, np.array([[0.0, 0.0]])])[None, :, :]
        all_labels = np.concatenate([labels, np.array([-1])])[None, :].astype(np.float32)
    low = predictor.model.config.mask_input_size
    return {
        "image_embeddings": predictor.get_image_embedding().numpy(),
        "point_coords": predictor.transform.apply_coords(coords, image.shape[:2]).astype(np.float32),
        "point_labels": all_labels,
        "mask_input": np.zeros((1, 1, low, low), np.float32) if mask_input is None else mask_input[None],
        "has_mask_input": np.array([0.0 if mask_input is None else 1.0], np.float32),
        "orig_im_size": np.array(image.shape[:2], np.float32),
    }


def test_fed_as_the_official_demo_feeds_it(
    demo_sam: SamModel, held_out: SceneGenerator, exported: Callable[..., Path]
) -> None:
    session = ort_session(exported("sam-decoder", demo_sam, return_single_mask=True))
    scene = held_out[0]
    image = landscape(scene.image)  # 135 x 180: coordinates scale by 128 / 180 to the model's frame
    predictor = SamPredictor(demo_sam)
    predictor.set_image(image)
    obj = scene.objects[-1]
    x0, y0, x1, y1 = obj.bbox
    sx, sy = image.shape[1] / scene.image.shape[1], image.shape[0] / scene.image.shape[0]
    point = np.array([[(x0 + x1) / 2 * sx, (y0 + y1) / 2 * sy]])
    label = np.array([1])

    # one click: the best of the three multimask outputs
    masks, scores, low = session.run(None, _demo_feed(predictor, image, point, label))
    expected = predictor.predict(point_coords=point, point_labels=label, return_logits=True)
    best = int(expected.iou_predictions.argmax())
    assert masks.shape == (1, 1, *image.shape[:2])
    close("masks", masks[0, 0], expected.masks[best])
    close("iou_predictions", scores[0, 0], expected.iou_predictions[best])
    close("low_res_masks", low[0, 0], expected.low_res_logits[best])
    assert (masks[0, 0] > 0).any() and not (masks[0, 0] > 0).all()

    # a click, a box and the previous mask: the single-mask output
    box = np.array([x0 * sx, y0 * sy, x1 * sx, y1 * sy])
    feed = _demo_feed(predictor, image, point, label, box=box, mask_input=low[0])
    masks2, scores2, _ = session.run(None, feed)
    expected2 = predictor.predict(
        point_coords=point, point_labels=label, box=box, mask_input=low[0], multimask_output=False, return_logits=True
    )
    close("masks", masks2[0, 0], expected2.masks[0])
    close("iou_predictions", scores2[0, 0], expected2.iou_predictions[0])
    assert np.abs(masks2 - masks).max() > 100 * TOLERANCE  # the second round is a different prompt


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def test_quantized_decoder_keeps_the_masks(
    demo_sam: SamModel, held_out: SceneGenerator, exported: Callable[..., Path]
) -> None:
    """Dynamic uint8 weights: masks IoU >= 0.95 with the float decoder's on held-out scenes (mean over one
    click and one box per object), and the float decoder's masks do find the objects."""
    plain = exported("sam-decoder", demo_sam, return_single_mask=True)
    quantized = exported("sam-decoder", demo_sam, return_single_mask=True, quantize=True)
    ops = {node.op_type for node in onnx.load(str(quantized)).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear"}, ops
    assert quantized.stat().st_size < 0.5 * plain.stat().st_size
    float_session, quantized_session = ort_session(plain), ort_session(quantized)
    predictor = SamPredictor(demo_sam)
    agreement, found = [], []
    for index in range(12):
        scene = held_out[index]
        predictor.set_image(scene.image)
        for obj, truth in zip(scene.objects, scene.masks, strict=True):
            x0, y0, x1, y1 = obj.bbox
            ys, xs = np.nonzero(truth)
            centre = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
            for feed in (
                _demo_feed(predictor, scene.image, np.array([[xs[centre], ys[centre]]]), np.array([1])),
                _demo_feed(predictor, scene.image, np.zeros((0, 2)), np.zeros(0), box=np.array([x0, y0, x1, y1])),
            ):
                a = float_session.run(None, feed)[0][0, 0] > 0
                b = quantized_session.run(None, feed)[0][0, 0] > 0
                agreement.append(_iou(a, b))
                found.append(_iou(a, truth))
    assert len(agreement) > 40
    assert np.mean(found) > 0.6, np.mean(found)  # real masks of the objects, not empty ones agreeing
    assert np.mean(agreement) >= 0.95, (np.mean(agreement), min(agreement))


def test_description_file_names_the_contract(demo_sam: SamModel, exported: Callable[..., Path]) -> None:
    import json

    path = exported("sam-decoder", demo_sam)
    entry: dict[str, Any] = json.loads((path.parent / "alignsam_onnx.json").read_text())["models"][path.name]
    assert entry["exporter"] == "dynamo" and entry["opset"] == 18
    assert [t["name"] for t in entry["inputs"]] == [
        "image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size",
    ]  # fmt: skip
    assert entry["inputs"][0]["shape"] == [1, 128, 16, 16] and entry["inputs"][3]["shape"] == [1, 1, 64, 64]
    assert entry["preprocessing"]["image_size"] == 128
    session = ort_session(path)
    assert [i.name for i in session.get_inputs()] == [t["name"] for t in entry["inputs"]]
    assert [o.name for o in session.get_outputs()] == [t["name"] for t in entry["outputs"]]
