"""`alignsam find`: masks for a word, or for a region of another image (segment from a prompt that SAM
itself does not take)."""

from __future__ import annotations

import argparse
from typing import Any

from alignsam.cli import _common as c
from alignsam.cli.label_masks import add_crop_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "find",
        help="masks matching a text, or a region of a reference image (SAM + ALIGN)",
        description="Find the masks of each image that best match a query: --text 'a red star', or a region "
        "of another image (--ref-image R.jpg --ref-box X0,Y0,X1,Y1). SAM proposes masks, ALIGN scores each "
        "mask's crop against the query; the best --top-k come back with their cosine score, a probability and "
        "whether they match: a text must beat the words of the model's vocabulary on the crop (its "
        "probability is among them), a region must be closer than an empty crop. Each image says whether "
        "anything matched ('matched'), and only a match is drawn on its overlay.",
    )
    p.add_argument("images", nargs="+", help="image files and/or folders")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--text", help="the text to find")
    q.add_argument("--ref-image", metavar="IMAGE", help="a reference image; with --ref-box, the region to find")
    p.add_argument("--ref-box", type=c.numbers("a box", (4,)), metavar="X0,Y0,X1,Y1", help="region of --ref-image")
    p.add_argument("--top-k", type=c.count(), default=3, metavar="K", help="masks to return per image (3)")
    add_crop_args(p)
    p.add_argument("--overlay-dir", metavar="DIR", help="write <image>.png with the best match drawn here")
    c.add_align_args(p)
    c.add_sam_args(p)
    c.add_amg_args(p)
    c.add_runtime_args(p)
    c.add_output_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from alignsam.errors import InputError, UsageError
    from alignsam.io.images import load_image_array
    from alignsam.tools.files import list_images
    from alignsam.tools.mask_labels import crop_style, find, region_query, text_query
    from alignsam.tools.masks import automatic_masks
    from alignsam.tools.pipeline import for_each_image
    from alignsam.tools.templates import resolve_templates

    if args.ref_image and args.ref_box is None:
        raise UsageError("--ref-image needs --ref-box X0,Y0,X1,Y1 (the region to look for).")
    if args.ref_box is not None and not args.ref_image:
        raise UsageError("--ref-box is a region of --ref-image: give --ref-image too (with --text it means nothing).")
    found = list_images(args.images)
    encoder = c.make_encoder(args)
    style = crop_style(encoder, args.context, args.background)
    query: Any
    if args.text is not None:
        if not args.text.strip():
            raise InputError("--text is empty.")
        query = text_query(encoder, args.text, resolve_templates(args.templates))
        described = {"text": args.text}
    else:
        query = region_query(encoder, load_image_array(args.ref_image), args.ref_box, style)
        described = {"ref_image": args.ref_image, "ref_box": list(args.ref_box)}
    generator = c.mask_generator(args, c.sam_model(args))

    def work(path, image):
        masks = automatic_masks(generator, image)
        matches = find(encoder, image, masks, query, top_k=args.top_k, style=style)
        best = [masks[m["id"]] for m in matches[:1] if m["matches"]]
        return matches, best, [described.get("text", "match")] if best else None

    run = for_each_image(found.files, work, overlay_dir=args.overlay_dir, progress=not args.quiet)
    records, errors = run.records, run.errors
    for record in records:
        record["matched"] = any(a["matches"] for a in record["annotations"])
    unmatched = [r["image"]["file_name"] for r in records if not r["matched"]]
    if unmatched:
        c.note(args, f"nothing matched the query in {len(unmatched)} of {len(records)} images: {unmatched[:5]}")
    out = {"query": described, "images": records, "errors": errors, "num_images": len(records)}
    return c.finish(
        args, out, len(records), errors, "images", interrupted=run.interrupted, failed_writes=run.failed_writes
    )
