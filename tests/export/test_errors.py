"""Bad input to the export: one line naming the problem and the fix; a failed export leaves no file behind."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from alignsam import AlignModel
from alignsam.errors import AlignSamError
from alignsam.export import PARTS, ExportError, MissingPackageError, common, parts, to_onnx
from alignsam.fast import FastPath
from alignsam.sam import SamModel, SamPredictor
from tests.sam.sam_testing import tiny_config


@pytest.fixture(scope="module")
def small_sam() -> SamModel:
    return SamModel.from_config(tiny_config()).eval()


def one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert isinstance(err.value, AlignSamError) and "\n" not in message and message
    return message


@pytest.mark.parametrize(
    ("part", "options", "expected"),
    [
        ("sam-masks", {}, "Unknown part 'sam-masks'; choose one of"),
        ("sam-encoder", {"quantize": True}, "sam-encoder takes no option quantize (an option of sam-decoder)"),
        ("sam-decoder", {"precision": "fp16"}, "sam-decoder takes no option precision"),
        ("sam-decoder", {"return_singel_mask": True}, "takes no option return_singel_mask; its options"),
        ("sam-encoder", {"precision": "bf16"}, "no bfloat16 kernels"),
        ("sam-encoder", {"precision": "int8"}, "precision must be one of ['fp32', 'fp16']"),
        ("sam-decoder", {"contract": "prompts", "return_single_mask": True}, "belong to the official contract"),
        ("sam-decoder", {"contract": "hf"}, "contract must be one of"),
        ("sam-decoder", {"quantize": "yes"}, "quantize must be true or false"),
        ("sam-decoder", {"exporter": "dynamo", "opset": 17}, "use exporter='torchscript'"),
        ("sam-decoder", {"exporter": "torchscript", "opset": 19}, "opsets up to 17"),
        ("sam-decoder", {"exporter": "onnx"}, "Unknown exporter 'onnx'"),
        ("sam-decoder", {"opset": 9}, "opset must be an integer >= 11"),
    ],
)
def test_bad_parts_and_options(part: str, options: dict, expected: str, small_sam: SamModel, tmp_path: Path) -> None:
    with pytest.raises(ExportError) as err:
        to_onnx(part, small_sam, tmp_path, **options)
    assert expected in one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_wrong_model_or_prepared_model(small_sam: SamModel, tmp_path: Path) -> None:
    with pytest.raises(ExportError) as err:
        to_onnx("align-text", small_sam, tmp_path)
    assert "align-text exports a ALIGN model (AlignModel), not a SamModel" in one_line(err)
    with pytest.raises(ExportError) as err:
        to_onnx("sam-encoder", small_sam.to(torch.bfloat16), tmp_path)
    small_sam.float()
    assert "Export a float32 model" in one_line(err)
    from alignsam.align.fast import prepare_align

    model = AlignModel.from_pretrained("demo")
    prepare_align(model, FastPath())  # fused oneDNN image tower: not traceable
    with pytest.raises(ExportError) as err:
        to_onnx("align-image", model, tmp_path)
    assert "prepared for speed" in one_line(err)


@pytest.mark.parametrize("missing", ["onnx", "onnxscript", "onnxruntime"])
def test_missing_packages(missing: str, small_sam: SamModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if it were not installed
    options = {"quantize": True} if missing == "onnxruntime" else {}
    with pytest.raises(MissingPackageError) as err:
        to_onnx("sam-decoder", small_sam, tmp_path, **options)
    message = one_line(err)
    assert missing in message and 'pip install "alignsam[onnx]"' in message
    assert not list(tmp_path.rglob("*.onnx"))
    if missing == "onnxruntime":
        with pytest.raises(MissingPackageError, match="onnxruntime backend needs onnxruntime"):
            SamPredictor(small_sam, backend="onnxruntime")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*"))


def test_a_failed_export_leaves_nothing(small_sam: SamModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exporter writes half a file and fails: the folder holds what it held before, untouched."""
    earlier = tmp_path / "sam-decoder.onnx"
    earlier.write_bytes(b"an earlier export")
    real_export = torch.onnx.export

    class HalfSaved:
        """The dynamo exporter's program, whose save() dies midway."""

        def save(self, path: Path, **kwargs: object) -> None:
            Path(path).write_bytes(b"half a model")
            raise RuntimeError("disk full\nlong traceback text")

    def half_then_fail(module: object, args: object, f: object = None, **kwargs: object) -> object:
        if f is None:
            return HalfSaved()
        Path(str(f)).write_bytes(b"half a model")  # the TorchScript exporter writes the file itself
        raise RuntimeError("disk full\nlong traceback text")

    monkeypatch.setattr(torch.onnx, "export", half_then_fail)
    for exporter in ("torchscript", "dynamo"):
        with pytest.raises(ExportError) as err:
            to_onnx("sam-decoder", small_sam, tmp_path, exporter=exporter)
        assert one_line(err) == f"The {exporter} exporter failed: disk full"
    assert earlier.read_bytes() == b"an earlier export"
    assert _leftovers(tmp_path) == ["sam-decoder.onnx"]  # no staging folder, no partial file
    monkeypatch.setattr(torch.onnx, "export", real_export)


def test_a_failure_after_the_export_leaves_nothing(
    small_sam: SamModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model is written, then quantization fails: neither the float nor a quantized file appears."""

    def fail(source: Path, target: Path) -> None:
        assert source.is_file()
        target.write_bytes(b"half")
        raise ExportError("quantization failed")

    monkeypatch.setattr(parts, "quantize_uint8", fail)
    with pytest.raises(ExportError, match="quantization failed"):
        to_onnx("sam-decoder", small_sam, tmp_path / "out" / "decoder.onnx", exporter="torchscript", quantize=True)
    assert _leftovers(tmp_path) == ["out"]


def test_the_description_keeps_other_models(small_sam: SamModel, tmp_path: Path) -> None:
    to_onnx("sam-decoder", small_sam, tmp_path / "a.onnx", exporter="torchscript")
    (tmp_path / common.DESCRIPTION_FILE).write_text("{not json")  # a damaged description is replaced
    to_onnx("sam-decoder", small_sam, tmp_path / "b.onnx", exporter="torchscript")
    to_onnx("sam-decoder", small_sam, tmp_path / "c.onnx", exporter="torchscript", return_single_mask=True)
    models = json.loads((tmp_path / common.DESCRIPTION_FILE).read_text())["models"]
    assert sorted(models) == ["b.onnx", "c.onnx"]
    assert models["c.onnx"]["options"]["return_single_mask"] is True
    assert _leftovers(tmp_path) == ["a.onnx", "alignsam_onnx.json", "b.onnx", "c.onnx"]


def test_the_command_line_lists_the_parts() -> None:
    from alignsam.cli.export import PARTS as CLI_PARTS

    assert CLI_PARTS == PARTS
