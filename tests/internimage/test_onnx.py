"""InternImage exports to ONNX with standard operators only (the DCNv3 core as Gather + MatMul) and
onnxruntime reproduces the PyTorch outputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.internimage.helpers import random_model, tiny_config

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def test_export_without_custom_operators(tmp_path: Path) -> None:
    model = random_model(tiny_config(post_norm=True, layer_scale=0.5), seed=1)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    path = tmp_path / "internimage.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes taken as constants
        torch.onnx.export(model, (x,), path, dynamo=False, input_names=["pixel_values"], output_names=["logits"])
    graph = onnx.load(path).graph
    domains = {node.domain for node in graph.node}
    assert domains <= {"", "ai.onnx"}, domains  # no custom (mmdeploy / TensorRT plugin) operators
    ops = {node.op_type for node in graph.node}
    assert {"Gather", "Floor", "MatMul"} <= ops and "GridSample" not in ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"pixel_values": x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(expected).max() > 1.0
    assert np.abs(logits - expected).max() < 1e-4 * np.abs(expected).max()
