"""The training program: ALIGN's contrastive recipe, one loop that reads top to bottom (`Trainer.fit`).

Per step: set the learning rate (a pure function of the step), take `accum_steps` micro-batches, compute the
loss over the global batch and its gradients (`contrastive_step`), clip, step the optimiser, clamp the
temperature, log, checkpoint.

Gradient accumulation with a contrastive loss. Accumulating the gradients of separate micro-batch losses
would shrink the set of negatives to one micro-batch. `contrastive_step` instead uses open_clip's feature
cache: a first pass embeds every micro-batch without a graph; then each micro-batch is embedded again with
a graph, its rows are put in place of their cached copies, and the loss over *all* cached rows is
back-propagated. Summed over micro-batches this is exactly the gradient of the big-batch loss, for the
price of one extra forward pass. Two details make it exact here, where open_clip is approximate:
- the random state (dropout, drop-path) is saved before each first-pass embedding and restored before its
  second pass, so both passes draw the same masks, and batch-norm running statistics are restored after
  the first pass, so they move once per micro-batch as without the cache;
- the temperature's gradient is taken from one pass only (it would otherwise count `accum_steps` times).
Batch norm still normalises each micro-batch with its own statistics (Kakao's COYO-ALIGN trains with
`virtual_batch_size=16` ghost batch norm on purpose), so with batch norm in training mode the result equals
a big batch only up to those statistics; `tests/train/test_step.py` checks the equality with frozen ones.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from alignsam.align.modeling.align import AlignModel
from alignsam.align.modeling.config import AlignConfig
from alignsam.align.modeling.loss import distributed_align_loss
from alignsam.align.processing import AlignProcessor
from alignsam.errors import ConfigError
from alignsam.train.align import models
from alignsam.train.align.config import TrainConfig
from alignsam.train.align.data.filters import SampleFilter, merge_counts, repeated_captions
from alignsam.train.align.data.pipeline import LoaderState, PairStream, ResumableLoader
from alignsam.train.align.data.sources import Source, open_source
from alignsam.train.align.data.transforms import TrainTransform
from alignsam.train.align.distributed import (
    World,
    all_gather_objects,
    convert_sync_batchnorm,
    mean_over_ranks,
    setup,
    teardown,
)
from alignsam.train.align.optim import build_optimizer
from alignsam.train.core import checkpoint as ckpt
from alignsam.train.core.loop import Cadence, Clock, optimizer_step, set_learning_rate, training_state
from alignsam.train.core.metrics import RunLog

# Settings a resumed run must share with the run that wrote the checkpoint (the rest may change).
_RESUME_INVARIANT = ("data", "model", "optim", "batch_size", "accum_steps", "precision", "local_loss", "seed")


class DualEncoder(nn.Module):
    """What DDP wraps: the model's two towers, returning L2-normalised float32 embeddings and the temperature.

    Forward: `pixel_values` `B x 3 x H x W`, `input_ids` and `attention_mask` `B x L` ->
    (text `B x D`, image `B x D`, temperature 0-d).
    """

    def __init__(self, model: AlignModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        text = self.model.encode_text(input_ids, attention_mask)
        image = self.model.encode_image(pixel_values)
        # Normalised in float32: under bf16 autocast the towers run in bf16, the loss must not.
        return F.normalize(text.float(), dim=-1), F.normalize(image.float(), dim=-1), self.model.temperature


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def contrastive_step(
    encoder: nn.Module,
    micro_batches: Sequence[dict[str, torch.Tensor]],
    *,
    precision: str = "fp32",
    local_loss: bool = False,
    label_smoothing: float = 0.1,
    reduction: str = "sum",
) -> torch.Tensor:
    """Forward and backward of one optimiser step; gradients are left in `.grad`. Returns the loss (0-d).

    Args:
        encoder: a `DualEncoder`, possibly wrapped in `DistributedDataParallel`.
        micro_batches: dicts with `pixel_values` `B x 3 x H x W`, `input_ids` and `attention_mask` `B x L`,
            on the encoder's device. More than one uses the feature cache (see the module docstring).
    """
    loss_fn = partial(
        distributed_align_loss,
        label_smoothing=label_smoothing,
        reduction=reduction,  # type: ignore[arg-type]
        local_loss=local_loss,
    )
    device = next(encoder.parameters()).device
    autocast = partial(_autocast, device, precision)

    def embed(module: nn.Module, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with autocast():
            return module(b["pixel_values"], b["input_ids"], b["attention_mask"])

    if len(micro_batches) == 1:
        text, image, temperature = embed(encoder, micro_batches[0])
        loss = loss_fn(text, image, temperature)
        loss.backward()
        return loss.detach()

    # Pass 1: every micro-batch's embeddings, without a graph.
    plain = encoder.module if isinstance(encoder, DistributedDataParallel) else encoder
    buffers = [(b, b.clone()) for b in plain.buffers()]
    states, texts, images = [], [], []
    with torch.no_grad():
        for b in micro_batches:
            states.append(ckpt.rng_state())
            text, image, _ = embed(plain, b)
            texts.append(text)
            images.append(image)
    for buffer, saved in buffers:  # batch-norm statistics move in pass 2 only
        buffer.copy_(saved)

    # Pass 2: one micro-batch at a time with a graph, inside the cached global batch.
    loss = torch.zeros(())
    for j, b in enumerate(micro_batches):
        ckpt.set_rng_state(states[j])  # the same dropout masks as in pass 1
        last = j == len(micro_batches) - 1
        no_sync = isinstance(encoder, DistributedDataParallel) and not last
        with encoder.no_sync() if no_sync else contextlib.nullcontext():  # type: ignore[operator]
            text, image, temperature = embed(encoder, b)
            all_text = torch.cat([*texts[:j], text, *texts[j + 1 :]])  # k*B x D, rows j*B.. live
            all_image = torch.cat([*images[:j], image, *images[j + 1 :]])
            loss = loss_fn(all_text, all_image, temperature if last else temperature.detach())
            loss.backward()
    return loss.detach()


def recalibrate_batch_norm(model: AlignModel, batches: Iterable[dict[str, torch.Tensor]]) -> int:
    """Recompute the running statistics of the image tower's batch norms in training mode ("precise BN").

    The statistics become the plain average over `batches` (dicts with `pixel_values` `B x 3 x H x W`)
    under the final weights, instead of an exponential average over weights that kept changing. Batch norms
    in evaluation mode (a locked tower) are left alone. Returns the number of batches used.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # None: cumulative average
    seen = 0
    with torch.no_grad():
        for batch in batches:
            model.encode_image(batch["pixel_values"])
            seen += 1
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    return seen


class Trainer:
    """Trains ALIGN as a `TrainConfig` says; `fit()` runs it and returns a JSON-ready summary.

    Args:
        config: the run.
        world: this process's place (`distributed.setup()`); a single process by default.
        resume: "auto" (the run folder's latest checkpoint, if any), a checkpoint path, or None (start over).
    """

    def __init__(self, config: TrainConfig, world: World | None = None, resume: str | None = None) -> None:
        self.config = config
        self.world = world or World()
        self.out = Path(config.out)
        self.history: list[tuple[int, float]] = []  # (step, this process's loss) of every step run here
        if config.threads:
            torch.set_num_threads(config.threads)
        state = self._resume_state(resume)
        self.source: Source = open_source(
            config.data.train_data, config.data.kind, config.data.image_key, config.data.caption_key
        )
        self.model, self.processor = self._build_model(state)
        self.step = int(state["step"]) if state else 0
        self.optimizer = build_optimizer(self.model, config.optim)
        if state:
            self.optimizer.load_state_dict(state["optimizer"])
        encoder: nn.Module = DualEncoder(self.model)
        if self.world.distributed:
            device_ids = [self.world.device] if self.world.device.type == "cuda" else None
            encoder = DistributedDataParallel(encoder, device_ids=device_ids)
        self.encoder = encoder
        self.loader = self._build_loader(state)
        if state:
            ckpt.set_rng_state(state["rng"][self.world.rank])
        else:  # dropout differs between processes; model initialisation was seeded before
            torch.manual_seed(config.seed * 1_000_003 + self.world.rank + 1)

    # --- set-up -----------------------------------------------------------------------------------------

    def _resume_state(self, resume: str | None) -> dict[str, Any] | None:
        found = ckpt.resume_state(
            self.out,
            resume,
            self.config.to_dict(),
            lambda d: TrainConfig.from_dict(d).to_dict(),
            _RESUME_INVARIANT,
            main=self.world.is_main,
        )
        if found is None:
            return None
        path, state = found
        if len(state["data"]) != self.world.world_size:
            raise ConfigError(
                f"'{path}' was written by {len(state['data'])} processes; resume with the same number "
                f"(now {self.world.world_size}) so that every data stream continues where it stopped."
            )
        self._log(f"resuming from {path} at step {state['step']}")
        return state

    def _captions(self) -> Iterator[str]:
        limit = self.config.data.vocab_captions
        for i, caption in enumerate(self.source.captions()):
            if i >= limit:
                return
            yield caption

    def _build_model(self, state: dict[str, Any] | None) -> tuple[AlignModel, AlignProcessor]:
        spec, processor_dir = self.config.model, self.out / "processor"
        if state:
            model = models.from_config(AlignConfig.from_dict(state["model_config"]))
            model.load_state_dict(state["model"])
            processor = AlignProcessor.from_pretrained(processor_dir)
        else:
            # Rank 0 decides the processor (it may train a vocabulary); the others read what it wrote.
            if self.world.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                self.config.save(self.out)
                model, processor = models.build(spec, self._captions, self.config.seed)
                processor.save_pretrained(processor_dir)
            self._barrier()
            if not self.world.is_main:
                processor = AlignProcessor.from_pretrained(processor_dir)
                model, _ = models.build(spec, self._captions, self.config.seed, tokenizer=processor.tokenizer)
        self.frozen = models.freeze(model, spec)
        if spec.sync_bn and self.world.distributed:
            model = convert_sync_batchnorm(model, self.world.device)  # type: ignore[assignment]
        model = model.to(self.world.device)
        if self.config.channels_last:  # the convolutions' fast layout; weights are saved contiguous
            model.vision_model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return model, processor

    def _build_loader(self, state: dict[str, Any] | None) -> ResumableLoader:
        data = self.config.data
        banned: frozenset[str] = frozenset()
        if data.filters.max_caption_repeats is not None:
            banned = repeated_captions(self.source.captions(), data.filters.max_caption_repeats)
        assert self.processor.tokenizer is not None
        stream = PairStream(
            self.source,
            tokenizer=self.processor.tokenizer,
            transform=TrainTransform(self.processor.image_processor, hflip=data.hflip, grayscale=data.grayscale),
            sample_filter=SampleFilter(data.filters, banned),
            batch_size=self.config.batch_size,
            seed=self.config.seed,
            rank=self.world.rank,
            world_size=self.world.world_size,
            workers=data.workers,
            shuffle_buffer=data.shuffle_buffer,
            max_length=data.max_length,
            state=LoaderState.from_dict(state["data"][self.world.rank]) if state else None,
        )
        return ResumableLoader(stream, data.workers)

    # --- the loop ---------------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train until `config.steps` (or `max_seconds`); checkpoint; export the model to `out/model`."""
        cfg, device = self.config, self.world.device
        global_batch = cfg.batch_size * cfg.accum_steps * self.world.world_size
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        cadence = Cadence(cfg.steps, cfg.log_every, cfg.save_every, cfg.max_seconds)
        log = RunLog(
            self.out, total_steps=cfg.steps, start_step=self.step, desc="train", progress=cfg.progress,
            tensorboard=cfg.tensorboard, main=self.world.is_main,
        )  # fmt: skip
        self.model.train()
        for module in self.frozen:
            module.eval()

        batches = iter(self.loader)
        start_step, clock = self.step, Clock(cfg.max_seconds, self._agree)
        window_loss, window_steps, window_start = torch.zeros(()), 0, 0.0
        metrics: dict[str, Any] = {}
        stop_early = False
        while self.step < cfg.steps and not stop_early:
            o = cfg.optim
            lr = set_learning_rate(
                self.optimizer, self.step, peak=o.lr, warmup=o.warmup_steps, total=cfg.steps, schedule=o.schedule,
                final=o.final_lr,
            )  # fmt: skip
            micro = [_to_device(next(batches), device, cfg.channels_last) for _ in range(cfg.accum_steps)]
            self.optimizer.zero_grad(set_to_none=True)
            loss = contrastive_step(
                self.encoder,
                micro,
                precision=cfg.precision,
                local_loss=cfg.local_loss,
                label_smoothing=cfg.label_smoothing,
                reduction=cfg.loss_reduction,
            )
            optimizer_step(self.optimizer, trainable, o.grad_clip)
            with torch.no_grad():  # a temperature near 0 would blow the logits up
                self.model.temperature.clamp_(min=o.min_temperature, max=o.max_temperature)
            self.step += 1
            self.history.append((self.step, float(loss)))
            window_loss, window_steps = window_loss + loss.cpu(), window_steps + 1

            stop_early = clock.out_of_time()
            if cadence.log_due(self.step) or stop_early:
                now = clock.elapsed()
                metrics = {
                    "step": self.step,
                    "loss": round(float(mean_over_ranks(window_loss / window_steps)), 6),
                    "lr": lr,
                    "temperature": round(float(self.model.temperature.detach()), 6),
                    "samples_per_second": round(window_steps * global_batch / (now - window_start), 2),
                    "elapsed": round(now, 2),
                    "data": self._data_counts(),
                }
                self._report(metrics, log)
                window_loss, window_steps, window_start = torch.zeros(()), 0, now
            if cadence.save_due(self.step):
                self.save_checkpoint(metrics)
            log.advance()

        seconds = clock.elapsed()
        if cfg.recalibrate_bn:
            recalibrate_batch_norm(
                self.model, (_to_device(next(batches), device, cfg.channels_last) for _ in range(cfg.recalibrate_bn))
            )
        checkpoint = self.save_checkpoint(metrics)
        model_dir = self.export()
        log.close()
        steps_run = self.step - start_step
        return {
            "out": str(self.out),
            "model": str(model_dir),
            "checkpoint": str(checkpoint),
            "steps": self.step,
            "steps_this_run": steps_run,
            "stopped_early": stop_early,
            "world_size": self.world.world_size,
            "global_batch": global_batch,
            "seconds": round(seconds, 2),
            "samples_per_second": round(steps_run * global_batch / max(seconds, 1e-9), 2),
            "final_loss": metrics.get("loss"),
            "temperature": round(float(self.model.temperature.detach()), 6),
            "data": self._data_counts(),
        }

    # --- checkpoints and export -------------------------------------------------------------------------

    def save_checkpoint(self, metrics: dict[str, Any] | None = None) -> Path:
        """Write `out/checkpoints/step-N.pt` (a collective: every process must call it)."""
        data = all_gather_objects(self.loader.state().to_dict())
        rng = all_gather_objects(ckpt.rng_state())
        path = ckpt.checkpoint_path(self.out, self.step)
        if self.world.is_main:
            payload = training_state(
                self.step, self.config.to_dict(), self.model, self.optimizer, data=data, rng=rng, metrics=metrics or {}
            )
            ckpt.save_checkpoint(path, payload, keep=self.config.keep_checkpoints)
        self._barrier()
        return path

    def export(self) -> Path:
        """The trained model as a Hugging Face folder, `out/model` (config, safetensors, tokenizer, processor)."""
        out = self.out / "model"
        if self.world.is_main:
            self.model.save_pretrained(out)
            self.processor.save_pretrained(out)
        self._barrier()
        return out

    # --- helpers ----------------------------------------------------------------------------------------

    def _barrier(self) -> None:
        if self.world.distributed:
            dist.barrier()

    def _agree(self, flag: bool) -> bool:
        """True on every process if it is true on any (so all stop at the same step)."""
        if not self.world.distributed:
            return flag
        t = torch.tensor([float(flag)], device=self.world.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def _data_counts(self) -> dict[str, int]:
        return merge_counts(*all_gather_objects(self.loader.counts()))  # type: ignore[arg-type]

    def _log(self, message: str) -> None:
        if self.world.is_main:
            print(f"alignsam train: {message}", file=sys.stderr, flush=True)

    def _report(self, metrics: dict[str, Any], log: RunLog) -> None:
        dropped = sum(metrics["data"].values())
        postfix = {
            "loss": f"{metrics['loss']:.4f}",
            "lr": f"{metrics['lr']:.2e}",
            "T": f"{metrics['temperature']:.4f}",
            "sps": f"{metrics['samples_per_second']:.0f}",
            "dropped": str(dropped),
        }
        scalars = {f"train/{name}": metrics[name] for name in ("loss", "lr", "temperature", "samples_per_second")}
        log.log(metrics, postfix=postfix, scalars={**scalars, "data/dropped": dropped})


def _to_device(batch: dict[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, torch.Tensor]:
    out = {k: batch[k].to(device, non_blocking=True) for k in ("pixel_values", "input_ids", "attention_mask")}
    if channels_last:
        out["pixel_values"] = out["pixel_values"].contiguous(memory_format=torch.channels_last)
    return out


def train(config: TrainConfig, resume: str | None = None) -> dict[str, Any]:
    """Run a training from Python (also under `torchrun`): set up the process group, fit, tear down.

    >>> from alignsam.train.align import DataConfig, TrainConfig, train
    >>> config = TrainConfig(out="runs/x", data=DataConfig("shards/{00000..00009}.tar"), steps=100)
    >>> summary = train(config)  # doctest: +SKIP
    """
    owned = not (dist.is_available() and dist.is_initialized())  # a caller's process group is left alone
    world = setup(config.device)
    try:
        return Trainer(config, world, resume=resume).fit()
    finally:
        if owned:
            teardown()
