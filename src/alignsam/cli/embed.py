"""`alignsam embed`: image and text embeddings to .npy files with parquet tables of ids and paths."""

from __future__ import annotations

import argparse

from alignsam.cli import _common as c


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="write image and text embeddings (.npy + .parquet)",
        description="Embed images (files, folders) and texts, writing images.npy / images.parquet and "
        "texts.npy / texts.parquet (L2-normalised float32 rows; ids and paths or texts in the tables) into "
        "--out. The folder can then be searched with `alignsam search`.",
    )
    p.add_argument("--images", nargs="+", default=[], metavar="PATH", help="image files and/or folders")
    p.add_argument("--texts", nargs="+", default=[], metavar="TEXT", help="texts")
    p.add_argument("--texts-file", metavar="FILE", help="a text file with one text per line")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the embeddings into")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the embeddings a folder already holds (refused otherwise)"
    )
    c.add_align_args(p)
    c.add_runtime_args(p)
    c.add_output_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from alignsam.tools.embed import check_output_folder, export_embeddings
    from alignsam.tools.files import list_images

    check_output_folder(args.out, args.overwrite)  # before loading the model and reading every input
    texts = list(args.texts) + (c.read_lines(args.texts_file) if args.texts_file else [])
    found = list_images(args.images) if args.images else None
    images = found.files if found else []
    encoder = c.make_encoder(args)
    summary = export_embeddings(
        encoder, args.out, images=images, texts=texts, model_name=args.model, overwrite=args.overwrite
    )
    if found is not None:
        summary["ignored_files"] = found.ignored
    errors = summary.get("errors", [])
    done = summary.get("images", {}).get("count", 0) + summary.get("texts", {}).get("count", 0)
    return c.finish(args, summary, done, errors, "inputs")
