"""The learning-rate schedule, as a pure function of the step (so a resumed run needs no scheduler state)."""

from __future__ import annotations

import math
from typing import Literal

Schedule = Literal["linear", "cosine", "constant"]


def learning_rate(
    step: int, *, peak: float, warmup: int, total: int, schedule: Schedule = "linear", final: float = 0.0
) -> float:
    """The learning rate of optimiser step `step` (0-based).

    Linear warm-up from 0 to `peak` over `warmup` steps (step 0 already gets `peak / warmup`), then decay to
    `final` at step `total`: linear (ALIGN and COYO-ALIGN: polynomial decay of power 1), cosine, or constant.
    """
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return peak
    progress = min(1.0, (step - warmup) / (total - warmup))
    if schedule == "linear":
        return final + (peak - final) * (1.0 - progress)
    if schedule == "cosine":
        return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"Unknown schedule {schedule!r}.")
