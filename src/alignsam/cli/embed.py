"""`alignsam embed`: image and text embeddings to .npy files with parquet tables of ids and paths.

The images' batches are committed as they finish to a hidden index in the output folder
(`.embed-progress/`, `alignsam.index`): a run that is killed keeps them, and the same command run again
embeds only the images left. When every input is embedded the folder's files are written as one unit and
the progress index is removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any

from alignsam.cli import _common as c

PROGRESS = ".embed-progress"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="write image and text embeddings (.npy + .parquet)",
        description="Embed images (files, folders) and texts, writing images.npy / images.parquet and "
        "texts.npy / texts.parquet (L2-normalised float32 rows; ids and paths or texts in the tables) into "
        "--out. The folder can then be searched with `alignsam search`. A killed run keeps the batches it "
        "finished: run the same command again to go on.",
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
    from alignsam.errors import InputError
    from alignsam.tools.embed import check_output_folder, write_embeddings
    from alignsam.tools.files import list_images

    out = check_output_folder(args.out, args.overwrite)  # before loading the model and reading every input
    texts = list(args.texts) + (c.read_lines(args.texts_file) if args.texts_file else [])
    found = list_images(args.images) if args.images else None
    images = found.files if found else []
    if not images and not texts:
        raise InputError("Nothing to embed: pass images, texts, or both.")
    encoder = c.make_encoder(args)
    image_part = embed_images_resumably(args, encoder, out, images) if images else None
    text_vectors = encoder.encode_texts(texts).numpy() if texts else None
    summary = write_embeddings(
        out, encoder.model.config.projection_dim, args.model, images=image_part, texts=(text_vectors, texts)
    )
    shutil.rmtree(out / PROGRESS, ignore_errors=True)  # committed: the progress is no longer needed
    if found is not None:
        summary["ignored_files"] = found.ignored
    errors = summary.get("errors", [])
    done = summary.get("images", {}).get("count", 0) + summary.get("texts", {}).get("count", 0)
    return c.finish(args, summary, done, errors, "inputs")


def embed_images_resumably(
    args: argparse.Namespace, encoder: Any, out: Path, images: list[Path]
) -> tuple[Any, list[str], list[dict[str, str]]]:
    """(vectors in input order, path per row, errors): the images embedded into the progress index (only
    those a killed run did not finish), then read back in the order given."""
    import numpy as np

    from alignsam.index import ImageIndex, model_key

    progress = out / PROGRESS
    index = ImageIndex.open(progress, create=True)
    if index.model is not None and index.model != model_key(args.model):  # a run with another model: restart
        index.close()
        shutil.rmtree(progress)
        index = ImageIndex.open(progress, create=True)
    with index:
        if index.model is not None:
            c.note(args, f"going on from a previous run: {len(index)} images already embedded")
        report = index.add(
            images, model=args.model, encoder=encoder, recursive=False, batch_size=args.batch_size,
            progress=not args.quiet,
        )  # fmt: skip
        names = [str(p) for p in images]
        wanted = [os.path.abspath(p) for p in images]
        vectors = index.vectors_of_paths(wanted)
    position = {path: i for i, path in enumerate(wanted)}
    rows = [i for i, path in enumerate(wanted) if path in vectors]
    reported = {position[e["image"]]: e["error"] for e in report["errors"] if e["image"] in position}
    for i, path in enumerate(wanted):  # a file whose name is not UTF-8 is reported under its escaped name
        if path not in vectors and i not in reported:
            reported[i] = next((e["error"] for e in report["errors"] if e["image"] not in position), "not embedded")
    errors = [{"image": names[i], "error": reported[i]} for i in sorted(reported)]
    dim = encoder.model.config.projection_dim
    matrix = np.stack([vectors[wanted[i]] for i in rows]) if rows else np.empty((0, dim), np.float32)
    return matrix.astype(np.float32), [names[i] for i in rows], errors
