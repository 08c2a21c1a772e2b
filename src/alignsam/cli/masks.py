"""`alignsam masks`: SAM's automatic masks for every image, as COCO RLE in SA-1B's layout."""

from __future__ import annotations

import argparse

from alignsam.cli import _common as c


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "masks",
        help="automatic masks for images (SAM), as COCO RLE JSON and overlays",
        description="Run SAM's automatic mask generator on each image. The JSON holds one SA-1B record per "
        "image ({'image': ..., 'annotations': [...]}, segmentation as COCO RLE); --overlay-dir also writes a "
        "PNG per image with the masks drawn. Unreadable files are reported and skipped.",
    )
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--overlay-dir", metavar="DIR", help="write <image>.png overlays here")
    c.add_sam_args(p)
    c.add_amg_args(p)
    c.add_runtime_args(p)
    c.add_output_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from alignsam.tools.files import list_images
    from alignsam.tools.masks import automatic_masks
    from alignsam.tools.pipeline import for_each_image

    found = list_images(args.images)
    generator = c.mask_generator(args, c.sam_model(args))

    def work(path, image):
        masks = automatic_masks(generator, image)
        return [m.annotation(i) for i, m in enumerate(masks)], masks, None

    run = for_each_image(found.files, work, overlay_dir=args.overlay_dir, progress=not args.quiet)
    records, errors = run.records, run.errors
    out = {"images": records, "errors": errors, "num_images": len(records), "ignored_files": found.ignored}
    out["num_masks"] = sum(len(r["annotations"]) for r in records)
    return c.finish(
        args, out, len(records), errors, "images", interrupted=run.interrupted, failed_writes=run.failed_writes
    )
