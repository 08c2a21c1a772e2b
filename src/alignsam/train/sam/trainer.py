"""The SAM fine-tuning loop: `finetune(config)`, readable top to bottom.

One optimiser step:
1. read `batch_size` images (a deterministic order: `prepare.batch_indices(step)`) with up to `max_masks`
   objects each, resized into the model's frame with low-resolution coverage targets;
2. image embeddings: the encoder's forward pass (trained, or frozen under `no_grad`), or the cache;
3. each object starts from a jittered box or one point inside it; then `rounds - 1` clicks, each in the
   error of the previous prediction, with the previous logits as mask input (`prompts.py`);
4. focal + dice (20:1) on the masks and MSE on the IoU head, the best of the three masks for a single
   click (`losses.py`), averaged over objects and rounds; AdamW with warm-up and cosine (or linear) decay,
   gradient clipping, optional bf16 autocast.

A run folder holds `finetune_config.json`, `metrics.jsonl`, `checkpoints/step-N.pt` (model, optimiser,
step, random state: a resumed run continues exactly), `cache/` (embeddings, with `cache="disk"`) and at the
end `model/` (`config.json` + `model.safetensors`, what `SamModel.from_pretrained` reads).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from alignsam.io.files import write_text_atomic
from alignsam.sam.modeling.config import SamConfig
from alignsam.sam.modeling.sam import SamModel
from alignsam.train.core import checkpoint as ckpt
from alignsam.train.core.loop import Cadence, Clock, optimizer_step, set_learning_rate, training_state
from alignsam.train.core.metrics import RunLog
from alignsam.train.sam.cache import EmbeddingCache, cache_key
from alignsam.train.sam.config import FinetuneConfig
from alignsam.train.sam.data import open_dataset
from alignsam.train.sam.evaluate import evaluate
from alignsam.train.sam.losses import LossOutput, sam_loss
from alignsam.train.sam.models import build_model, freeze, param_groups
from alignsam.train.sam.prepare import Prepared, StepBatches, TrainingSet, collate
from alignsam.train.sam.prompts import error_points, jitter_boxes, points_inside

# Settings a resumed run must share with the checkpoint's (the rest, such as steps or logging, may change).
_RESUME_INVARIANT = ("train_data", "image_root", "init", "arch", "freeze", "batch_size", "prompts", "loss", "seed")


def step_generator(seed: int, step: int) -> torch.Generator:
    """The prompts' random stream of one step: a function of (seed, step) only, so resuming is exact."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def interactive_rounds(
    model: SamModel,
    embeddings: torch.Tensor,
    coverage: torch.Tensor,
    boxes: torch.Tensor | None,
    input_sizes: torch.Tensor,
    config: FinetuneConfig,
    generator: torch.Generator,
) -> list[LossOutput]:
    """Simulate `config.prompts.rounds` rounds of interaction on P objects and return each round's loss.

    Args:
        embeddings: `P x C x h x w` (each object's image embedding).
        coverage: `P x L x L` targets in [0, 1].
        boxes: `P x 4` object boxes to start from (jittered here), or None to start from one point.
        input_sizes: `P x 2` (h, w) of the resized images.
    """
    size = model.config.image_size
    p = coverage.shape[0]
    settings = config.prompts
    coords = torch.zeros(p, 0, 2)
    labels = torch.zeros(p, 0, dtype=torch.int)
    box_prompt = None
    if boxes is not None:
        max_noise = settings.box_noise_max * size / 1024  # the paper's 20 px are on a 1024 px input
        box_prompt = jitter_boxes(boxes, input_sizes, generator, noise=settings.box_noise, max_noise=max_noise)
    else:
        coords = points_inside(coverage, size, input_sizes, generator)[:, None]  # P x 1 x 2
        labels = torch.ones(p, 1, dtype=torch.int)
    previous: torch.Tensor | None = None  # P x L x L logits of the last round's trained mask
    losses = []
    for round_index in range(settings.rounds):
        if previous is not None:
            click, label = error_points(previous, coverage, size, input_sizes, generator)
            coords = torch.cat([coords, click[:, None]], dim=1)
            labels = torch.cat([labels, label[:, None].int()], dim=1)
        # One click is ambiguous (part or whole?): three masks, the best one trained. More prompts: one mask.
        multimask = round_index == 0 and boxes is None
        out = model(
            image_embeddings=embeddings,
            point_coords=coords if coords.shape[1] else None,
            point_labels=labels if coords.shape[1] else None,
            boxes=box_prompt,
            mask_inputs=None if previous is None else previous[:, None],
            multimask_output=multimask,
        )
        loss = sam_loss(out.low_res_logits, out.iou_predictions, coverage, config.loss)
        # The next round sees this prediction as a prompt, not as something to back-propagate through.
        previous = out.low_res_logits.detach().float()[torch.arange(p), loss.chosen]
        losses.append(loss)
    return losses


def training_step(
    model: SamModel,
    batch: list[Prepared],
    embeddings: torch.Tensor | None,
    config: FinetuneConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one batch (to back-propagate) and its statistics.

    Args:
        batch: B prepared images; embeddings: their cached `B x C x h x w` embeddings, or None to run the
            image encoder here (with gradients unless it is frozen).
    """
    if embeddings is None:
        pixels = torch.cat([model.preprocess(item.image[None].float()) for item in batch if item.image is not None])
        frozen = not any(p.requires_grad for p in model.image_encoder.parameters())
        with torch.no_grad() if frozen else contextlib.nullcontext():
            embeddings = model.image_encoder(pixels)  # B x C x h x w
    owner = torch.cat([torch.full((len(item.targets),), i) for i, item in enumerate(batch)])  # P
    coverage = torch.cat([item.targets for item in batch]).float() / 255  # P x L x L
    boxes = torch.cat([item.boxes for item in batch])  # P x 4
    sizes = torch.tensor([item.input_size for item in batch])[owner]  # P x 2
    p = owner.shape[0]
    start_with_box = torch.rand(p, generator=generator) < config.prompts.box_share
    total = torch.zeros(())
    stats: dict[str, float] = {"objects": float(p)}
    for use_box, group in ((True, start_with_box), (False, ~start_with_box)):
        if not group.any():
            continue
        rounds = interactive_rounds(
            model,
            embeddings[owner[group]],
            coverage[group],
            boxes[group] if use_box else None,
            sizes[group],
            config,
            generator,
        )
        share = float(group.sum()) / p
        total = total + share * torch.stack([r.total for r in rounds]).mean()
        kind = "box" if use_box else "point"
        stats[f"iou_{kind}"] = float(rounds[0].iou.mean())
        stats[f"iou_{kind}_last"] = float(rounds[-1].iou.mean())
        stats[f"n_{kind}"] = float(group.sum())
    return total, stats


class _Run:
    """State of one run: model, optimiser, data, cache, step; `fit()` trains."""

    def __init__(self, config: FinetuneConfig, resume: str | None, progress: bool) -> None:
        self.config, self.progress = config, progress
        self.out = Path(config.out)
        if config.threads:
            torch.set_num_threads(config.threads)
        state = self._resume_state(resume)
        self.data = open_dataset(list(config.train_data), config.image_root)
        if state:
            self.model = SamModel.from_config(SamConfig.from_dict(state["model_config"]))
            self.model.load_state_dict(state["model"])
        else:
            self.model = build_model(config.init, config.arch, config.seed)
            self.out.mkdir(parents=True, exist_ok=True)
            config.save(self.out)
        self.model.train()
        self.frozen = freeze(self.model, config.freeze)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, config.weight_decay), lr=config.lr, betas=config.betas
        )
        self.step = 0
        self.skipped: dict[str, int] = dict(self.data.skipped)
        if state:
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = int(state["step"])
            self.skipped = dict(state.get("skipped", self.skipped))
            ckpt.set_rng_state(state["rng"])
        self.cache = self._build_cache()

    # --- set-up -------------------------------------------------------------------------------------------

    def _resume_state(self, resume: str | None) -> dict[str, Any] | None:
        found = ckpt.resume_state(
            self.out, resume, self.config.to_dict(), lambda d: FinetuneConfig.from_dict(d).to_dict(), _RESUME_INVARIANT
        )
        if found is None:
            return None
        path, state = found
        self._log(f"resuming from {path} at step {state['step']}")
        return state

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.precision == "bf16":
            return torch.autocast(self.model.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _build_cache(self) -> EmbeddingCache | None:
        kind = self.config.cache
        if kind == "off":
            return None
        grid = self.model.config.embedding_size
        shape = (self.model.config.image_encoder.out_chans, grid, grid)
        folder = self.out / "cache" if kind == "disk" else None
        cache = EmbeddingCache(len(self.data), shape, folder, cache_key(self.model, self.data))
        bad = cache.fill(
            self.model, self.data, batch_size=self.config.batch_size, autocast=self._autocast, progress=self.progress
        )
        self._log(f"embedding cache ({kind}): {len(self.data)} images" + (f", unreadable {bad}" if bad else ""))
        return cache

    def _log(self, message: str) -> None:
        if self.progress:
            print(f"alignsam finetune-sam: {message}", flush=True, file=sys.stderr)

    def _loader(self) -> Iterator[list[Prepared | str]]:
        config = self.config
        dataset = TrainingSet(
            self.data,
            self.model.config.image_size,
            self.model.config.mask_input_size,
            config.prompts.max_masks,
            config.seed,
            with_images=self.cache is None,
        )
        sampler = StepBatches(self.step, config.steps, config.batch_size, len(self.data), config.seed)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, collate_fn=collate, num_workers=config.workers
        )
        return iter(loader)

    # --- the loop -----------------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        config = self.config
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        cadence = Cadence(config.steps, config.log_every, config.save_every, config.max_seconds)
        log = RunLog(
            self.out, total_steps=config.steps, start_step=self.step, desc="finetune-sam", progress=self.progress
        )
        clock = Clock(config.max_seconds)
        seen, history, last = 0, [], {}
        stopped_early = False
        for raw in self._loader():
            lr = set_learning_rate(
                self.optimizer, self.step, peak=config.lr, warmup=config.warmup, total=config.steps,
                schedule=config.schedule, final=config.final_lr,
            )  # fmt: skip
            batch = [item for item in raw if isinstance(item, Prepared)]
            for reason in (item for item in raw if isinstance(item, str)):
                self.skipped[reason] = self.skipped.get(reason, 0) + 1
            if self.cache is not None:
                batch = [item for item in batch if not self.cache.is_bad(item.index)]
            if batch:
                embeddings = self.cache.get([item.index for item in batch]) if self.cache is not None else None
                with self._autocast():
                    loss, stats = training_step(
                        self.model, batch, embeddings, config, step_generator(config.seed, self.step)
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norm = optimizer_step(self.optimizer, trainable, config.grad_clip)
                if norm is not None:
                    stats["grad_norm"] = norm
                seen += len(batch)
                stats.update(loss=float(loss.detach()), lr=lr)
                history.append(stats)
            self.step += 1
            if history and cadence.log_due(self.step):
                last = self._write_metrics(history, seen / max(clock.elapsed(), 1e-9), log)
                history = []
            log.advance()
            out_of_time = clock.out_of_time()
            if cadence.save_due(self.step) or self.step == config.steps or out_of_time:
                self._save(last)
            periodic = config.eval_every and self.step % config.eval_every == 0 and self.step < config.steps
            if periodic and config.val_data:  # the final evaluation follows the loop
                self._evaluate(f"step {self.step}")
            if out_of_time and self.step < config.steps:
                stopped_early = True
                self._log(f"stopping at step {self.step}: --max-seconds {config.max_seconds:g} reached")
                break
        log.close()
        model_dir = self.model.save_pretrained(self.out / "model")
        summary: dict[str, Any] = {
            "out": str(self.out),
            "model": str(model_dir),
            "steps": self.step,
            "stopped_early": stopped_early,
            "seconds": round(clock.elapsed(), 1),
            "images_seen": seen,
            "skipped": self.skipped,
            "frozen_parameters": len(self.frozen),
            "last": last,
        }
        if config.val_data:
            summary["eval"] = self._evaluate("final")
        write_text_atomic(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary

    def _write_metrics(self, history: list[dict[str, float]], images_per_s: float, log: RunLog) -> dict[str, Any]:
        keys = sorted({k for h in history for k in h})
        row: dict[str, Any] = {"step": self.step}
        for k in keys:
            values = [h[k] for h in history if k in h]
            row[k] = round(sum(values) / len(values), 6)
        row["images_per_s"] = round(images_per_s, 2)
        postfix = {
            "loss": f"{row['loss']:.4f}", "iou": f"{row.get('iou_box', 0):.3f}", "lr": f"{row['lr']:.2e}",
            "img_s": f"{row['images_per_s']:.1f}",
        }  # fmt: skip
        log.log(row, postfix=postfix)
        return row

    def _save(self, metrics: dict[str, Any]) -> None:
        payload = training_state(
            self.step, self.config.to_dict(), self.model, self.optimizer, metrics=metrics, skipped=self.skipped
        )
        ckpt.save_checkpoint(ckpt.checkpoint_path(self.out, self.step), payload, keep=self.config.keep_checkpoints)

    def _evaluate(self, when: str) -> dict[str, Any]:
        data = open_dataset(list(self.config.val_data), self.config.image_root)
        result = evaluate(
            self.model,
            data,
            max_samples=self.config.val_samples or None,
            clicks=self.config.eval_points,
            progress=self.progress,
        )
        result["step"] = self.step
        with open(self.out / "eval.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")
        self._log(
            f"eval ({when}): box {result['miou_box']:.3f}, point {result['miou_point']:.3f}, "
            f"{result['clicks']} points {result['miou_points']:.3f} on {result['objects']} objects"
        )
        return result


def finetune(config: FinetuneConfig, resume: str | None = "auto", progress: bool = True) -> dict[str, Any]:
    """Run `config` and return a JSON-ready summary (steps, time, skipped samples, final evaluation).

    Args:
        resume: "auto" continues from the run folder's latest checkpoint if there is one; a path continues
            from that checkpoint; None starts over.
        progress: a progress bar and notes on stderr.
    """
    return _Run(config, resume, progress).fit()
