"""`alignsam search`: find images in an index folder (or an `embed` folder) by text, image or composed query."""

from __future__ import annotations

import argparse

from alignsam.cli import _common as c
from alignsam.cli.index import chosen_model, index_model_default


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search an image index or embedding folder by text, image or composed query",
        description="Rank the images of a folder built by `alignsam index` (or written by `alignsam embed`) "
        "against each query (a text, an image, or a composition such as 'image:query.jpg + text:at night'), "
        "by cosine similarity; an index can also filter by metadata (--where) and drop near-duplicates.",
    )
    p.add_argument(
        "queries", nargs="+", metavar="QUERY",
        help="text, an image path, or a composed query ('image:a.jpg + text:at night'); one result list each",
    )  # fmt: skip
    p.add_argument(
        "--index", required=True, metavar="DIR", help="folder built by `alignsam index` or written by `alignsam embed`"
    )
    p.add_argument("-k", "--top-k", type=c.count(), default=10, metavar="K", help="results per query (default 10)")
    p.add_argument(
        "--where", metavar="FILTER",
        help="metadata filter of an index, e.g. \"width >= 512 AND path LIKE '%%/beach/%%'\" (columns: id, path, "
        "size, mtime, width, height, caption, tags, hash; =, !=, <, <=, >, >=, LIKE, IN, IS NULL, AND, OR, NOT)",
    )  # fmt: skip
    p.add_argument(
        "--dedupe", nargs="?", type=float, const=0.95, metavar="THRESHOLD",
        help="drop a result whose cosine with a better one is >= THRESHOLD (default 0.95); index folders only",
    )  # fmt: skip
    c.add_align_args(p)
    index_model_default(p)
    c.add_runtime_args(p)
    c.add_output_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from alignsam.errors import UsageError
    from alignsam.index import ImageIndex, is_index, parse_filter
    from alignsam.tools.embed import load_image_index, search
    from alignsam.tools.similarity import embed_items, parse_items

    if not is_index(args.index):
        if args.where is not None or args.dedupe is not None:
            raise UsageError(
                f"--where and --dedupe need an index built by `alignsam index`; '{args.index}' is not one."
            )
        vectors, paths = load_image_index(args.index)
        args.model = args.model or c.DEFAULT_ALIGN
        queries = embed_items(c.make_encoder(args), parse_items(args.queries))
        results = search(vectors, paths, queries.embeds, queries.names, args.top_k)
        out = {"results": results, "errors": queries.errors, "index_size": len(paths), "model": args.model}
        return c.finish(args, out, len(queries.names), queries.errors, "queries")

    if args.where is not None:
        parse_filter(args.where)  # a filter that does not parse fails before the model loads
    with ImageIndex.open(args.index) as index:
        args.model = chosen_model(args, index.model)
        found = index.query(c.make_encoder(args), args.queries, args.top_k, where=args.where, dedupe=args.dedupe)
        out = {**found, "index_size": len(index), "model": args.model}
    return c.finish(args, out, len(found["results"]), found["errors"], "queries")
