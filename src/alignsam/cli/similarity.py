"""`alignsam similarity`: the similarity matrix between two sets of images, texts or composed queries."""

from __future__ import annotations

import argparse

from alignsam.cli import _common as c


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "similarity",
        help="similarity matrix between two sets of images, texts or composed queries",
        description="Cosine similarities (and the model's logits) of every row item against every column "
        "item. An item is a text, an image file, a folder of images, or a composition such as "
        "'image:cat.jpg + text:in the snow' or 'text:a red car - text:red + text:blue' (operators need "
        "spaces around them; prefixes text: and image: force the kind).",
    )
    p.add_argument("--rows", nargs="+", required=True, metavar="ITEM", help="row items")
    p.add_argument("--cols", nargs="+", required=True, metavar="ITEM", help="column items")
    c.add_align_args(p)
    c.add_runtime_args(p)
    c.add_output_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from alignsam.tools.similarity import parse_items, similarity

    rows, cols = parse_items(args.rows), parse_items(args.cols)
    result = similarity(c.make_encoder(args), rows, cols)
    out = {**result.to_dict(), "model": args.model}
    return c.finish(args, out, len(result.rows) * len(result.columns), result.errors, "items")
