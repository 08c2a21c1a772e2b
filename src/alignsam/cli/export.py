"""`alignsam export onnx PART`: SAM's prompt decoder (the official web demo's contract), SAM's image encoder,
or one of ALIGN's towers as an ONNX model, with a description of its inputs and outputs beside it."""

from __future__ import annotations

import argparse

from alignsam.cli import _common as c

# alignsam.export.PARTS, spelled out so that `--help` loads no torch (a test keeps the two equal)
PARTS = ("sam-decoder", "sam-encoder", "align-image", "align-text")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export SAM's and ALIGN's parts (ONNX)",
        description="Export a model part to another format. Formats: onnx.",
    )
    formats = p.add_subparsers(dest="format", metavar="FORMAT", required=True, help="the format to write (onnx)")
    o = formats.add_parser(
        "onnx",
        help="ONNX models for ONNX Runtime, onnxruntime-web and the official SAM demo",
        description="Export PART to ONNX. sam-decoder: SAM's prompt encoder + mask decoder with the official "
        "web demo's inputs and outputs (image_embeddings, point_coords, point_labels, mask_input, "
        "has_mask_input, orig_im_size -> masks, iou_predictions, low_res_masks). sam-encoder: SAM's image "
        "encoder, taking resized 0..255 RGB pixels (normalisation and padding in the graph). align-image, "
        "align-text: ALIGN's towers, returning normalised embeddings, with the processor's files beside them. "
        "Every export writes alignsam_onnx.json (inputs, outputs, pre-processing) next to the model. Prints "
        'the files, inputs, outputs and exporter as JSON. Needs: pip install "alignsam[onnx]".',
    )
    o.add_argument("part", choices=PARTS, help="what to export")
    o.add_argument(
        "-o", "--output", dest="target", required=True, metavar="FILE_OR_DIR",
        help="a .onnx file, or a folder (written as FOLDER/PART.onnx)",
    )  # fmt: skip
    c.add_align_args(o)
    c.add_sam_args(o)
    g = o.add_argument_group("sam-decoder (the official export script's options)")
    g.add_argument("--return-single-mask", action="store_true", help="one mask, chosen as the official export does")
    g.add_argument("--quantize", action="store_true", help="dynamic uint8 quantization of the weights")
    g.add_argument(
        "--use-stability-score", action="store_true", help="the stability score instead of the predicted IoU"
    )
    g.add_argument(
        "--return-extra-metrics", action="store_true", help="also stability_scores and areas at the original size"
    )
    g.add_argument(
        "--contract", choices=["official", "prompts"], default=None,
        help="official (default): the demo's contract; prompts: B prompt sets, low-resolution logits of every "
        "mask token (what --backend onnxruntime runs)",
    )  # fmt: skip
    e = o.add_argument_group("encoders and towers")
    e.add_argument("--precision", choices=["fp32", "fp16"], default=None, help="fp16: float16 weights and arithmetic")
    e.add_argument(
        "--no-preprocess", dest="preprocess", action="store_false", default=None,
        help="sam-encoder: take SamModel.preprocess's normalised, padded pixels instead of resized 0..255 pixels",
    )  # fmt: skip
    a = o.add_argument_group("every part")
    a.add_argument("--gelu-approximate", action="store_true", help="tanh GELU (for runtimes without a fast Erf)")
    a.add_argument("--opset", type=c.count(), metavar="N", help="ONNX opset (default 18; below 18: torchscript)")
    a.add_argument("--exporter", choices=["dynamo", "torchscript"], default=None, help="default dynamo")
    a.add_argument("--threads", type=c.count(), metavar="N", help="CPU threads (default: all cores)")
    a.add_argument("-q", "--quiet", action="store_true", help="no notes on stderr")
    o.set_defaults(run=run, parser=o, output=None)  # -o is the model here; the JSON result goes to stdout


def options(args: argparse.Namespace) -> dict[str, object]:
    """The export options given on the command line (those left unset keep the part's defaults)."""
    flags = ("return_single_mask", "quantize", "use_stability_score", "return_extra_metrics", "gelu_approximate")
    out: dict[str, object] = {name: True for name in flags if getattr(args, name)}
    for name in ("contract", "precision", "preprocess", "opset", "exporter"):
        if getattr(args, name) is not None:
            out[name] = getattr(args, name)
    return out


def run(args: argparse.Namespace) -> int:
    import time

    from alignsam.export.parts import check_options, to_onnx

    chosen = options(args)
    try:
        check_options(args.part, dict(chosen))  # a usage error (exit 2) before any model loads
    except ValueError as err:
        flag_names = str(err).replace("_", "-")
        args.parser.error(flag_names)
    c.setup(args)
    ref = args.sam_model if args.part.startswith("sam-") else args.model
    start = time.perf_counter()
    result = to_onnx(args.part, ref, args.target, **chosen)
    c.note(args, f"exported {args.part} with the {result.exporter} exporter in {time.perf_counter() - start:.1f} s")
    c.emit(args, {**result.to_dict(), "source": str(ref)})
    return 0
