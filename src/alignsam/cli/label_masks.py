"""`alignsam label-masks`: a semantic label for every SAM mask (what Semantic Segment Anything does)."""

from __future__ import annotations

import argparse

from alignsam.cli import _common as c


def add_vocab_args(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--labels", nargs="+", metavar="LABEL", help=f"the {what}")
    g.add_argument("--labels-file", metavar="FILE", help=f"the {what}, one per line (# comments)")
    g.add_argument(
        "--groups",
        type=lambda s: [x for x in s.split(",") if x],
        metavar="G1,G2",
        help="groups of the built-in vocabulary",
    )


def add_crop_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--background",
        choices=["gray", "blur", "keep"],
        help="what ALIGN sees outside the mask in its crop: gray, blurred, or kept as is (default: the model's "
        "regions.json, else gray)",
    )
    p.add_argument(
        "--context",
        type=c.real(1.0, 100.0),
        help="crop side as a multiple of the mask's box (default: the model's regions.json, else 1.2)",
    )
    p.add_argument(
        "--templates", type=c.templates, default="photo", help="prompt template set or template (see classify)"
    )


def vocabulary(args: argparse.Namespace) -> list[str] | None:
    """The words given, or None: the library then takes the model's own vocabulary (its vocabulary.json),
    else the objects-and-stuff groups of the built-in one."""
    from alignsam.tools.vocabulary import load_tags, read_tag_file

    if args.labels:
        return list(args.labels)
    if args.labels_file:
        return read_tag_file(args.labels_file)
    return load_tags(args.groups) if args.groups else None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "label-masks",
        help="a semantic label for every SAM mask (zero-shot, with ALIGN)",
        description="Find masks with SAM's automatic generator, then label each with ALIGN: the mask's crop "
        "(the object on a neutral background) is classified against a vocabulary. The output is SA-1B's "
        "layout with 'class_name' and 'class_proposals' added to each annotation; --overlay-dir draws the "
        "labelled masks. The default vocabulary is the model's own (a vocabulary.json beside its weights, as "
        "the demo has), else the objects-and-stuff part of the built-in tags.",
    )
    p.add_argument("images", nargs="+", help="image files and/or folders")
    add_vocab_args(p, "class names")
    p.add_argument("--top-k", type=c.count(), default=3, metavar="K", help="class proposals per mask (3)")
    add_crop_args(p)
    p.add_argument("--overlay-dir", metavar="DIR", help="write <image>.png with labelled masks here")
    c.add_align_args(p)
    c.add_sam_args(p)
    c.add_amg_args(p)
    c.add_runtime_args(p)
    c.add_output_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from alignsam.tools.files import list_images
    from alignsam.tools.mask_labels import crop_style, label_masks, mask_vocabulary
    from alignsam.tools.masks import automatic_masks
    from alignsam.tools.pipeline import for_each_image

    found = list_images(args.images)
    given = vocabulary(args)
    encoder = c.make_encoder(args)
    vocab = mask_vocabulary(encoder, given)
    style = crop_style(encoder, args.context, args.background)
    generator = c.mask_generator(args, c.sam_model(args))

    def work(path, image):
        masks = automatic_masks(generator, image)
        records = label_masks(encoder, image, masks, vocab, templates=args.templates, top_k=args.top_k, style=style)
        return records, masks, [r["class_name"] for r in records]

    run = for_each_image(found.files, work, overlay_dir=args.overlay_dir, progress=not args.quiet)
    records, errors = run.records, run.errors
    out = {"images": records, "errors": errors, "num_images": len(records), "vocabulary_size": len(vocab)}
    out["ignored_files"] = found.ignored
    return c.finish(
        args, out, len(records), errors, "images", interrupted=run.interrupted, failed_writes=run.failed_writes
    )
