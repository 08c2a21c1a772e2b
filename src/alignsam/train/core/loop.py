"""The steps both training loops share: the learning rate of each step, the optimiser step, when to log,
save and stop, and what a checkpoint holds besides the program's own state."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from alignsam.train.core.checkpoint import rng_state
from alignsam.train.core.schedule import Schedule, learning_rate


@dataclasses.dataclass(frozen=True)
class Cadence:
    """How long a run lasts and how often it reports and saves.

    Attributes:
        steps: the optimiser step to stop at.
        log_every: log every this many steps (and at the last).
        save_every: checkpoint every this many steps (0: only at the end).
        max_seconds: stop early after this much training time (None: no limit).
    """

    steps: int
    log_every: int
    save_every: int = 0
    max_seconds: float | None = None

    def log_due(self, step: int) -> bool:
        """Whether step `step` (1-based: the number of steps done) is logged."""
        return step % max(self.log_every, 1) == 0 or step == self.steps

    def save_due(self, step: int) -> bool:
        """Whether a checkpoint is written after step `step`, before the last (which is always saved)."""
        return bool(self.save_every) and step % self.save_every == 0 and step < self.steps


class Clock:
    """Training time since the start, and whether the time budget is spent (`agree` makes every process
    of a distributed run take the same decision)."""

    def __init__(self, max_seconds: float | None, agree: Callable[[bool], bool] = lambda flag: flag) -> None:
        self.max_seconds, self.agree = max_seconds, agree
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def out_of_time(self) -> bool:
        return self.max_seconds is not None and self.agree(self.elapsed() > self.max_seconds)


def set_learning_rate(
    optimizer: torch.optim.Optimizer,
    step: int,
    *,
    peak: float,
    warmup: int,
    total: int,
    schedule: Schedule,
    final: float,
) -> float:
    """Set every parameter group's learning rate to the schedule's value at `step` (0-based); returns it."""
    lr = learning_rate(step, peak=peak, warmup=warmup, total=total, schedule=schedule, final=final)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def optimizer_step(
    optimizer: torch.optim.Optimizer, parameters: Iterable[torch.Tensor], grad_clip: float | None
) -> float | None:
    """Clip the gradients' global norm to `grad_clip` (if given) and step; returns the norm before clipping."""
    norm = None
    if grad_clip:
        norm = float(torch.nn.utils.clip_grad_norm_(list(parameters), grad_clip))
    optimizer.step()
    return norm


def training_state(
    step: int, config: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer, **extra: Any
) -> dict[str, Any]:
    """What every checkpoint holds: the step, the run's and the model's configuration, the unwrapped model's
    weights, the optimiser's state and the random state; plus the program's own entries (`extra`)."""
    model_config: Any = getattr(model, "config", None)
    return {
        "step": step,
        "config": config,
        "model_config": model_config.to_dict() if model_config is not None else {},
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(),
        **extra,
    }
