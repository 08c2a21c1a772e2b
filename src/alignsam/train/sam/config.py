"""The fine-tuning configuration: small frozen dataclasses, validated on creation, saved beside every run.

`FinetuneConfig` holds what to train (a pretrained model or an architecture from scratch, and which towers
to freeze), the data, a `PromptConfig` (how interactive prompts are simulated), a `LossConfig` (the paper's
weights) and the optimiser settings. Defaults follow the SAM paper where it has one: focal and dice loss
20:1 plus the IoU head's mean-squared error, a box or a point to start, later clicks in the previous
error, boxes jittered by 10% of their side (at most 20 px on a 1024 input), AdamW with weight decay 0.1.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from alignsam.errors import ConfigError
from alignsam.io.files import write_text_atomic
from alignsam.validation import check_choice, check_numbers, require

Tower = Literal["image_encoder", "prompt_encoder", "mask_decoder"]
TOWERS: tuple[Tower, ...] = get_args(Tower)
CacheKind = Literal["off", "memory", "disk"]
Precision = Literal["fp32", "bf16"]
ScheduleName = Literal["linear", "cosine", "constant"]


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    """How interactive prompts are simulated during training (SAM paper, appendix A).

    Args:
        rounds: prompt rounds per step: the first prompt, then `rounds - 1` clicks each placed in the error of
            the previous prediction (a positive point in a missed part, a negative one in a false one), with
            the previous low-resolution logits as mask input. The paper uses 11; a few already teach the
            model to use corrections.
        box_share: share of objects whose first prompt is a box (the rest start from one point inside).
        box_noise: standard deviation of each box coordinate's jitter, as a share of the box side.
        box_noise_max: largest jitter in pixels of a 1024 input (scaled with the model's input size).
        max_masks: objects per image per step (a random subset when an image has more).
    """

    rounds: int = 3
    box_share: float = 0.5
    box_noise: float = 0.1
    box_noise_max: float = 20.0
    max_masks: int = 16

    def __post_init__(self) -> None:
        check_numbers(self, "rounds", "max_masks", low=1)
        check_numbers(self, "box_share", low=0, high=1)
        check_numbers(self, "box_noise", "box_noise_max", low=0)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The paper's loss: `focal_weight * focal + dice_weight * dice` on the masks, plus `iou_weight * MSE`
    between the predicted IoU and the IoU the mask actually has (focal:dice = 20:1, IoU weight 1)."""

    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    focal_alpha: float = 0.25  # the share of the positive class, as in Lin et al.; -1 disables it
    focal_gamma: float = 2.0
    # Targets: each low-resolution cell's coverage (sub-cell edges, calibrated logits at the boundary), or
    # the thresholded mask (coverage >= 0.5; sharper logits, so higher stability scores in the automatic
    # mask generator).
    binary_targets: bool = False

    def __post_init__(self) -> None:
        check_numbers(self, "focal_weight", "dice_weight", "iou_weight", "focal_gamma", low=0)
        require(
            self.focal_alpha == -1 or 0.0 <= self.focal_alpha <= 1.0,
            f"LossConfig.focal_alpha must be in 0..1 or -1 (off), got {self.focal_alpha}.",
        )


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning (or from-scratch) run of SAM.

    Args:
        out: the run folder (config, checkpoints, metrics, the final `model/`).
        train_data: COCO JSON files and/or folders (see `alignsam.train.sam.data.open_dataset`).
        val_data: held-out data for the evaluation (mean IoU from one point, one box, several points).
        image_root: where COCO `file_name`s are found (default: beside the JSON, or its `images/` folder).
        init: a model to start from: hub id, folder, `.pth`, or `demo`; None builds `arch` from scratch.
        arch: from scratch: `demo`, `vit_b`, `vit_l`, `vit_h`, or a `config.json` of a `SamConfig`.
        freeze: towers whose weights stay as they are (`image_encoder`, `prompt_encoder`, `mask_decoder`).
        cache: with a frozen image encoder, compute each image's embedding once and keep it in `memory` or
            on `disk` (a memory-mapped file under `out/cache/`, reused by later runs on the same data and
            weights), so that every later epoch costs only the prompt encoder and decoder.
        steps, batch_size: optimiser steps, images per step (each with up to `prompts.max_masks` objects).
        lr, warmup, schedule, final_lr, weight_decay, betas, grad_clip: AdamW and its schedule.
        precision: `bf16` runs the forward pass under bfloat16 autocast (the loss stays in float32).
        seed: model initialisation, data order and prompts (all derived from it and the step).
        save_every, keep_checkpoints, log_every, eval_every: in steps (0: never; the last step always saves).
        val_samples: images of `val_data` the evaluation reads (0: all).
        eval_points: clicks of the "several points" evaluation.
        max_seconds: stop early (with a checkpoint and the final model) after this long.
        threads: CPU threads (None: torch's default). workers: DataLoader worker processes.
    """

    out: str
    train_data: tuple[str, ...]
    val_data: tuple[str, ...] = ()
    image_root: str | None = None
    init: str | None = None
    arch: str | None = None
    freeze: tuple[Tower, ...] = ()
    cache: CacheKind = "off"
    steps: int = 1000
    batch_size: int = 8
    prompts: PromptConfig = dataclasses.field(default_factory=PromptConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    lr: float = 1e-4
    warmup: int = 100
    schedule: ScheduleName = "cosine"
    final_lr: float = 0.0
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0
    precision: Precision = "fp32"
    seed: int = 0
    save_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    eval_every: int = 0
    val_samples: int = 200
    eval_points: int = 3
    max_seconds: float | None = None
    threads: int | None = None
    workers: int = 0

    def __post_init__(self) -> None:
        for name in ("train_data", "val_data", "freeze", "betas"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, name, tuple(value))
        if isinstance(self.prompts, Mapping):
            object.__setattr__(self, "prompts", PromptConfig(**self.prompts))
        if isinstance(self.loss, Mapping):
            object.__setattr__(self, "loss", LossConfig(**self.loss))
        require(bool(self.out), "FinetuneConfig.out is empty: name the run folder.")
        require(bool(self.train_data), "FinetuneConfig.train_data is empty: name a COCO JSON file or a folder.")
        require(
            (self.init is None) != (self.arch is None),
            "Give exactly one of init (a model to fine-tune) and arch (an architecture to train from scratch).",
        )
        unknown = [t for t in self.freeze if t not in TOWERS]
        require(not unknown, f"FinetuneConfig.freeze: unknown towers {unknown}; choose from {list(TOWERS)}.")
        require(len(set(self.freeze)) < len(TOWERS), "FinetuneConfig.freeze leaves nothing to train.")
        for name, kind in (("cache", CacheKind), ("precision", Precision), ("schedule", ScheduleName)):
            check_choice(self, name, kind)
        require(
            self.cache == "off" or "image_encoder" in self.freeze,
            "FinetuneConfig.cache needs a frozen image encoder (freeze=('image_encoder',)): the embeddings of a "
            "trained encoder change at every step.",
        )
        check_numbers(self, "steps", "batch_size", "keep_checkpoints", "eval_points", low=1)
        check_numbers(self, "warmup", "save_every", "log_every", "eval_every", "val_samples", "workers", "seed", low=0)
        check_numbers(self, "lr", "final_lr", "weight_decay", low=0)
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "FinetuneConfig.betas: two in [0, 1).")
        check_numbers(self, "grad_clip", "max_seconds", low=0, optional=True)
        check_numbers(self, "threads", low=1, optional=True)

    # --- JSON -----------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for name in ("train_data", "val_data", "freeze", "betas"):
            out[name] = list(out[name])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FinetuneConfig:
        """Inverse of `to_dict`; unknown keys are an error that names them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        require(not unknown, f"Unknown fine-tuning settings {unknown}; known: {sorted(names)}.")
        try:
            return cls(**dict(data))
        except TypeError as err:
            raise ConfigError(f"Bad fine-tuning settings: {err}") from err

    def save(self, folder: str | os.PathLike[str]) -> Path:
        path = Path(folder) / "finetune_config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FinetuneConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as err:
            raise ConfigError(f"Cannot read the fine-tuning settings '{path}': {err}") from err
