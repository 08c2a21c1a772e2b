"""`alignsam finetune-sam`: fine-tune SAM (or train a small one from scratch) on images with instance masks.

Fine-tune:   alignsam finetune-sam --init facebook/sam-vit-base --train-data data/train --freeze image_encoder \
                 --cache disk --val-data data/val --out runs/sam-ft
From scratch: alignsam finetune-sam --arch demo --train-data data/synth-train --out runs/demo
Resume:      alignsam finetune-sam --config runs/sam-ft/finetune_config.json --resume auto
Evaluate:    alignsam finetune-sam --eval-only --init runs/sam-ft/model --val-data data/val
"""

from __future__ import annotations

import argparse
from typing import Any

from alignsam.cli import _common as c


def _towers(text: str) -> tuple[str, ...]:
    towers = tuple(t.strip() for t in text.split(",") if t.strip())
    known = ("image_encoder", "prompt_encoder", "mask_decoder")
    bad = [t for t in towers if t not in known]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown towers {bad}; choose from {', '.join(known)}")
    return towers


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune-sam",
        help="fine-tune SAM on images with masks (COCO JSON or PNG masks), or train a small SAM",
        description="Fine-tune Segment Anything with the paper's recipe: prompts simulated as in interactive "
        "use (a jittered box or a point, then clicks in the previous error with the previous mask as input), "
        "focal + dice loss (20:1) and the IoU head's MSE. --freeze image_encoder --cache memory|disk is the "
        "cheap recipe (each image is encoded once). Checkpoints resume exactly. Data: a COCO instances JSON "
        "(RLE or polygons), a folder holding annotations.json, or a folder with images/ and masks/ "
        "(NAME_*.png per object, or one instance-id NAME.png). See docs/finetune.md.",
    )
    p.add_argument("--train-data", nargs="+", metavar="PATH", help="COCO JSON files and/or folders")
    p.add_argument("--val-data", nargs="+", default=[], metavar="PATH", help="held-out data for the evaluation")
    p.add_argument("--image-root", metavar="DIR", help="folder of the COCO file_names (default: beside the JSON)")
    p.add_argument("--out", metavar="DIR", help="the run folder (config, checkpoints, metrics, model/)")
    p.add_argument("--config", metavar="JSON", help="start from a finetune_config.json; other options override it")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--init", metavar="MODEL", help="model to fine-tune: hub id, folder, .pth, or 'demo'")
    what.add_argument("--arch", metavar="NAME", help="train from scratch: demo, vit_b, vit_l, vit_h or a config.json")
    p.add_argument("--freeze", type=_towers, metavar="T1,T2", help="image_encoder, prompt_encoder, mask_decoder")
    p.add_argument("--cache", choices=["off", "memory", "disk"], help="embedding cache (frozen encoder) (off)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, help="optimiser steps (1000)")
    g.add_argument("--batch-size", type=int, help="images per step (8)")
    g.add_argument("--lr", type=c.real(), help="peak learning rate (1e-4)")
    g.add_argument("--warmup", type=int, help="warm-up steps (100)")
    g.add_argument("--schedule", choices=["cosine", "linear", "constant"], help="decay after warm-up (cosine)")
    g.add_argument("--final-lr", type=c.real(), help="learning rate at the last step (0)")
    g.add_argument("--weight-decay", type=c.real(), help="AdamW weight decay (0.1)")
    g.add_argument("--grad-clip", type=c.real(), help="gradient norm clip, 0 for none (1.0)")
    g.add_argument("--precision", choices=["fp32", "bf16"], help="bf16 autocast (fp32)")
    g.add_argument("--seed", type=int, help="initialisation, data order and prompts (0)")
    s = p.add_argument_group("prompt simulation and loss")
    s.add_argument("--rounds", type=int, help="prompt rounds per step: first prompt + error clicks (3)")
    s.add_argument("--box-share", type=c.real(), help="share of objects that start from a box (0.5)")
    s.add_argument("--box-noise", type=c.real(), help="box jitter std as a share of the side (0.1)")
    s.add_argument("--box-noise-max", type=c.real(), help="largest box jitter in px of a 1024 input (20)")
    s.add_argument("--max-masks", type=int, help="objects per image per step (16)")
    s.add_argument("--focal-weight", type=c.real(), help="focal loss weight (20)")
    s.add_argument("--dice-weight", type=c.real(), help="dice loss weight (1)")
    s.add_argument("--iou-weight", type=c.real(), help="IoU-head MSE weight (1)")
    s.add_argument(
        "--binary-targets",
        action="store_const",
        const=True,
        help="train on thresholded low-resolution masks instead of each cell's coverage",
    )
    r = p.add_argument_group("run")
    r.add_argument("--resume", nargs="?", const="auto", metavar="auto|PATH", help="continue from a checkpoint")
    r.add_argument("--save-every", type=int, help="checkpoint every N steps (500)")
    r.add_argument("--keep-checkpoints", type=int, help="checkpoints kept (2)")
    r.add_argument("--log-every", type=int, help="metrics.jsonl line every N steps (10)")
    r.add_argument("--eval-every", type=int, help="evaluate on --val-data every N steps (0: at the end only)")
    r.add_argument("--val-samples", type=int, help="images of --val-data to evaluate, 0 for all (200)")
    r.add_argument("--eval-points", type=int, help="clicks of the several-points evaluation (3)")
    r.add_argument("--max-seconds", type=c.real(), help="stop (with a checkpoint and model/) after this long")
    r.add_argument("--threads", type=c.thread_count, help="CPU threads (default: torch's)")
    r.add_argument("--workers", type=c.count(0, c.max_threads()), help="data-loading worker processes (0)")
    r.add_argument("--eval-only", action="store_true", help="only evaluate --init on --val-data")
    c.add_output_args(p)
    p.set_defaults(run=run)


# argparse destination -> FinetuneConfig field (top level), or (section, field) for nested settings
_TOP = (
    "train_data", "val_data", "image_root", "out", "init", "arch", "freeze", "cache", "steps", "batch_size", "lr",
    "warmup", "schedule", "final_lr", "weight_decay", "grad_clip", "precision", "seed", "save_every",
    "keep_checkpoints", "log_every", "eval_every", "val_samples", "eval_points", "max_seconds", "threads", "workers",
)  # fmt: skip
_PROMPTS = {"rounds": "rounds", "box_share": "box_share", "box_noise": "box_noise"}
_PROMPTS |= {"box_noise_max": "box_noise_max", "max_masks": "max_masks"}
_LOSS = {"focal_weight": "focal_weight", "dice_weight": "dice_weight", "iou_weight": "iou_weight"}
_LOSS |= {"binary_targets": "binary_targets"}


def config_from_args(args: argparse.Namespace) -> Any:
    """The run's `FinetuneConfig`: `--config` (if given) with every option given on the command line on top."""
    from alignsam.errors import InputError
    from alignsam.train.sam.config import FinetuneConfig

    base: dict[str, Any] = FinetuneConfig.load(args.config).to_dict() if args.config else {}
    for name in _TOP:
        value = getattr(args, name)
        if value is not None and value != []:
            base[name] = value
    if args.init is not None:
        base["arch"] = None
    if args.arch is not None:
        base["init"] = None
    if base.get("grad_clip") == 0:
        base["grad_clip"] = None
    for section, names in (("prompts", _PROMPTS), ("loss", _LOSS)):
        for dest, field in names.items():
            value = getattr(args, dest)
            if value is not None:
                base.setdefault(section, {})[field] = value
    if not base.get("out"):
        raise InputError("--out is required: the run folder (or --config with one).")
    if not base.get("train_data"):
        raise InputError("--train-data is required: a COCO JSON file or a folder of images and masks.")
    if not base.get("init") and not base.get("arch"):
        raise InputError("Give --init MODEL to fine-tune, or --arch NAME to train from scratch.")
    return FinetuneConfig.from_dict(base)


def _eval_only(args: argparse.Namespace) -> int:
    import torch

    from alignsam.errors import InputError
    from alignsam.sam import SamModel
    from alignsam.train.sam.data import open_dataset
    from alignsam.train.sam.evaluate import evaluate

    if not args.init or not args.val_data:
        raise InputError("--eval-only needs --init MODEL and --val-data PATH.")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = SamModel.from_pretrained(args.init, device="cpu")
    data = open_dataset(args.val_data, args.image_root)
    result = evaluate(
        model,
        data,
        max_samples=args.val_samples or None,
        clicks=args.eval_points or 3,
        progress=not args.quiet,
    )
    c.emit(args, {"model": args.init, "data": args.val_data, **result})
    return 0


def run(args: argparse.Namespace) -> int:
    if args.eval_only:
        return _eval_only(args)
    from alignsam.train.sam.trainer import finetune

    config = config_from_args(args)
    summary = finetune(config, resume=args.resume, progress=not args.quiet)
    c.emit(args, summary)
    return 0
