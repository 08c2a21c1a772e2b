"""The training configuration: small frozen dataclasses, validated on creation, saved as JSON beside every run.

`TrainConfig` holds a `DataConfig` (what to read and how), a `ModelSpec` (what to train: a pretrained model
to fine-tune, or an architecture and tokenizer from scratch, and what to freeze) and an `OptimConfig`
(optimiser and schedule). Defaults follow ALIGN's recipe where it has one: LAMB, weight decay 1e-5, linear
warm-up then linear decay, label smoothing 0.1, the two loss directions summed, 64 caption tokens.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from alignsam.errors import ConfigError
from alignsam.io.files import write_text_atomic
from alignsam.train.align.data.filters import FilterConfig
from alignsam.validation import check_choice, check_numbers

Precision = Literal["fp32", "bf16"]
OptimizerName = Literal["lamb", "adamw"]
ScheduleName = Literal["linear", "cosine", "constant"]
DataKind = Literal["auto", "webdataset", "table"]
Reduction = Literal["mean", "sum"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What to train on.

    Args:
        train_data: tar shards as a brace pattern (`data/{00000..00099}.tar`, several joined by `::`), or a
            table: a folder, `.csv`, `.tsv` or `.parquet` of image paths and captions.
        kind: "auto" tells shards from tables by the `.tar` suffix.
        image_key, caption_key: the table columns holding the image path and the caption.
        workers: DataLoader worker processes per training process (0: read in the training process).
        shuffle_buffer: samples in the shuffle buffer of shard data (tables are permuted whole each epoch).
        max_length: caption tokens, [CLS] and [SEP] included (ALIGN: 64).
        hflip: random horizontal flips (ALIGN: yes).
        grayscale: share of training images turned grey (ALIGN: 0; open_clip's `gray_scale_prob`).
        filters: which samples to keep (`FilterConfig`).
        vocab_captions: captions read to train a WordPiece vocabulary, when one is trained.
    """

    train_data: str
    kind: DataKind = "auto"
    image_key: str = "image"
    caption_key: str = "caption"
    workers: int = 2
    shuffle_buffer: int = 2000
    max_length: int = 64
    hflip: bool = True
    grayscale: float = 0.0
    filters: FilterConfig = dataclasses.field(default_factory=FilterConfig)
    vocab_captions: int = 100_000

    def __post_init__(self) -> None:
        if isinstance(self.filters, Mapping):
            object.__setattr__(self, "filters", FilterConfig.from_dict(self.filters))
        if not self.train_data:
            raise ConfigError("DataConfig.train_data is empty: name shards, a table or a folder.")
        check_choice(self, "kind", DataKind)
        check_numbers(self, "workers", low=0, optional=True)
        check_numbers(self, "shuffle_buffer", "vocab_captions", low=1, optional=True)
        check_numbers(self, "max_length", low=2, optional=True)
        check_numbers(self, "grayscale", low=0, high=1)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What to train.

    Args:
        init: a pretrained ALIGN to start from (hub id such as `kakaobrain/align-base`, folder, or `demo`;
            also a model trained with another image tower); None trains from scratch.
        arch: from scratch: an architecture name (`alignsam.train.align.models.ARCHITECTURES`) or a `config.json`.
        image_tower: from scratch: an image tower instead of the architecture's EfficientNet (its text tower
            and `projection_dim` stay; an image projection maps the tower's width to it): an InternImage
            architecture with fresh weights (`internimage-t`, `-s`, `-b`, `-l`, `-xl`, or an InternImage
            `config.json`), or a pretrained InternImage (hub id, folder, official `.pth`) without its
            classification layer (`alignsam.tools.towers.image_tower`). Its image size is the default crop.
        tokenizer: from scratch: a tokenizer folder or `vocab.txt`; None trains a WordPiece vocabulary of
            `vocab_size` tokens on the training captions.
        image_size: the crop size the model trains and runs at; None keeps the architecture's (from
            scratch) or the processor's (fine-tuning).
        resize_size: the size images are resized to before the (random or centre) crop; None is ALIGN's
            ratio, `round(image_size * 346 / 289)`.
        center_text: from scratch: initialise the text projection's bias so that the mean text embedding of
            the first training captions is zero (see `models.center_text_projection`).
        lock_image, lock_text: freeze a tower (its weights and its batch-norm statistics).
        sync_bn: batch-norm statistics over the global batch of all processes.
    """

    init: str | None = None
    arch: str = "align-base"
    image_tower: str | None = None
    tokenizer: str | None = None
    vocab_size: int = 8000
    image_size: int | None = None
    resize_size: int | None = None
    center_text: bool = True
    lock_image: bool = False
    lock_text: bool = False
    sync_bn: bool = False

    def __post_init__(self) -> None:
        check_numbers(self, "vocab_size", low=100, optional=True)
        check_numbers(self, "image_size", "resize_size", low=16, optional=True)
        if self.resize_size is not None and self.image_size is not None and self.resize_size < self.image_size:
            raise ConfigError(f"resize_size {self.resize_size} is smaller than the crop, image_size {self.image_size}.")
        if self.init is not None and self.image_tower is not None:
            raise ConfigError("image_tower builds a new model; a pretrained one (init) keeps its own image tower.")
        if self.lock_image and self.lock_text:
            raise ConfigError("lock_image and lock_text together leave only the temperature and projection to train.")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule.

    Args:
        optimizer: "lamb" (ALIGN) or "adamw".
        lr: peak learning rate (ALIGN: 1e-3 at batch 16384).
        weight_decay: on weight matrices and convolutions only; never on norms, biases or the temperature.
        warmup_steps: linear warm-up from 0.
        schedule: decay after warm-up, to `final_lr` at the last step.
        grad_clip: clip the global gradient norm (None: off).
        min_temperature: the temperature is kept at or above this after each step (open_clip's logit-scale
            clamp at 100 is 0.01).
        max_temperature: and at or below this (None: no bound); equal bounds fix the temperature.
    """

    optimizer: OptimizerName = "lamb"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    warmup_steps: int = 0
    schedule: ScheduleName = "linear"
    final_lr: float = 0.0
    grad_clip: float | None = None
    min_temperature: float = 0.01
    max_temperature: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.max_temperature is not None and self.max_temperature < self.min_temperature:
            raise ConfigError(f"max_temperature {self.max_temperature} < min_temperature {self.min_temperature}.")
        check_choice(self, "optimizer", OptimizerName)
        check_choice(self, "schedule", ScheduleName)
        rates = ("lr", "weight_decay", "eps", "final_lr", "grad_clip", "min_temperature")
        check_numbers(self, *rates, "warmup_steps", low=0, optional=True)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"OptimConfig.betas must be two numbers in [0, 1), got {self.betas}.")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A training run.

    Args:
        out: the run folder (checkpoints, `train_config.json`, `metrics.jsonl`, the final `model/`).
        steps: optimiser steps.
        batch_size: pairs per micro-batch per process; the global batch (the negatives every pair is
            contrasted with) is `batch_size * accum_steps * world_size`.
        accum_steps: micro-batches per step, with the feature cache (see `trainer.py`): the same loss and
            gradients as one big batch, at the cost of a second forward pass.
        precision: "bf16" runs the towers under bf16 autocast (the loss stays float32).
        channels_last: run the image tower in channels-last memory format (oneDNN's fast layout on CPUs).
        local_loss: each process scores only its own rows against the gathered batch (see `align.loss`).
        label_smoothing, loss_reduction: ALIGN's loss (0.1; "sum" adds the two directions as the paper).
        seed: model initialisation, dropout and data order.
        save_every: steps between checkpoints (0: only at the end); `keep_checkpoints` are kept.
        log_every: steps between log lines (`metrics.jsonl`, TensorBoard).
        tensorboard: also write TensorBoard event files to `out/tensorboard`.
        device: "auto", "cpu" or "cuda"; threads: CPU threads per process (None: torch's default).
        max_seconds: stop early (with a checkpoint) after this much training time.
        recalibrate_bn: at the end, recompute batch-norm running statistics as the plain average over this
            many training batches ("precise BN"; 0: keep the running averages).
    """

    out: str
    data: DataConfig
    model: ModelSpec = dataclasses.field(default_factory=ModelSpec)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    steps: int = 1000
    batch_size: int = 64
    accum_steps: int = 1
    precision: Precision = "fp32"
    channels_last: bool = True
    local_loss: bool = False
    label_smoothing: float = 0.1
    loss_reduction: Reduction = "sum"
    seed: int = 0
    save_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 10
    tensorboard: bool = False
    device: str = "auto"
    threads: int | None = None
    max_seconds: float | None = None
    recalibrate_bn: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name, cls in (("data", DataConfig), ("model", ModelSpec), ("optim", OptimConfig)):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, _from_dict(cls, value))
        check_choice(self, "precision", Precision)
        check_choice(self, "loss_reduction", Reduction)
        check_numbers(
            self, "steps", "batch_size", "accum_steps", "keep_checkpoints", "log_every", "threads", low=1, optional=True
        )
        check_numbers(self, "seed", "save_every", "max_seconds", "recalibrate_bn", low=0, optional=True)
        check_numbers(self, "label_smoothing", low=0, high=1, below=True)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["data"]["filters"] = self.data.filters.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        return _from_dict(cls, data)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        path = Path(directory) / "train_config.json"
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"Cannot read the training configuration '{path}': {err}") from err
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"Unknown {cls.__name__} settings {unknown}; known: {sorted(names)}.")
    return cls(**data)
