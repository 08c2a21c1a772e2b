"""`alignsam classify`: zero-shot classification of images among labels."""

from __future__ import annotations

import argparse

from alignsam.cli import _common as c


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify",
        help="zero-shot classification of images among labels",
        description="Classify images among the given labels, zero-shot: each label becomes prompts "
        "('a photo of a {}.'), and probabilities are the softmax of the model's logits. Unreadable files are "
        "reported in 'errors' and skipped.",
    )
    p.add_argument("images", nargs="+", help="image files and/or folders")
    labels = p.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", nargs="+", metavar="LABEL", help="the candidate labels")
    labels.add_argument("--labels-file", metavar="FILE", help="a text file with one label per line")
    p.add_argument(
        "--templates",
        default="photo",
        help="prompt template set: photo (default), none, pipeline, simple (7), imagenet (80 phrasings, "
        "averaged), or one template with {} such as 'a satellite image of {}'",
    )
    p.add_argument("--top-k", type=c.count(), default=5, metavar="K", help="labels to report per image (default 5)")
    c.add_align_args(p)
    c.add_runtime_args(p)
    c.add_output_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from alignsam.tools.classify import classify
    from alignsam.tools.files import list_images

    labels = args.labels if args.labels is not None else c.read_lines(args.labels_file)
    found = list_images(args.images)
    encoder = c.make_encoder(args)
    result = classify(encoder, found.files, labels, templates=args.templates, top_k=args.top_k)
    out = {**result.to_dict(), "labels": len(labels), "ignored_files": found.ignored, "model": args.model}
    return c.finish(args, out, len(result.predictions), result.errors, "images")
