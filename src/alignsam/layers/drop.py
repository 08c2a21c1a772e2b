"""Stochastic depth."""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """Drop the whole residual branch per sample with probability `p` during training.

    This is the original EfficientNet "drop connect" (Keras `Dropout(noise_shape=(None, 1, 1, 1))`).
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"
