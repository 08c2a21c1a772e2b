"""What every export shares: the packages it needs, the exporter call, all-or-nothing file writes, the
description written beside the models, and the float16 and uint8 conversions.

Exporters (torch 2.13):

- `dynamo` (`torch.onnx.export(..., dynamo=True)`, torch's default since 2.9) traces with `torch.export`
  and writes opset 18 or later. It needs `onnx` and `onnxscript`. It is used wherever it can express the
  model: every part here, including SAM's decoder with the official post-processing, because our crop to
  the resized image's size slices by tensor values (which become unbacked sizes in the graph) where the
  official `SamOnnxModel` calls `int()` on them (a `GuardOnDataDependentSymNode` under `torch.export`).
- `torchscript` (`dynamo=False`, the exporter the official script was written for) writes opsets 7-17
  as well, so it is what an explicit opset below 18 selects (the official script's default is 17; some
  older runtimes and onnxruntime-web builds read nothing newer). It needs `onnx` only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from alignsam.errors import AlignSamError, OutputError
from alignsam.io.files import disk_full, ensure_output_folder, read_json_object, write_failure, write_text_atomic

Exporter = Literal["dynamo", "torchscript"]
EXPORTERS: tuple[Exporter, ...] = ("dynamo", "torchscript")
Precision = Literal["fp32", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16")

DEFAULT_OPSET = 18
"""The lowest opset the dynamo exporter writes: the widest runtime support it can give."""
DYNAMO_MIN_OPSET = 18
MIN_OPSET = 11  # the official script's floor (bilinear Resize with dynamic sizes)

INSTALL = 'pip install "alignsam[onnx]"'
DESCRIPTION_FILE = "alignsam_onnx.json"
DESCRIPTION_FORMAT = 1
EXTERNAL_DATA_BYTES = 1536 << 20
"""Weights above this go to a `.onnx.data` file beside the model (protobuf files stop at 2 GB: SAM vit_h)."""


class ExportError(AlignSamError, ValueError):
    """An export that cannot be made as asked: an unknown part, options that do not go together, a model
    the exporter cannot trace."""


class MissingPackageError(AlignSamError, ImportError):
    """A package the export or the ONNX Runtime backend needs is not installed."""


def require(*modules: str, purpose: str) -> None:
    """Import `modules`, or a `MissingPackageError` naming the missing ones and the extra to install."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingPackageError(f"{purpose} needs {', '.join(missing)}, not installed here: {INSTALL}")


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One input or output of an exported model: `shape` with names for the dynamic axes."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    meaning: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "meaning": self.meaning}

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}


@dataclasses.dataclass
class ExportResult:
    """What `to_onnx` wrote: the model, the files beside it, its inputs and outputs, and how it was made."""

    part: str
    model: Path
    files: list[Path]
    inputs: list[Tensor]
    outputs: list[Tensor]
    exporter: Exporter
    opset: int
    options: dict[str, Any]
    description: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form the command line prints."""
        return {
            "part": self.part,
            "model": str(self.model),
            "files": [str(f) for f in self.files],
            "exporter": self.exporter,
            "opset": self.opset,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "options": self.options,
        }


def resolve_exporter(exporter: str | None, opset: int | None) -> tuple[Exporter, int]:
    """The exporter and opset to use: dynamo at opset 18 unless told otherwise; an opset below 18 selects
    the TorchScript exporter."""
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET):
        raise ExportError(f"opset must be an integer >= {MIN_OPSET}, got {opset!r}.")
    if exporter is None:
        exporter = "torchscript" if opset is not None and opset < DYNAMO_MIN_OPSET else "dynamo"
    if exporter not in EXPORTERS:
        raise ExportError(f"Unknown exporter {exporter!r}; choose one of {list(EXPORTERS)}.")
    if exporter == "dynamo" and opset is not None and opset < DYNAMO_MIN_OPSET:
        raise ExportError(
            f"The dynamo exporter writes opset {DYNAMO_MIN_OPSET} or later, not {opset}; "
            "use exporter='torchscript' (--exporter torchscript) for older opsets."
        )
    if exporter == "torchscript" and opset is not None and opset > 17:
        raise ExportError(f"The TorchScript exporter writes opsets up to 17, not {opset}; use the dynamo exporter.")
    chosen: Exporter = exporter
    return chosen, opset if opset is not None else (DEFAULT_OPSET if chosen == "dynamo" else 17)


def check_float32(model: nn.Module) -> None:
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes - {torch.float32}:
        raise ExportError(
            f"Export a float32 model (this one holds {sorted(str(d) for d in dtypes)}); "
            "fp16 is an export option (precision='fp16', --precision fp16)."
        )


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Silence the exporters' warnings and notes (tracer warnings, the torchvision operators torch looks
    for): the command line's stdout carries JSON, and the notes say nothing about the model."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """`module` in eval mode while exporting; each submodule's training flag is restored afterwards."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in flags:
            m.training = training


@contextlib.contextmanager
def attention_impl(module: nn.Module, impl: str | None) -> Iterator[None]:
    """Every attention of `module` on `impl` ("reference": the plain `softmax(q k^T + bias) v`) while
    exporting, restored afterwards; None leaves them as they are."""
    owners = [m for m in module.modules() if hasattr(m, "attn_impl")] if impl else []
    before = [m.attn_impl for m in owners]
    try:
        for m in owners:
            setattr(m, "attn_impl", impl)  # noqa: B010 (modules declare the attribute themselves)
        yield
    finally:
        for m, old in zip(owners, before, strict=True):
            setattr(m, "attn_impl", old)  # noqa: B010


def export_graph(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    *,
    inputs: Sequence[Tensor],
    outputs: Sequence[Tensor],
    exporter: Exporter,
    opset: int,
) -> None:
    """Export `module(*args)` to `path` with named inputs and outputs and their dynamic axes."""
    require("onnx", *(["onnxscript"] if exporter == "dynamo" else []), purpose=f"ONNX export ({exporter} exporter)")
    input_names = [t.name for t in inputs]
    output_names = [t.name for t in outputs]
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    external = weight_bytes > EXTERNAL_DATA_BYTES
    with quiet_export(), eval_mode(module), torch.no_grad():
        try:
            if exporter == "dynamo":
                dims: dict[str, torch.export.Dim] = {}
                shapes = tuple(
                    {axis: dims.setdefault(name, torch.export.Dim(name)) for axis, name in t.dynamic_axes.items()}
                    or None
                    for t in inputs
                )
                program = torch.onnx.export(
                    module, args, dynamo=True, verbose=False, opset_version=opset, input_names=input_names,
                    output_names=output_names, dynamic_shapes=shapes, optimize=True,
                )  # fmt: skip
                assert program is not None
                program.save(path, external_data=external)
            else:
                dynamic = {t.name: t.dynamic_axes for t in (*inputs, *outputs) if t.dynamic_axes}
                torch.onnx.export(
                    module, args, str(path), dynamo=False, verbose=False, opset_version=opset,
                    input_names=input_names, output_names=output_names, dynamic_axes=dynamic,
                    do_constant_folding=True,
                )  # fmt: skip
        except AlignSamError:
            raise
        except Exception as err:  # the exporters' own errors are long and many-typed; keep their first line
            if disk_full(path, err):
                raise OutputError(write_failure(path, err)) from err
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ExportError(f"The {exporter} exporter failed: {first}") from err
    import onnx

    onnx.checker.check_model(str(path))


def to_float16(path: Path) -> None:
    """Rewrite the model at `path` with float16 weights and arithmetic, float32 inputs and outputs
    (ONNX Runtime's converter; operators it knows to need float32 stay float32). The float32 weights' data
    file, if the export wrote one, is replaced."""
    require("onnx", "onnxruntime", purpose="precision fp16")
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(path))  # with its external data, if any
    converted = convert_float_to_float16(model, keep_io_types=True)
    data = path.with_name(f"{path.name}.data")
    data.unlink(missing_ok=True)
    external = sum(len(t.raw_data) for t in converted.graph.initializer) > EXTERNAL_DATA_BYTES
    onnx.save(converted, str(path), save_as_external_data=external, location=data.name)


def quantize_uint8(source: Path, target: Path) -> None:
    """Dynamic uint8 quantization, the official script's `quantize_dynamic(per_channel=False,
    reduce_range=False, weight_type=QUInt8)`. Its `optimize_model=True` is gone from onnxruntime (1.17 and
    later accept no such argument), so ONNX Runtime's pre-processing (shape inference and graph
    optimisation, `quant_pre_process`) runs first, which is what that flag did."""
    require("onnx", "onnxruntime", purpose="quantize")
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_name(f"prepared-{target.name}")
    with quiet_export():
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(prepared, target, per_channel=False, reduce_range=False, weight_type=QuantType.QUInt8)
    prepared.unlink()


# ---------------------------------------------------------------------------------------------------------
# All-or-nothing writes.


def resolve_target(path: str | os.PathLike[str], part: str) -> Path:
    """`path` if it names a `.onnx` file, else `path/<part>.onnx` (a folder, created when needed)."""
    target = Path(path)
    if target.suffix.lower() == ".onnx":
        if target.is_dir():
            raise OutputError(f"The output '{target}' is a folder; name a .onnx file or a folder without the suffix.")
        ensure_output_folder(target.parent)
        return target
    return ensure_output_folder(target) / f"{part}.onnx"


class Staging:
    """The files of one export, written under their final names in a hidden folder beside the target and
    moved into place only when all are complete (`commit`), ONNX models last; the folder is removed
    whatever happens. A failed or interrupted export leaves no `.onnx` file, whole or half-written, and an
    earlier export at the same place stays as it was."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.root: Path | None = None
        self.names: list[str] = []

    def __enter__(self) -> Staging:
        try:
            self.root = Path(tempfile.mkdtemp(dir=self.folder, prefix=".alignsam-export-"))
        except OSError as err:
            raise OutputError(write_failure(self.folder, err)) from err
        return self

    def __exit__(self, *exc: object) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def path(self, name: str) -> Path:
        """Where to write the file that will be `folder/name`."""
        assert self.root is not None
        return self.root / name

    def commit(self) -> list[Path]:
        """Move every staged file into the folder (models last); returns their final paths."""
        assert self.root is not None
        staged = sorted(p.name for p in self.root.iterdir() if p.is_file())
        staged.sort(key=lambda name: name.endswith(".onnx"))
        try:
            for name in staged:
                os.replace(self.root / name, self.folder / name)
        except OSError as err:
            raise OutputError(f"Cannot write into '{self.folder}': {err}") from err
        return [self.folder / name for name in staged]


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def merged_description(folder: Path, model_name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """`alignsam_onnx.json` of `folder` with `entry` for `model_name` (other models' entries kept)."""
    existing = folder / DESCRIPTION_FILE
    models: dict[str, Any] = {}
    if existing.is_file():
        with contextlib.suppress(AlignSamError):  # unreadable: replaced by a fresh one
            old = read_json_object(existing)
            if isinstance(old.get("models"), dict):
                models = dict(old["models"])
    models[model_name] = entry
    return {"format_version": DESCRIPTION_FORMAT, "models": dict(sorted(models.items()))}
