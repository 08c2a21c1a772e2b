"""`alignsam export onnx`: JSON naming the files, inputs, outputs and exporter; exit codes 0, 1 and 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alignsam.cli import main
from tests.export.conftest import ort_session


def test_export_the_demo_decoder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["export", "onnx", "sam-decoder", "--sam-model", "demo", "-o", str(tmp_path), "--return-single-mask"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    model = tmp_path / "sam-decoder.onnx"
    assert out["model"] == str(model) and out["exporter"] == "dynamo" and out["opset"] == 18
    assert sorted(out["files"]) == sorted(str(tmp_path / n) for n in ("sam-decoder.onnx", "alignsam_onnx.json"))
    assert [t["name"] for t in out["outputs"]] == ["masks", "iou_predictions", "low_res_masks"]
    assert out["outputs"][0]["shape"] == [1, 1, "height", "width"] and out["options"]["return_single_mask"]
    session = ort_session(model)
    feed = {
        "image_embeddings": np.zeros((1, 128, 16, 16), np.float32),
        "point_coords": np.array([[[64, 64], [0, 0]]], np.float32),
        "point_labels": np.array([[1, -1]], np.float32),
        "mask_input": np.zeros((1, 1, 64, 64), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array([96, 128], np.float32),
    }
    assert session.run(None, feed)[0].shape == (1, 1, 96, 128)


def test_export_a_text_tower_with_the_torchscript_exporter(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "towers" / "text.onnx"
    assert main(["export", "onnx", "align-text", "--model", "demo", "-o", str(target), "--opset", "17", "-q"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert captured.err == "" and out["exporter"] == "torchscript" and out["opset"] == 17
    names = {Path(f).name for f in out["files"]}
    assert {"text.onnx", "alignsam_onnx.json", "preprocessor_config.json", "tokenizer.json"} <= names
    assert [t["name"] for t in out["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sam-encoder", "--quantize"], "sam-encoder takes no option quantize"),
        (["sam-decoder", "--precision", "fp16"], "sam-decoder takes no option precision"),
        (["sam-decoder", "--contract", "prompts", "--return-single-mask"], "belong to the official contract"),
        (["sam-decoder", "--opset", "17", "--exporter", "dynamo"], "--exporter torchscript"),
        (["align-video"], "invalid choice: 'align-video'"),
    ],
)
def test_usage_errors(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["export", "onnx", *argv, "-o", str(tmp_path)])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_missing_model_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", "onnx", "sam-encoder", "--sam-model", str(tmp_path / "nothing"), "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("alignsam export: error:") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
