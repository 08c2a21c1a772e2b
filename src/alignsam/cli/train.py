"""`alignsam train`: contrastive training of ALIGN on image-text pairs (from scratch or fine-tuning).

Single process:   alignsam train --train-data 'shards/{00000..00099}.tar' --arch align-demo --out runs/demo
Several (DDP):    torchrun --nproc-per-node 2 -m alignsam train --train-data ... --out runs/demo
Fine-tune:        alignsam train --init kakaobrain/align-base --train-data pairs.parquet --lr 1e-5 --out runs/ft
InternImage:      alignsam train --image-tower internimage-t --arch align-small --train-data ... --out runs/ii
Resume:           alignsam train --config runs/demo/train_config.json --resume auto

Every setting defaults to `alignsam.train.align.TrainConfig`'s (ALIGN's recipe); `--config` starts from a saved
`train_config.json` and the flags given override it. The result (a JSON summary) goes to stdout; progress,
loss, samples per second and the count of skipped or filtered samples to stderr. See docs/training.md.
"""

from __future__ import annotations

import argparse
from typing import Any

from alignsam.cli import _common as c


def _rule(text: str) -> str:
    from alignsam.errors import ConfigError
    from alignsam.train.align.data.filters import Rule

    try:
        return str(Rule.parse(text))
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_parser(subparsers: Any) -> None:
    # Every default is None, so that only the flags given override the configuration (see config_from_args).
    p = subparsers.add_parser(
        "train",
        help="train ALIGN on image-text pairs (webdataset shards, folder, CSV/parquet); DDP under torchrun",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="JSON", help="start from this train_config.json (flags override it)")
    p.add_argument("--out", help="run folder: checkpoints, metrics.jsonl, model/ (required without --config)")
    p.add_argument(
        "--resume", nargs="?", const="auto", metavar="auto|PATH", help="continue from the latest (or this) checkpoint"
    )

    g = p.add_argument_group("data")
    g.add_argument("--train-data", help="tar shard pattern ('{00000..00099}.tar', several joined by '::') or table")
    g.add_argument(
        "--data-kind", dest="kind", choices=("auto", "webdataset", "table"),
        help="webdataset shards or a table of image paths (default auto: from the path)",
    )  # fmt: skip
    g.add_argument("--image-key", help="table column with image paths (default image)")
    g.add_argument("--caption-key", help="table column with captions (default caption)")
    g.add_argument("--workers", type=c.count(0, c.max_threads()), help="DataLoader workers per process (default 2)")
    g.add_argument("--shuffle-buffer", type=int, help="samples in the shard shuffle buffer (default 2000)")
    g.add_argument("--max-length", type=int, help="caption tokens (default 64)")
    g.add_argument("--no-hflip", dest="hflip", action="store_const", const=False, help="no random horizontal flips")
    g.add_argument("--grayscale", type=c.real(), help="share of training images turned grey (default 0)")
    g.add_argument("--vocab-captions", type=int, help="captions read to train a vocabulary (default 100000)")

    f = p.add_argument_group("filters (thresholds inclusive; see docs/training.md)")
    f.add_argument("--filters", dest="filter_preset", choices=("none", "align", "coyo"), help="start from a preset")
    f.add_argument("--min-clip-similarity", type=c.real(), help="clip_similarity_vitb32 >= X")
    f.add_argument("--max-watermark", type=c.real(), help="watermark_score <= X")
    f.add_argument("--min-aesthetic", type=c.real(), help="aesthetic_score_laion_v2 >= X")
    f.add_argument("--max-nsfw", type=c.real(), help="nsfw_score_opennsfw2 <= X")
    f.add_argument("--max-faces", type=int, help="num_faces <= N")
    f.add_argument("--filter", dest="rules", type=_rule, action="append", help="'column OP number' (repeatable)")
    f.add_argument("--min-text-length", type=int, help="caption characters >= N")
    f.add_argument("--max-text-length", type=int, help="caption characters <= N")
    f.add_argument("--min-words", type=int, help="caption words >= N (ALIGN: 3)")
    f.add_argument("--max-words", type=int, help="caption words <= N (ALIGN: 20)")
    f.add_argument("--max-caption-repeats", type=int, help="drop captions shared by more than N samples (ALIGN: 10)")
    f.add_argument("--min-image-side", type=int, help="shorter image side >= N pixels")
    f.add_argument("--max-aspect-ratio", type=c.real(), help="longer / shorter side <= X")

    m = p.add_argument_group("model")
    m.add_argument("--init", help="pretrained ALIGN to fine-tune: hub id, folder or 'demo' (default: from scratch)")
    m.add_argument(
        "--arch", help="from scratch: architecture name (align-demo, align-small, align-base) or config.json"
    )
    m.add_argument(
        "--image-tower",
        help="from scratch: an image tower instead of the EfficientNet, with the --arch text tower: internimage-t, "
        "-s, -b, -l, -xl or an InternImage config.json (fresh weights), or a pretrained InternImage (hub id, "
        "folder, official .pth)",
    )
    m.add_argument("--tokenizer", help="from scratch: tokenizer folder or vocab.txt (default: train WordPiece)")
    m.add_argument("--vocab-size", type=int, help="size of the WordPiece vocabulary trained on the captions")
    m.add_argument("--image-size", type=int, help="crop size the model trains at (resize = size * 346 / 289)")
    m.add_argument("--resize-size", type=int, help="resize before the crop (default image size * 346 / 289)")
    m.add_argument(
        "--no-center-text", dest="center_text", action="store_const", const=False, help="plain projection init"
    )
    m.add_argument("--lock-image", action="store_const", const=True, help="freeze the image tower (and its BN stats)")
    m.add_argument("--lock-text", action="store_const", const=True, help="freeze BERT (the projection still trains)")
    m.add_argument("--sync-bn", action="store_const", const=True, help="batch norm over the global batch")

    o = p.add_argument_group("optimisation")
    o.add_argument("--opt", dest="optimizer", choices=("lamb", "adamw"), help="optimiser (default lamb)")
    o.add_argument("--lr", type=c.real(), help="peak learning rate (default 1e-3)")
    o.add_argument("--wd", dest="weight_decay", type=c.real(), help="weight decay (default 1e-5)")
    o.add_argument("--beta1", type=c.real(), help="first-moment decay of LAMB / AdamW (default 0.9)")
    o.add_argument("--beta2", type=c.real(), help="second-moment decay of LAMB / AdamW (default 0.999)")
    o.add_argument("--eps", type=c.real(), help="the optimiser's epsilon (default 1e-6)")
    o.add_argument("--warmup", dest="warmup_steps", type=int, help="linear warm-up steps (default 0)")
    o.add_argument("--schedule", choices=("linear", "cosine", "constant"), help="decay after warm-up (default linear)")
    o.add_argument("--final-lr", type=c.real(), help="learning rate at the last step (default 0)")
    o.add_argument("--grad-clip", type=c.real(), help="clip the gradient norm (default off)")
    o.add_argument("--min-temperature", type=c.real(), help="lower bound of the temperature (default 0.01)")
    o.add_argument("--max-temperature", type=c.real(), help="upper bound of the temperature (default none)")

    r = p.add_argument_group("run")
    r.add_argument("--steps", type=int, help="optimiser steps (default 1000)")
    r.add_argument("--batch-size", type=int, help="pairs per micro-batch per process (default 64)")
    r.add_argument("--accum-steps", type=int, help="micro-batches per step, with the feature cache (default 1)")
    r.add_argument("--precision", choices=("fp32", "bf16"), help="bf16 = bf16 autocast (default fp32)")
    r.add_argument(
        "--no-channels-last", dest="channels_last", action="store_const", const=False, help="NCHW image tower"
    )
    r.add_argument("--local-loss", action="store_const", const=True, help="B x G logits per process instead of G x G")
    r.add_argument("--label-smoothing", type=c.real(), help="default 0.1")
    r.add_argument("--loss-reduction", choices=("sum", "mean"), help="add (paper) or average the two directions")
    r.add_argument("--seed", type=int, help="initialisation, dropout and data order (default 0)")
    r.add_argument("--save-every", type=int, help="steps between checkpoints (default: only at the end)")
    r.add_argument("--keep-checkpoints", type=int, help="checkpoints kept (default 2)")
    r.add_argument("--log-every", type=int, help="steps between log lines (default 10)")
    r.add_argument(
        "--tensorboard", action="store_const", const=True, help="write TensorBoard scalars to OUT/tensorboard"
    )
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train (default auto: cuda if available)")
    r.add_argument("--threads", type=c.thread_count, help="CPU threads per process")
    r.add_argument("--max-seconds", type=c.real(), help="stop (with a checkpoint) after this much training time")
    r.add_argument("--recalibrate-bn", type=int, help="at the end, batch-norm statistics from N batches (precise BN)")
    r.add_argument(
        "-q", "--quiet", "--no-progress", dest="progress", action="store_const", const=False, help="no progress bar"
    )
    p.set_defaults(run=run)


_FILTER_FIELDS = (
    "min_clip_similarity",
    "max_watermark",
    "min_aesthetic",
    "max_nsfw",
    "max_faces",
    "min_text_length",
    "max_text_length",
    "min_words",
    "max_words",
    "max_caption_repeats",
    "min_image_side",
    "max_aspect_ratio",
)
_DATA_FIELDS = (
    "train_data",
    "kind",
    "image_key",
    "caption_key",
    "workers",
    "shuffle_buffer",
    "max_length",
    "hflip",
    "grayscale",
    "vocab_captions",
)
_MODEL_FIELDS = (
    "init",
    "arch",
    "image_tower",
    "tokenizer",
    "vocab_size",
    "image_size",
    "resize_size",
    "center_text",
    "lock_image",
    "lock_text",
    "sync_bn",
)
_OPTIM_FIELDS = (
    "optimizer",
    "lr",
    "weight_decay",
    "eps",
    "warmup_steps",
    "schedule",
    "final_lr",
    "grad_clip",
    "min_temperature",
    "max_temperature",
)
_RUN_FIELDS = (
    "out",
    "steps",
    "batch_size",
    "accum_steps",
    "precision",
    "channels_last",
    "local_loss",
    "label_smoothing",
    "loss_reduction",
    "seed",
    "save_every",
    "keep_checkpoints",
    "log_every",
    "tensorboard",
    "device",
    "threads",
    "max_seconds",
    "recalibrate_bn",
    "progress",
)


def _given(args: argparse.Namespace, fields: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}


def config_from_args(args: argparse.Namespace) -> Any:
    """The `TrainConfig` the command line describes (`--config` first, then the flags given)."""
    import dataclasses

    from alignsam.errors import InputError
    from alignsam.train.align import DataConfig, FilterConfig, TrainConfig

    if args.config:
        base = TrainConfig.load(args.config)
    else:
        if not args.train_data or not args.out:
            raise InputError("--train-data and --out are required (or --config with a saved train_config.json).")
        base = TrainConfig(out=args.out, data=DataConfig(args.train_data))

    filters = base.data.filters
    if args.filter_preset is not None:
        presets = {"none": FilterConfig(), "align": FilterConfig.align_paper(), "coyo": FilterConfig.coyo()}
        filters = presets[args.filter_preset]
    filters = dataclasses.replace(filters, **_given(args, _FILTER_FIELDS))
    if args.rules:
        filters = dataclasses.replace(filters, rules=(*filters.rules, *args.rules))

    optim_changes = _given(args, _OPTIM_FIELDS)
    if args.beta1 is not None or args.beta2 is not None:
        b1, b2 = base.optim.betas
        optim_changes["betas"] = (
            args.beta1 if args.beta1 is not None else b1,
            args.beta2 if args.beta2 is not None else b2,
        )
    return dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, **_given(args, _DATA_FIELDS), filters=filters),
        model=dataclasses.replace(base.model, **_given(args, _MODEL_FIELDS)),
        optim=dataclasses.replace(base.optim, **optim_changes),
        **_given(args, _RUN_FIELDS),
    )


def run(args: argparse.Namespace) -> int:
    import json
    import os

    from alignsam.train.align import train

    summary = train(config_from_args(args), resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary
        print(json.dumps(summary, indent=2))
    return 0
