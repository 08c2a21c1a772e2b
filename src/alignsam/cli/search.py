"""`alignsam search`: find images in an embedding folder by text, image, or composed query."""

from __future__ import annotations

import argparse

from alignsam.cli import _common as c


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search an embedding folder by text, image or composed query",
        description="Rank the images of a folder written by `alignsam embed` against each query (a text, an "
        "image, or a composition such as 'image:query.jpg + text:at night'), by exact cosine similarity.",
    )
    p.add_argument(
        "queries", nargs="+", metavar="QUERY",
        help="text, an image path, or a composed query ('image:a.jpg + text:at night'); one result list each",
    )  # fmt: skip
    p.add_argument("--index", required=True, metavar="DIR", help="folder written by `alignsam embed`")
    p.add_argument("-k", "--top-k", type=c.count(), default=10, metavar="K", help="results per query (default 10)")
    c.add_align_args(p)
    c.add_runtime_args(p)
    c.add_output_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from alignsam.tools.embed import load_image_index, search
    from alignsam.tools.similarity import embed_items, parse_items

    vectors, paths = load_image_index(args.index)
    queries = embed_items(c.make_encoder(args), parse_items(args.queries))
    results = search(vectors, paths, queries.embeds, queries.names, args.top_k)
    out = {"results": results, "errors": queries.errors, "index_size": len(paths), "model": args.model}
    return c.finish(args, out, len(queries.names), queries.errors, "queries")
