"""The exported SAM image encoder on ONNX Runtime against our PyTorch model.

Tolerance: embeddings within 1e-4 (measured: 5e-6 on the tiny encoder's embeddings of size ~4.7, 1.4e-6 on
the demo's), for resized 0..255 pixels normalised and padded in the graph (landscape, portrait, batch of
two) and for `SamModel.preprocess`'s output. fp16: float16 weights and arithmetic, float32 in and out,
within 1e-2 of the largest embedding value (measured 1.5e-3).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from alignsam.sam import SamModel, SamPredictor
from alignsam.synthetic import SceneGenerator
from tests.export.conftest import landscape, ort_session

TOLERANCE = 1e-4


@torch.no_grad()
def reference(model: SamModel, pixels: torch.Tensor) -> np.ndarray:
    return model.image_encoder(model.preprocess(pixels)).numpy()


@pytest.mark.parametrize("shape", [(1, 3, 192, 256), (1, 3, 256, 100), (2, 3, 256, 256)])
def test_encoder_with_preprocessing_matches_pytorch(
    shape: tuple[int, ...], tiny_sam: SamModel, exported: Callable[..., Path]
) -> None:
    session = ort_session(exported("sam-encoder", tiny_sam))
    assert [i.name for i in session.get_inputs()] == ["image"]
    pixels = torch.rand(*shape, generator=torch.Generator().manual_seed(shape[-1])) * 255
    (got,) = session.run(None, {"image": pixels.numpy()})
    expected = reference(tiny_sam, pixels)
    assert got.shape == expected.shape == (shape[0], 64, 16, 16)
    assert expected.std() > 0.1
    assert np.abs(got - expected).max() <= TOLERANCE, float(np.abs(got - expected).max())
    if shape[0] == 2:  # the two images of a batch get their own embeddings
        assert np.abs(got[0] - got[1]).max() > 0.1


def test_encoder_without_preprocessing(tiny_sam: SamModel, exported: Callable[..., Path]) -> None:
    session = ort_session(exported("sam-encoder", tiny_sam, preprocess=False))
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("pixel_values", ["batch", 3, 256, 256])]
    pixels = tiny_sam.preprocess(torch.rand(1, 3, 200, 256, generator=torch.Generator().manual_seed(1)) * 255)
    (got,) = session.run(None, {"pixel_values": pixels.numpy()})
    with torch.no_grad():
        expected = tiny_sam.image_encoder(pixels).numpy()
    assert np.abs(got - expected).max() <= TOLERANCE


def test_demo_encoder_gives_the_predictors_embedding(
    demo_sam: SamModel, held_out: SceneGenerator, exported: Callable[..., Path]
) -> None:
    """A caller resizes with the predictor's transform (longest side 128) and passes 0..255 pixels."""
    session = ort_session(exported("sam-encoder", demo_sam))
    predictor = SamPredictor(demo_sam)
    for image in (held_out[1].image, landscape(held_out[2].image)):
        predictor.set_image(image)
        resized = predictor.transform.apply_image(image)
        pixels = resized.transpose(2, 0, 1)[None].astype(np.float32)
        (got,) = session.run(None, {"image": pixels})
        expected = predictor.get_image_embedding().numpy()
        assert np.abs(got - expected).max() <= TOLERANCE, float(np.abs(got - expected).max())


def test_fp16_encoder(tiny_sam: SamModel, exported: Callable[..., Path]) -> None:
    path = exported("sam-encoder", tiny_sam, precision="fp16")
    model = onnx.load(str(path))
    kinds = {init.data_type for init in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in kinds
    session = ort_session(path)
    assert session.get_inputs()[0].type == "tensor(float)" and session.get_outputs()[0].type == "tensor(float)"
    pixels = torch.rand(1, 3, 256, 192, generator=torch.Generator().manual_seed(2)) * 255
    (got,) = session.run(None, {"image": pixels.numpy()})
    expected = reference(tiny_sam, pixels)
    error = np.abs(got - expected).max() / np.abs(expected).max()
    assert 1e-6 < error < 1e-2, error  # float16 rounding: present, and small


@pytest.mark.slow  # two more exports; the path only SAM vit_h takes
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_large_models_keep_their_weights_beside_them(
    precision: str, tiny_sam: SamModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above `EXTERNAL_DATA_BYTES` (SAM vit_h: 2.5 GB, beyond protobuf's 2 GB) the weights go to a
    `.onnx.data` file next to the model; the pair loads and computes the same."""
    from alignsam.export import common, to_onnx

    monkeypatch.setattr(common, "EXTERNAL_DATA_BYTES", 0)
    result = to_onnx("sam-encoder", tiny_sam, tmp_path, precision=precision)
    names = sorted(f.name for f in result.files)
    assert names == ["alignsam_onnx.json", "sam-encoder.onnx", "sam-encoder.onnx.data"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    assert (tmp_path / "sam-encoder.onnx").stat().st_size < (tmp_path / "sam-encoder.onnx.data").stat().st_size
    pixels = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(3)) * 255
    (got,) = ort_session(result.model).run(None, {"image": pixels.numpy()})
    expected = reference(tiny_sam, pixels)
    bound = TOLERANCE if precision == "fp32" else 1e-2 * np.abs(expected).max()
    assert np.abs(got - expected).max() <= bound
