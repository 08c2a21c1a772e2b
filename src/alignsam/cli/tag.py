"""`alignsam tag`: several tags per image from a tag vocabulary, zero-shot."""

from __future__ import annotations

import argparse

from alignsam.cli import _common as c


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tag",
        help="tag images with words from a vocabulary (zero-shot)",
        description="Give each image the tags of a vocabulary that stand out: a tag is kept when its "
        "similarity to the image, as a z-score over the whole vocabulary, is at least --threshold; at most "
        "--max-tags, at least --min-tags. The default vocabulary ships with alignsam (thousands of everyday "
        "objects, scenes and attributes); --groups picks parts of it, --vocab uses your own. --tune finds the "
        "threshold with the best F1 on images whose tags you know.",
    )
    p.add_argument("images", nargs="*", help="image files and/or folders")
    vocab = p.add_mutually_exclusive_group()
    vocab.add_argument("--vocab", metavar="FILE", help="your own vocabulary: one tag per line, # comments")
    vocab.add_argument(
        "--groups",
        type=lambda s: [g for g in s.split(",") if g],
        metavar="G1,G2",
        help="use only these groups of the built-in vocabulary, comma-separated (see --list-groups)",
    )
    p.add_argument("--list-groups", action="store_true", help="print the built-in vocabulary's groups and exit")
    p.add_argument("--threshold", type=c.real(), default=3.0, metavar="Z", help="minimum z-score (default 3.0)")
    p.add_argument("--max-tags", type=c.count(), default=10, metavar="N", help="at most N tags per image (default 10)")
    p.add_argument("--min-tags", type=c.count(0), default=1, metavar="N", help="at least N tags per image (default 1)")
    p.add_argument(
        "--templates", type=c.templates, default="photo", help="prompt template set or template (see classify)"
    )
    p.add_argument(
        "--tune",
        metavar="TRUTH.json",
        help="a JSON object {image path: [true tags]}: report the threshold with the best F1 instead of tagging",
    )
    c.add_align_args(p)
    c.add_runtime_args(p)
    c.add_output_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from alignsam.errors import InputError
    from alignsam.tools.files import list_images
    from alignsam.tools.tag import TagPolicy, tag, tune_threshold
    from alignsam.tools.vocabulary import load_tags, read_tag_file, tag_groups

    if args.list_groups:
        c.emit(args, {group: len(tags) for group, tags in tag_groups().items()})
        return 0
    # no words given: the library takes the model's own vocabulary (its vocabulary.json), else the built-in one
    vocab = read_tag_file(args.vocab) if args.vocab else load_tags(args.groups) if args.groups else None
    policy = TagPolicy(args.threshold, args.max_tags, args.min_tags)
    if args.tune:
        try:
            with open(args.tune, encoding="utf-8") as f:
                truth = json.load(f)
        except (OSError, ValueError) as err:
            raise InputError(f"Cannot read the tuning file '{args.tune}': {err}") from err
        if not isinstance(truth, dict):
            raise InputError(f"'{args.tune}' must hold a JSON object {{image path: [tags]}}.")
        result = tune_threshold(c.make_encoder(args), truth, vocab, templates=args.templates)
        c.emit(args, result)
        return 0
    if not args.images:
        raise InputError("Give images (files or folders) to tag.")
    found = list_images(args.images)
    result = tag(c.make_encoder(args), found.files, vocab, policy=policy, templates=args.templates)
    result.update({"ignored_files": found.ignored, "model": args.model})
    return c.finish(args, result, len(result["results"]), result["errors"], "images")
