"""Options and plumbing shared by the commands. Imports nothing heavy at module level."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alignsam.tools.encoder import Encoder

from alignsam.presets import DEFAULT_MODELS

DEFAULT_ALIGN = DEFAULT_MODELS["align"]
DEFAULT_SAM = DEFAULT_MODELS["sam"]


def add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", metavar="FILE", help="write the JSON result here instead of stdout")
    p.add_argument(
        "-q", "--quiet", "--no-progress", dest="quiet", action="store_true", help="no progress bars or notes on stderr"
    )


def add_runtime_args(p: argparse.ArgumentParser, batch_size: int = 16) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    p.add_argument(
        "--batch-size", type=count(), default=batch_size, metavar="N",
        help=f"images per forward pass (default {batch_size})",
    )  # fmt: skip
    p.add_argument("--workers", type=thread_count, default=2, metavar="N", help="image decoding threads (default 2)")
    p.add_argument(
        "--threads", type=thread_count, metavar="N",
        help="CPU threads for the model (default: the cores other work leaves idle when the command starts)",
    )  # fmt: skip
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


_AMG_HELP = {
    "points_per_side": "grid of N x N points",
    "points_per_batch": "points per decoder batch",
    "pred_iou_thresh": "predicted IoU filter",
    "stability_score_thresh": "stability filter",
    "stability_score_offset": "logit offset of the stability score",
    "box_nms_thresh": "box NMS IoU within a crop",
    "crop_n_layers": "layers of image crops",
    "crop_nms_thresh": "box NMS IoU between crops",
    "crop_overlap_ratio": "overlap of neighbouring crops",
    "crop_n_points_downscale_factor": "points per side shrink by this per crop layer",
    "min_mask_region_area": "clean regions smaller than this (px)",
}


def add_amg_args(p: argparse.ArgumentParser) -> None:
    """The automatic mask generator's parameters (`alignsam.sam.AmgConfig`). Unset options take the model's
    recommendation (an `amg.json` beside its weights, as the bundled demo has), else the official defaults."""
    from alignsam.sam.automatic import AmgConfig

    g = p.add_argument_group(
        "automatic masks (official SamAutomaticMaskGenerator parameters; a model's amg.json, if any, "
        "replaces the defaults shown)"
    )
    defaults = AmgConfig()
    for name, help_text in _AMG_HELP.items():
        default = getattr(defaults, name)
        whole = isinstance(default, int)
        flag = "--" + name.replace("_", "-")
        g.add_argument(
            flag, type=int if whole else real(), default=None, metavar="N" if whole else "T",
            help=f"{help_text} ({default:g})",
        )  # fmt: skip


def amg_options(args: argparse.Namespace, model: Any) -> Any:
    """The `AmgConfig` of a run: the official defaults, then the model's amg.json, then the options given."""
    from alignsam.sam.automatic import AmgConfig

    return AmgConfig.for_model(model).replace(**{k: getattr(args, k, None) for k in _AMG_HELP})


def mask_generator(args: argparse.Namespace, model: Any) -> Any:
    from alignsam.sam.automatic import SamAutomaticMaskGenerator

    return SamAutomaticMaskGenerator(model, config=amg_options(args, model), fast=fast_path(args))


def sam_model(args: argparse.Namespace) -> Any:
    from alignsam.sam.modeling.sam import SamModel

    setup(args)
    return SamModel.from_pretrained(args.sam_model, device=device(args))


def count(low: int = 1, high: int | None = None) -> Any:
    """argparse type for a whole number in [`low`, `high`] (a usage error at once, before any model loads)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"expected an integer {bounds}, got {value}")
        return value

    return parse


def max_threads() -> int:
    """The most threads an option may ask for: 4 per core, at most 1024.

    Why: `--threads 100000` made PyTorch's thread pool crash the process (exit 139)."""
    return min(1024, 4 * (os.cpu_count() or 1))


def thread_count(text: str) -> int:
    """argparse type for a thread count: 1 to `max_threads()`."""
    return int(count(1, max_threads())(text))


def real(low: float | None = None, high: float | None = None) -> Any:
    """argparse type for a finite number in [`low`, `high`] (`nan`, `inf` and overflowing text refused)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"<= {high}" if low is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"expected a number {bounds}, got {text!r}")
        return value

    return parse


COORDINATE_LIMIT = 1e9
"""Coordinates beyond this many pixels are refused (the largest image the guard admits is far smaller)."""


def numbers(kind: str, count: tuple[int, ...]) -> Any:
    """argparse type for comma-separated finite numbers, e.g. a point `x,y[,label]` or a box `x0,y0,x1,y1`."""

    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{kind} must be comma-separated numbers, got '{text}'") from None
        if len(values) not in count:
            raise argparse.ArgumentTypeError(f"{kind} needs {' or '.join(map(str, count))} numbers, got '{text}'")
        if not all(math.isfinite(v) and abs(v) <= COORDINATE_LIMIT for v in values):
            raise argparse.ArgumentTypeError(
                f"{kind} must be finite numbers of at most {COORDINATE_LIMIT:g} in size, got '{text}'"
            )
        return values

    return parse


def templates(text: str) -> str:
    """argparse type for `--templates`: a set name or a template with one `{}` (checked before any model)."""
    from alignsam.errors import InputError
    from alignsam.tools.templates import resolve_templates

    try:
        resolve_templates(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def device(args: argparse.Namespace) -> str:
    import torch

    from alignsam.errors import InputError

    choice = args.device
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {choice}: no CUDA device is available; use --device cpu.")
    try:
        torch.empty(0, device=choice)
    except (RuntimeError, ValueError, AssertionError):  # unknown names, absent devices, bad indices
        raise InputError(
            f"--device {choice}: not a device name PyTorch knows, or not present here; use cpu, cuda or cuda:N."
        ) from None
    return str(choice)


def setup(args: argparse.Namespace) -> None:
    """Thread settings: the caller's choice, or one thread per core that other work leaves idle now
    (`alignsam.fast.idle_cores`)."""
    import torch

    from alignsam.fast import idle_cores

    torch.set_num_threads(args.threads or idle_cores())


def fast_path(args: argparse.Namespace) -> Any:
    from alignsam.fast import FastPath

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
    from alignsam.io.jsontext import json_text

    text = json_text(result) + "\n"  # file names that are not UTF-8 as \udcXX escapes (round-trip)
    if not args.output:
        sys.stdout.write(text)
        return
    try:
        write_text_atomic(args.output, text)
    except OutputError as err:  # checked before the work, but a disk can fill: the result is not lost
        sys.stdout.write(text)
        raise OutputError(f"{err} The result was written to stdout instead.") from err


def finish(
    args: argparse.Namespace,
    result: dict[str, Any],
    done: int,
    errors: list[Any],
    what: str,
    interrupted: bool = False,
    failed_writes: list[dict[str, str]] | None = None,
) -> int:
    """Emit the result, report skipped inputs on stderr, and choose the exit code: 1 when nothing could be
    done (every input failed) or when some output file could not be written (`failed_writes`, listed in the
    result: a full disk never loses results silently), 130 when Ctrl-C ended the run (the result holds what
    was done), else 0."""
    if interrupted:
        result["interrupted"] = True
    if failed_writes:
        result["failed_writes"] = failed_writes
    emit(args, result)
    if interrupted:
        print(f"alignsam {args.command}: interrupted; the result holds the {done} {what} done.", file=sys.stderr)
        return 130
    if errors:
        note(args, f"skipped {len(errors)} of {done + len(errors)} {what} that could not be read (see 'errors').")
    if failed_writes:
        first = failed_writes[0]["error"]
        print(
            f"alignsam {args.command}: error: {len(failed_writes)} output file(s) could not be written ({first}); "
            "the results are in the JSON (see 'failed_writes').",
            file=sys.stderr,
        )
        return 1
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
