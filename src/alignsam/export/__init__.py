"""ONNX export of SAM's and ALIGN's parts, and ONNX Runtime as a backend of the tools.

    from alignsam.export import to_onnx
    to_onnx("sam-decoder", sam, "sam_decoder.onnx", return_single_mask=True)   # the official demo's contract
    to_onnx("sam-encoder", sam, "onnx/")                                        # onnx/sam-encoder.onnx
    to_onnx("align-text", "align-base", "align/")                               # plus tokenizer files

Parts, options and the exporter each uses: `alignsam.export.parts`; the runtime wrappers
(`OnnxSamDecoder`, `OnnxAlignTowers`): `alignsam.export.runtime`. Needs `pip install "alignsam[onnx]"`.
"""

from alignsam.export.common import ExportError, ExportResult, MissingPackageError
from alignsam.export.parts import PARTS, to_onnx

__all__ = ["PARTS", "ExportError", "ExportResult", "MissingPackageError", "to_onnx"]
