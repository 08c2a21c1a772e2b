"""`alignsam classify`: zero-shot classification of images among labels (ALIGN), or among a classifier's own
classes (InternImage: ImageNet-1k)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from alignsam.cli import _common as c

if TYPE_CHECKING:
    from pathlib import Path

    from alignsam.tools.classify import ClassifyResult


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify",
        help="classify images: zero-shot among labels (ALIGN), or among ImageNet classes (InternImage)",
        description="Classify images. With an ALIGN model (the default), zero-shot among the given labels: each "
        "label becomes prompts ('a photo of a {}.'), and probabilities are the softmax of the model's logits. "
        "With an InternImage classifier (--model internimage-t, -s, -b, -l, -xl, a folder or an official .pth), "
        "among its own classes (ImageNet-1k, or the names stored with the checkpoint), with the reference's "
        "evaluation preprocessing; --labels does not apply. Unreadable files are reported in 'errors' and "
        "skipped.",
    )
    p.add_argument("images", nargs="+", help="image files and/or folders")
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--labels", nargs="+", metavar="LABEL", help="the candidate labels (zero-shot, required)")
    labels.add_argument("--labels-file", metavar="FILE", help="a text file with one label per line (zero-shot)")
    p.add_argument(
        "--templates",
        type=c.templates,
        help="zero-shot prompt template set: photo (default), none, pipeline, simple (7), imagenet (80 "
        "phrasings, averaged), or one template with {} such as 'a satellite image of {}'",
    )
    p.add_argument("--top-k", type=c.count(), default=5, metavar="K", help="labels to report per image (default 5)")
    p.add_argument(
        "--model",
        default=c.DEFAULT_ALIGN,
        help="an ALIGN model for zero-shot labels (hub id, folder, or 'demo', bundled) or an InternImage "
        "classifier for ImageNet classes (internimage-t/s/b/l/xl, a hub id, a folder, an official .pth) "
        f"(default {c.DEFAULT_ALIGN})",
    )
    c.add_runtime_args(p)
    c.add_output_args(p)
    p.set_defaults(run=run, usage_error=p.error)


def run(args: argparse.Namespace) -> int:
    from alignsam.tools.files import list_images
    from alignsam.tools.imagenet import model_family

    if model_family(args.model) == "internimage":
        _refuse_zero_shot_options(args)
        found = list_images(args.images)
        result, labels = _imagenet(args, found.files)
    else:
        if args.labels is None and args.labels_file is None:
            args.usage_error("one of the arguments --labels --labels-file is required with an ALIGN model")
        labels = args.labels if args.labels is not None else c.read_lines(args.labels_file)
        found = list_images(args.images)
        result = _zero_shot(args, found.files, labels)
    out = {**result.to_dict(), "labels": len(labels), "ignored_files": found.ignored, "model": args.model}
    return c.finish(args, out, len(result.predictions), result.errors, "images")


def _refuse_zero_shot_options(args: argparse.Namespace) -> None:
    from alignsam.errors import UsageError

    given = [flag for flag, value in (("--labels", args.labels), ("--labels-file", args.labels_file),
                                      ("--templates", args.templates)) if value is not None]  # fmt: skip
    if given:
        raise UsageError(
            f"{' and '.join(given)}: '{args.model}' is an InternImage classifier, which chooses among its own "
            "classes; labels and templates are for zero-shot classification with an ALIGN model."
        )


def _zero_shot(args: argparse.Namespace, files: list[Path], labels: list[str]) -> ClassifyResult:
    from alignsam.tools.classify import classify

    encoder = c.make_encoder(args)
    return classify(encoder, files, labels, templates=args.templates or "photo", top_k=args.top_k)


def _imagenet(args: argparse.Namespace, files: list[Path]) -> tuple[ClassifyResult, list[str]]:
    from alignsam.tools.imagenet import ImageClassifier

    c.setup(args)
    classifier = ImageClassifier.from_pretrained(
        args.model, device=c.device(args), batch_size=args.batch_size, workers=args.workers,
        progress=not args.quiet, fast=c.fast_path(args),
    )  # fmt: skip
    return classifier.classify(files, top_k=args.top_k), classifier.labels
