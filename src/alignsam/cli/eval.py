"""`alignsam eval`: zero-shot classification and image<->text retrieval, results as JSON.

    alignsam eval zeroshot data/classes --model demo --templates photo    # folder per class: top-1/top-5
    alignsam eval retrieval data/retrieval/captions.json --model demo     # R@1/5/10 both ways
    alignsam eval synthetic --model demo                                  # the demo model's held-out benchmark

`zeroshot` reads one sub-folder of images per class (names from the folders or a classes.txt); `retrieval`
reads a COCO captions JSON, a Karpathy split JSON (`--split test`) or a CSV of image,caption rows;
`synthetic` generates held-out scenes in memory. Unreadable images are skipped and counted. The model is a
hub id, a folder or the bundled `demo` (default: kakaobrain/align-base; `demo` for `synthetic`).
"""

from __future__ import annotations

import argparse
from typing import Any

from alignsam.cli import _common as c
from alignsam.cli._common import count


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="zero-shot classification (top-1/5) and image<->text retrieval (R@1/5/10) as JSON",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--model",
        help="ALIGN model: a hub id, a local folder, or 'demo' (default: kakaobrain/align-base; demo for synthetic)",
    )
    c.add_runtime_args(common, batch_size=64)
    c.add_output_args(common)
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True, help="zeroshot, retrieval or synthetic")

    p = tasks.add_parser("zeroshot", parents=[common], help="zero-shot top-1/top-5 on a folder-per-class data set")
    p.add_argument("folder", help="one sub-folder of images per class")
    p.add_argument(
        "--templates",
        type=c.templates,
        default="photo",
        help="template set (photo, simple, imagenet, ...) or '{}' text",
    )
    p.add_argument("--class-names", help="file with one class name per line (default: folder names / classes.txt)")

    p = tasks.add_parser("retrieval", parents=[common], help="image<->text R@1/5/10 on a captions file")
    p.add_argument("captions", help="COCO captions JSON, Karpathy split JSON, or CSV with image,caption")
    p.add_argument("--images", help="image folder (default: images/ beside the file, or its folder)")
    p.add_argument("--split", help="Karpathy split to use (default test)")

    p = tasks.add_parser("synthetic", parents=[common], help="held-out synthetic scenes (the demo model's benchmark)")
    p.add_argument("--image-size", type=int, help="scene size (default: the model's input size)")
    p.add_argument("--per-class", type=count(), default=10, help="images per shape x colour class (default 10)")
    p.add_argument("--num", type=count(), default=1000, help="multi-object retrieval scenes (default 1000)")
    p.add_argument("--seed", type=int, help="scene seed (default: the held-out seed)")
    p.add_argument("--templates", type=c.templates, default="photo", help="template set or '{}' text (default photo)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import time

    from alignsam.eval import HELD_OUT_SEED, retrieval_file, synthetic_benchmark, zero_shot_folder
    from alignsam.presets import DEFAULT_MODELS

    model = args.model = args.model or ("demo" if args.task == "synthetic" else DEFAULT_MODELS["align"])
    encoder = c.make_encoder(args)
    start = time.perf_counter()
    if args.task == "zeroshot":
        result = zero_shot_folder(encoder, args.folder, class_names=args.class_names, templates=args.templates)
    elif args.task == "retrieval":
        result = retrieval_file(encoder, args.captions, image_root=args.images, split=args.split)
    else:
        size = args.image_size or encoder.processor.image_processor.output_size[0]
        result = synthetic_benchmark(
            encoder,
            image_size=size,
            seed=HELD_OUT_SEED if args.seed is None else args.seed,
            per_class=args.per_class,
            num_retrieval=args.num,
            templates=args.templates,
        )
    result = {"task": args.task, "model": str(model), **result, "seconds": round(time.perf_counter() - start, 2)}
    c.emit(args, result)
    return 0
