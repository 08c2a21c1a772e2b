"""`to_onnx(part, model, path, **options)`: one exported part, its description and settings beside it.

| part | model | options besides `opset`, `exporter`, `gelu_approximate` |
| --- | --- | --- |
| sam-decoder | SamModel | `return_single_mask`, `use_stability_score`, `return_extra_metrics`, `quantize`, `contract` |
| sam-encoder | SamModel | `preprocess`, `precision` |
| align-image | AlignModel | `precision`, `processor` |
| align-text | AlignModel | `precision`, `processor` |

Every part also takes `opset` (default 18) and `exporter` (`"dynamo"` or `"torchscript"`). Every part exports
with torch's default dynamo exporter, SAM's decoder included: its crop to the resized image slices by tensor
values, which the dynamo exporter turns into run-time sizes (the official `SamOnnxModel`'s `int()` there is
what makes the official script fail on torch 2.9+). An opset below 18, which the dynamo exporter cannot
write, selects the TorchScript exporter (`dynamo=False`). More in `alignsam.export.common`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from alignsam import __version__
from alignsam.export import align as align_graphs
from alignsam.export import sam as sam_graphs
from alignsam.export.common import (
    DESCRIPTION_FILE,
    PRECISIONS,
    ExportError,
    ExportResult,
    Staging,
    Tensor,
    attention_impl,
    check_float32,
    export_graph,
    merged_description,
    quantize_uint8,
    require,
    resolve_exporter,
    resolve_target,
    to_float16,
    write_json,
)

PARTS: tuple[str, ...] = ("sam-decoder", "sam-encoder", "align-image", "align-text")
CONTRACTS = ("official", "prompts")

_COMMON = {"opset": None, "exporter": None, "gelu_approximate": False}
_OPTIONS: dict[str, dict[str, Any]] = {
    "sam-decoder": {
        **_COMMON,
        "return_single_mask": False,
        "use_stability_score": False,
        "return_extra_metrics": False,
        "quantize": False,
        "contract": "official",
    },
    "sam-encoder": {**_COMMON, "preprocess": True, "precision": "fp32"},
    "align-image": {**_COMMON, "precision": "fp32", "processor": None},
    "align-text": {**_COMMON, "precision": "fp32", "processor": None},
}


@dataclasses.dataclass
class _Graph:
    """A module ready to trace, its example inputs, its contract and what the description adds."""

    module: nn.Module
    args: tuple[torch.Tensor, ...]
    inputs: list[Tensor]
    outputs: list[Tensor]
    preprocessing: dict[str, Any]
    processor: Any = None
    attention: str | None = None  # the attention implementation to trace (None: the model's own)


def to_onnx(part: str, model: Any, path: str | os.PathLike[str], **options: Any) -> ExportResult:
    """Export `part` of `model` to ONNX at `path` (a `.onnx` file, or a folder: `folder/<part>.onnx`).

    Args:
        part: one of `PARTS` (see the module docstring for the table of parts and options).
        model: a `SamModel` for the SAM parts, an `AlignModel` for the ALIGN parts (float32; not prepared
            with a `FastPath`), or a model reference (hub id, folder, `demo`) to load.
        path: where to write. `alignsam_onnx.json` (the inputs, outputs, pre-processing and options of each
            model in the folder) is written beside it; for the ALIGN parts also the processor's
            `preprocessor_config.json` and tokenizer files.
        options:
            opset: ONNX opset (default 18); below 18 selects the TorchScript exporter.
            exporter: "dynamo" or "torchscript".
            gelu_approximate: tanh GELU instead of erf (for runtimes with a slow or missing Erf).
            return_single_mask (sam-decoder): one mask, chosen as the official export does.
            use_stability_score (sam-decoder): the stability score instead of the predicted IoU.
            return_extra_metrics (sam-decoder): also `stability_scores` and `areas` at the original size.
            quantize (sam-decoder): dynamic uint8 weights (the official `--quantize-out`).
            contract (sam-decoder): "official" (the demo's inputs and outputs) or "prompts" (B prompt sets,
                low-resolution logits of all mask tokens, no post-processing: the ONNX Runtime backend's).
            preprocess (sam-encoder): take resized 0..255 pixels and normalise and pad in the graph (default)
                rather than `SamModel.preprocess`'s output.
            precision (encoders, towers): "fp32" or "fp16" (float16 weights and arithmetic, float32 inputs and
                outputs).
            processor (align parts): the `AlignProcessor` whose settings go beside the model.
    Returns:
        An `ExportResult`: the files written, the inputs and outputs, the exporter and opset used.
    Raises:
        ExportError: an unknown part or option, options that do not go together, a model that cannot be
            exported. MissingPackageError: onnx / onnxscript / onnxruntime missing (`pip install
            "alignsam[onnx]"`). OutputError: `path` cannot be written. No `.onnx` file is left behind by a
            failed export.
    """
    settings = check_options(part, options)
    exporter, opset = resolve_exporter(settings["exporter"], settings["opset"])
    converts = settings.get("quantize") or settings.get("precision") == "fp16"
    needed = ["onnx", *(["onnxscript"] if exporter == "dynamo" else []), *(["onnxruntime"] if converts else [])]
    require(*needed, purpose=f"Exporting {part}")  # before the model loads and the export runs
    model, settings["processor"] = _load(part, model, settings.get("processor"))
    check_float32(model)
    graph = _GRAPHS[part](model, settings)
    module = graph.module
    if settings["gelu_approximate"]:
        module = copy.deepcopy(module)  # the caller's model keeps its exact GELU
        for m in module.modules():
            if isinstance(m, nn.GELU):
                m.approximate = "tanh"
    target = resolve_target(path, part)
    public = {k: v for k, v in settings.items() if k != "processor"}
    public.update(exporter=exporter, opset=opset)
    entry = {
        "part": part,
        "exporter": exporter,
        "opset": opset,
        "inputs": [t.to_dict() for t in graph.inputs],
        "outputs": [t.to_dict() for t in graph.outputs],
        "options": public,
        "preprocessing": graph.preprocessing,
        "alignsam_version": __version__,
        "torch_version": torch.__version__,
    }
    with Staging(target.parent) as staging, attention_impl(module, graph.attention):
        staged = staging.path(target.name)
        if settings.get("quantize"):
            plain = staging.path(f"float-{target.name}")
            export_graph(module, graph.args, plain, inputs=graph.inputs, outputs=graph.outputs,
                         exporter=exporter, opset=opset)  # fmt: skip
            quantize_uint8(plain, staged)
            plain.unlink()
        else:
            export_graph(module, graph.args, staged, inputs=graph.inputs, outputs=graph.outputs,
                         exporter=exporter, opset=opset)  # fmt: skip
        if settings.get("precision") == "fp16":
            to_float16(staged)
        if graph.processor is not None:
            graph.processor.save_pretrained(staging.path("."))
        description = merged_description(target.parent, target.name, entry)
        write_json(staging.path(DESCRIPTION_FILE), description)
        files = staging.commit()
    return ExportResult(
        part=part,
        model=target,
        files=files,
        inputs=graph.inputs,
        outputs=graph.outputs,
        exporter=exporter,
        opset=opset,
        options=public,
        description=entry,
    )


def check_options(part: str, options: dict[str, Any]) -> dict[str, Any]:
    """The part's defaults updated with `options`; an `ExportError` for an unknown part, an unknown or
    misplaced option, or options that do not go together."""
    if part not in _OPTIONS:
        raise ExportError(f"Unknown part {part!r}; choose one of {list(PARTS)}.")
    allowed = _OPTIONS[part]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        owners = sorted({p for name in unknown for p, opts in _OPTIONS.items() if name in opts})
        where = f" (an option of {', '.join(owners)})" if owners else ""
        raise ExportError(f"{part} takes no option {', '.join(unknown)}{where}; its options: {sorted(allowed)}.")
    settings = {**allowed, **options}
    for flag in ("gelu_approximate", "return_single_mask", "use_stability_score", "return_extra_metrics",
                 "quantize", "preprocess"):  # fmt: skip
        if flag in settings and not isinstance(settings[flag], bool):
            raise ExportError(f"{flag} must be true or false, got {settings[flag]!r}.")
    precision = settings.get("precision", "fp32")
    if precision == "bf16":
        raise ExportError(
            "precision bf16 is not offered: ONNX Runtime's CPU provider has no bfloat16 kernels for these "
            "operators; choose fp32 or fp16."
        )
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}.")
    resolve_exporter(settings["exporter"], settings["opset"])  # the exporter and opset go together
    if settings.get("contract", "official") not in CONTRACTS:
        raise ExportError(f"contract must be one of {list(CONTRACTS)}, got {settings['contract']!r}.")
    if settings.get("contract") == "prompts":
        clash = [k for k in ("return_single_mask", "use_stability_score", "return_extra_metrics") if settings[k]]
        if clash:
            raise ExportError(
                f"{', '.join(clash)} belong to the official contract; the 'prompts' contract returns every "
                "mask token's low-resolution logits and IoU."
            )
    return settings


def _load(part: str, model: Any, processor: Any) -> tuple[Any, Any]:
    """The model (loaded when given as a reference) and, for ALIGN, its processor."""
    from alignsam.align.modeling.align import AlignModel
    from alignsam.sam.modeling.sam import SamModel

    wants, kind = (SamModel, "SAM") if part.startswith("sam-") else (AlignModel, "ALIGN")
    if isinstance(model, str | os.PathLike):
        if wants is SamModel:
            return SamModel.from_pretrained(model), None
        from alignsam.align.processing import AlignProcessor

        loaded = AlignModel.from_pretrained(model)
        return loaded, processor if processor is not None else AlignProcessor.from_pretrained(model)
    if not isinstance(model, wants):
        raise ExportError(f"{part} exports a {kind} model ({wants.__name__}), not a {type(model).__name__}.")
    return model, processor


def _sam_decoder(model: Any, settings: dict[str, Any]) -> _Graph:
    if settings["contract"] == "prompts":
        inputs, outputs = sam_graphs.prompt_decoder_contract(model)
        return _Graph(
            sam_graphs.SamPromptDecoderGraph(model),
            sam_graphs.example_prompt_decoder_inputs(model),
            inputs,
            outputs,
            _sam_preprocessing(model),
        )
    single, extra = settings["return_single_mask"], settings["return_extra_metrics"]
    module = sam_graphs.SamDecoderGraph(
        model,
        return_single_mask=single,
        use_stability_score=settings["use_stability_score"],
        return_extra_metrics=extra,
    )
    inputs, outputs = sam_graphs.decoder_contract(model, return_single_mask=single, return_extra_metrics=extra)
    return _Graph(module, sam_graphs.example_decoder_inputs(model), inputs, outputs, _sam_preprocessing(model))


def _sam_encoder(model: Any, settings: dict[str, Any]) -> _Graph:
    preprocess = settings["preprocess"]
    inputs, outputs = sam_graphs.encoder_contract(model, preprocess=preprocess)
    # The plain attention: inference picks the fused kernel and builds the relative-position bias a few rows
    # at a time (`rel_pos_attention`), a Python loop of in-place writes that the trace would unroll into
    # copies, and whose fused kernel's output layout the exporter's decomposition does not reproduce.
    return _Graph(
        sam_graphs.SamEncoderGraph(model, preprocess=preprocess),
        sam_graphs.example_encoder_inputs(model, preprocess=preprocess),
        inputs,
        outputs,
        _sam_preprocessing(model),
        attention="reference",
    )


def _sam_preprocessing(model: Any) -> dict[str, Any]:
    cfg = model.config
    return {
        "image_size": cfg.image_size,
        "embedding_shape": [cfg.prompt_encoder.embed_dim, cfg.embedding_size, cfg.embedding_size],
        "mask_input_size": cfg.mask_input_size,
        "resize": f"longest side to {cfg.image_size} (PIL bilinear, rounded half up); point and box "
        "coordinates scaled by the same factors",
        "pixel_mean": list(cfg.pixel_mean),
        "pixel_std": list(cfg.pixel_std),
        "padding": "bottom and right with zeros after normalisation",
        "image_format": cfg.image_format,
        "mask_threshold": cfg.mask_threshold,
    }


def _align_image(model: Any, settings: dict[str, Any]) -> _Graph:
    align_graphs.check_plain(model)
    processor = settings["processor"]
    size = align_graphs.image_size(model, processor)
    inputs, outputs = align_graphs.image_contract(model, size)
    return _Graph(
        align_graphs.AlignImageGraph(model),
        align_graphs.example_image_inputs(size, next(model.parameters()).device),
        inputs,
        outputs,
        align_graphs.processor_description(processor, "align-image"),
        processor,
    )


def _align_text(model: Any, settings: dict[str, Any]) -> _Graph:
    align_graphs.check_plain(model)
    processor = settings["processor"]
    inputs, outputs = align_graphs.text_contract(model)
    return _Graph(
        align_graphs.AlignTextGraph(model),
        align_graphs.example_text_inputs(model, next(model.parameters()).device),
        inputs,
        outputs,
        align_graphs.processor_description(processor, "align-text"),
        processor,
    )


_GRAPHS: dict[str, Callable[[Any, dict[str, Any]], _Graph]] = {
    "sam-decoder": _sam_decoder,
    "sam-encoder": _sam_encoder,
    "align-image": _align_image,
    "align-text": _align_text,
}
