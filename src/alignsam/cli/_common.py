"""Options and plumbing shared by the commands. Imports nothing heavy at module level."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alignsam.tools.encoder import Encoder

DEFAULT_ALIGN = "kakaobrain/align-base"
DEFAULT_SAM = "facebook/sam-vit-base"


def add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", metavar="FILE", help="write the JSON result here instead of stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes on stderr")


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    p.add_argument("--batch-size", type=count(), default=16, metavar="N", help="images per forward pass (default 16)")
    p.add_argument("--workers", type=count(), default=2, metavar="N", help="image decoding threads (default 2)")
    p.add_argument("--threads", type=count(), metavar="N", help="CPU threads for the model (default: all cores)")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16 runs the heavy towers under bfloat16 autocast (faster where the CPU or GPU supports it)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the heavy towers (slow first call)")
    p.add_argument(
        "--backend",
        choices=["torch", "onnxruntime"],
        default="torch",
        help="what runs ALIGN's towers and SAM's prompt decoder: PyTorch (default) or ONNX Runtime (exported "
        'once into the cache; pip install "alignsam[onnx]"); SAM\'s image encoder and the automatic mask '
        "generator stay on PyTorch",
    )


def add_align_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=DEFAULT_ALIGN,
        help=f"ALIGN model: a hub id, a local folder, or 'demo' (bundled, offline) (default {DEFAULT_ALIGN})",
    )


def add_sam_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sam-model",
        default=DEFAULT_SAM,
        help="SAM model: a hub id, a Hugging Face folder, an official .pth file, or 'demo' "
        f"(bundled, offline) (default {DEFAULT_SAM}, i.e. vit_b)",
    )


# The official SamAutomaticMaskGenerator defaults; a model folder's amg.json may recommend others.
AMG_DEFAULTS: dict[str, float | int] = {
    "points_per_side": 32,
    "points_per_batch": 64,
    "pred_iou_thresh": 0.88,
    "stability_score_thresh": 0.95,
    "box_nms_thresh": 0.7,
    "crop_n_layers": 0,
    "min_mask_region_area": 0,
}


def add_amg_args(p: argparse.ArgumentParser) -> None:
    """The automatic mask generator's parameters. Unset options take the model's recommendation (an
    `amg.json` beside its weights, as the bundled demo has), else the official defaults."""
    g = p.add_argument_group(
        "automatic masks (official SamAutomaticMaskGenerator parameters; a model's amg.json, if any, "
        "replaces the defaults shown)"
    )
    helps = {
        "points_per_side": "grid of N x N points",
        "points_per_batch": "points per decoder batch",
        "pred_iou_thresh": "predicted IoU filter",
        "stability_score_thresh": "stability filter",
        "box_nms_thresh": "box NMS IoU",
        "crop_n_layers": "layers of image crops",
        "min_mask_region_area": "clean regions smaller than this (px)",
    }
    for name, default in AMG_DEFAULTS.items():
        kind = int if isinstance(default, int) else float
        flag = "--" + name.replace("_", "-")
        g.add_argument(
            flag, type=kind, default=None, metavar="N" if kind is int else "T", help=f"{helps[name]} ({default})"
        )


def amg_options(args: argparse.Namespace) -> dict[str, Any]:
    """Official defaults, then the model's amg.json, then the options given on the command line."""
    from alignsam.tools.masks import recommended_amg

    options: dict[str, Any] = dict(AMG_DEFAULTS)
    options.update(recommended_amg(args.sam_model))
    options.update({k: getattr(args, k) for k in AMG_DEFAULTS if getattr(args, k) is not None})
    return options


def mask_generator(args: argparse.Namespace, model: Any) -> Any:
    from alignsam.sam.automatic import SamAutomaticMaskGenerator

    return SamAutomaticMaskGenerator(model, fast=fast_path(args), **amg_options(args))


def sam_model(args: argparse.Namespace) -> Any:
    from alignsam.tools.masks import load_sam

    setup(args)
    return load_sam(args.sam_model, device=device(args))


def count(low: int = 1) -> Any:
    """argparse type for a whole number >= `low` (a usage error at once, before any model loads)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    return parse


def numbers(kind: str, count: tuple[int, ...]) -> Any:
    """argparse type for comma-separated numbers, e.g. a point `x,y[,label]` or a box `x0,y0,x1,y1`."""

    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{kind} must be comma-separated numbers, got '{text}'") from None
        if len(values) not in count:
            raise argparse.ArgumentTypeError(f"{kind} needs {' or '.join(map(str, count))} numbers, got '{text}'")
        return values

    return parse


def device(args: argparse.Namespace) -> str:
    import torch

    from alignsam.errors import InputError

    choice = args.device
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {choice}: no CUDA device is available; use --device cpu.")
    return str(choice)


def setup(args: argparse.Namespace) -> None:
    """Thread settings: the caller's choice, or torch's default of one thread per core."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)


def fast_path(args: argparse.Namespace) -> Any:
    from alignsam.inference import FastPath

    return FastPath(precision=args.precision, compile=args.compile)


def make_encoder(args: argparse.Namespace) -> Encoder:
    from alignsam.tools.encoder import Encoder

    setup(args)
    return Encoder.from_pretrained(
        args.model,
        device=device(args),
        batch_size=args.batch_size,
        workers=args.workers,
        progress=not args.quiet,
        fast=fast_path(args),
        backend=args.backend,
    )


def note(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(f"alignsam {args.command}: {message}", file=sys.stderr)


def emit(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Write the JSON result to --output or stdout."""
    from alignsam.errors import OutputError
    from alignsam.io.files import write_text_atomic

    text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    if not args.output:
        sys.stdout.write(text)
        return
    try:
        write_text_atomic(args.output, text)
    except OutputError as err:  # checked before the work, but a disk can fill: the result is not lost
        sys.stdout.write(text)
        raise OutputError(f"{err} The result was written to stdout instead.") from err


def finish(
    args: argparse.Namespace, result: dict[str, Any], done: int, errors: list[Any], what: str, interrupted: bool = False
) -> int:
    """Emit the result, report skipped inputs on stderr, and choose the exit code: 1 when nothing could be
    done (every input failed), 130 when Ctrl-C ended the run (the result holds what was done), else 0."""
    if interrupted:
        result["interrupted"] = True
    emit(args, result)
    if interrupted:
        print(f"alignsam {args.command}: interrupted; the result holds the {done} {what} done.", file=sys.stderr)
        return 130
    if errors:
        note(args, f"skipped {len(errors)} of {done + len(errors)} {what} that could not be read (see 'errors').")
    if done == 0 and errors:
        print(f"alignsam {args.command}: error: none of the {what} could be read.", file=sys.stderr)
        return 1
    return 0


def read_lines(path: str) -> list[str]:
    """Non-empty, non-comment lines of a UTF-8 text file."""
    from alignsam.errors import InputError

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"Cannot read '{path}': {err}") from err
    return [s for line in lines if (s := line.strip()) and not s.startswith("#")]


def existing(path: str) -> str:
    """argparse type for a path that must exist."""
    if not os.path.exists(path):
        raise argparse.ArgumentTypeError(f"no such file or folder: '{path}'")
    return path
