"""`alignsam index`: build, grow, prune and inspect an image index folder (docs/index.md)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from alignsam.cli import _common as c


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="build or grow a searchable image index (incremental, crash-safe)",
        description="Build or grow the image index in DIR: embeddings, metadata (path, size, time, hash, width, "
        "height, caption, tags) and, for large collections, an HNSW index. Adding a folder again embeds only "
        "new or changed files; a run killed at any moment resumes where it stopped. Search it with "
        "`alignsam search --index DIR`.",
    )
    p.add_argument("dir", metavar="DIR", help="the index folder (created by the first --add)")
    p.add_argument(
        "--add", nargs="+", default=[], metavar="PATH", help="image files and/or folders to add (new or changed files)"
    )
    p.add_argument("--no-recursive", action="store_true", help="add only the images directly inside the folders")
    p.add_argument("--prune", action="store_true", help="drop the entries whose files are gone")
    p.add_argument(
        "--dedupe", nargs="?", type=float, const=0.95, metavar="THRESHOLD",
        help="list groups of near-duplicate images (cosine >= THRESHOLD, default 0.95)",
    )  # fmt: skip
    p.add_argument("--reindex", action="store_true", help="rebuild the approximate index from the stored vectors")
    p.add_argument(
        "--engine", choices=["local", "ray"], default="local",
        help="embed in this process (local, default) or on a Ray cluster (ray; pip install \"alignsam[ray]\")",
    )  # fmt: skip
    p.add_argument(
        "--address", metavar="ADDRESS", help="the Ray cluster for --engine ray (e.g. ray://head:10001; default: local)"
    )
    p.add_argument(
        "--captions", metavar="FILE",
        help='a JSON Lines file of {"path": ..., "caption": ..., "tags": [...]} to store with the images '
        "(paths as given to --add, relative to the current folder)",
    )  # fmt: skip
    p.add_argument("--tags", nargs="+", default=[], metavar="TAG", help="tags to store with every image added now")
    c.add_align_args(p)
    index_model_default(p)
    c.add_runtime_args(p)
    c.add_output_args(p)
    p.set_defaults(run=run)


def index_model_default(p: argparse.ArgumentParser) -> None:
    """--model defaults to the model the index was built with (a new index: the default ALIGN model)."""
    for action in p._actions:
        if action.dest == "model":
            action.default = None
            action.help = (
                "ALIGN model: a hub id, a local folder, or 'demo' (bundled, offline) (default: the model the index "
                f"was built with; for a new index {c.DEFAULT_ALIGN})"
            )


def chosen_model(args: argparse.Namespace, held: str | None) -> str:
    """The model of a run on an index holding `held`'s vectors: --model, which must agree, or `held`."""
    from alignsam.errors import UsageError
    from alignsam.index import model_key

    if args.model is None:
        return held or c.DEFAULT_ALIGN
    if held is not None and model_key(args.model) != held:
        raise UsageError(
            f"--model {args.model} contradicts the index, which was built with '{held}'; leave --model out to use "
            "it. The index was left untouched."
        )
    return str(args.model)


def read_captions(path: str) -> dict[str, dict[str, Any]]:
    """absolute path -> {"caption", "tags"} from a JSON Lines file."""
    from alignsam.errors import InputError

    out: dict[str, dict[str, Any]] = {}
    try:
        lines = open(path, encoding="utf-8").read().splitlines()  # noqa: SIM115
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"Cannot read the captions file '{path}': {err}") from err
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"'{path}' line {number} is not JSON: {err.msg}.") from err
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise InputError(f"'{path}' line {number}: expected an object with a 'path' string.")
        tags = item.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InputError(f"'{path}' line {number}: 'tags' must be a list of strings.")
        entry: dict[str, Any] = {"tags": tags}
        if item.get("caption") is not None:
            entry["caption"] = str(item["caption"])
        out[os.path.abspath(item["path"])] = entry
    return out


def run(args: argparse.Namespace) -> int:
    from alignsam.errors import UsageError
    from alignsam.index import ImageIndex, is_index

    if not (args.add or args.prune or args.dedupe is not None or args.reindex):
        raise UsageError("Nothing to do: give --add PATHS, --prune, --dedupe or --reindex.")
    if args.dedupe is not None and not 0.0 < args.dedupe <= 1.0:
        raise UsageError(f"--dedupe: the threshold must be in (0, 1], got {args.dedupe}.")
    if (args.address or args.engine == "ray") and not args.add:
        raise UsageError("--engine and --address choose how --add embeds; give --add PATHS.")
    captions = read_captions(args.captions) if args.captions else None
    if not args.add and not is_index(args.dir):
        ImageIndex.open(args.dir)  # the one-line error of a folder that is not an index
    with ImageIndex.open(args.dir, create=bool(args.add)) as index:
        model = chosen_model(args, index.model)
        out: dict[str, Any] = {"index": args.dir, "model": model}
        errors: list[Any] = []
        done = 0
        if args.add:
            index.check_model(model)
            args.model = model
            encoder = c.make_encoder(args) if args.engine == "local" else None
            if encoder is None:
                c.setup(args)
            report = index.add(
                args.add, model=model, encoder=encoder, recursive=not args.no_recursive, engine=args.engine,
                address=args.address, workers=args.workers, batch_size=args.batch_size, captions=captions,
                tags=args.tags, progress=not args.quiet,
            )  # fmt: skip
            errors = report["errors"]
            done = report["added"] + report["updated"] + report["unchanged"] + report["touched"]
            out["add"] = report
        if args.prune:
            out["pruned"] = index.prune()
        if args.reindex:
            index.reindex()
            out["reindexed"] = True
        if args.dedupe is not None:
            out["duplicates"] = index.dedupe(args.dedupe)
        out["images"] = len(index)
        out["generation"] = index.info["generation"]
    if not args.add:
        return c.finish(args, out, 0, [], "images")
    return c.finish(args, out, done, errors, "images")
