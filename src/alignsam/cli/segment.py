"""`alignsam segment`: SAM masks from points, boxes or a rough mask given on the command line."""

from __future__ import annotations

import argparse

from alignsam.cli import _common as c


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="masks from points, boxes or a rough mask (SAM)",
        description="Prompt SAM on one image. --point X,Y marks the object (X,Y,0 marks background); --box "
        "X0,Y0,X1,Y1 frames it (several boxes give one mask each); --mask-input takes a rough binary mask "
        "(PNG). Coordinates are pixels of the image. A single point gives SAM's three candidate masks, other "
        "prompts one mask (override with --multimask / --single).",
    )
    p.add_argument("image", help="the image")
    p.add_argument(
        "--point", action="append", default=[], type=c.numbers("a point", (2, 3)), metavar="X,Y[,L]",
        help="a point on the object (label 1, the default) or on the background (label 0); repeatable",
    )  # fmt: skip
    p.add_argument(
        "--box", action="append", default=[], type=c.numbers("a box", (4,)), metavar="X0,Y0,X1,Y1",
        help="a box around the object; repeat for several objects (one mask each)",
    )  # fmt: skip
    p.add_argument("--mask-input", metavar="PNG", help="a rough binary mask of the object (white = object)")
    multi = p.add_mutually_exclusive_group()
    multi.add_argument("--multimask", dest="multimask", action="store_const", const=True, help="three masks")
    multi.add_argument("--single", dest="multimask", action="store_const", const=False, help="one mask")
    p.add_argument("--overlay", metavar="PNG", help="write the image with the masks drawn here")
    c.add_sam_args(p)
    c.add_runtime_args(p)
    c.add_output_args(p)
    p.set_defaults(run=run, multimask=None)


def run(args: argparse.Namespace) -> int:
    from alignsam.errors import PromptError
    from alignsam.io.images import check_image_output, load_image_array, save_image
    from alignsam.sam.predictor import SamPredictor
    from alignsam.tools.masks import overlay, prompted_masks, sa1b

    points = []
    for p in args.point:
        label = int(p[2]) if len(p) == 3 else 1
        if label not in (0, 1):
            raise PromptError(f"A point's label must be 1 (object) or 0 (background), got {p[2]:g}.")
        points.append((p[0], p[1], label))
    if args.overlay:
        check_image_output(args.overlay, create_parents=False)  # before the model loads
    image = load_image_array(args.image)
    predictor = SamPredictor(c.sam_model(args), fast=c.fast_path(args), backend=args.backend)
    predictor.set_image(image)
    mask_input = None
    if args.mask_input:
        rough = load_image_array(args.mask_input)[..., 0] > 127
        if rough.shape != image.shape[:2]:
            size = f"{image.shape[1]}x{image.shape[0]}"
            raise PromptError(f"--mask-input is {rough.shape[1]}x{rough.shape[0]}, the image is {size}.")
        mask_input = predictor.mask_to_logits(rough)
    per_prompt = prompted_masks(predictor, points, [tuple(b) for b in args.box], mask_input, args.multimask)
    annotations: list[dict] = []
    for k, masks in enumerate(per_prompt):
        for m in masks:
            annotations.append({**m.annotation(len(annotations)), "prompt_index": k})
    out = sa1b(args.image, image.shape[:2], annotations)
    out["prompt"] = {"points": [list(p) for p in points], "boxes": [list(b) for b in args.box]}
    c.emit(args, out)  # first: a failed overlay write below does not lose the masks
    if args.overlay:
        save_image(overlay(image, [masks[0] for masks in per_prompt]), args.overlay)  # each prompt's best mask
    return 0
