"""Optimiser construction: weight decay only on weight matrices and convolutions."""

from __future__ import annotations

import torch
from torch import nn

from alignsam.train.align.config import OptimConfig
from alignsam.train.align.lamb import Lamb


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Two groups of the trainable parameters: decayed (2-d and up: linear, conv, embedding weights) and not
    (norm weights and biases, all biases, the 0-d temperature). LAMB's layer adaptation follows the decay, as
    tensorflow_addons' `exclude_from_layer_adaptation` defaults to `exclude_from_weight_decay`."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "adapt": True},
        {"params": no_decay, "weight_decay": 0.0, "adapt": False},
    ]


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """LAMB or AdamW over `param_groups(model)`; the learning rate is set by the trainer at every step."""
    groups = param_groups(model, config.weight_decay)
    if config.optimizer == "lamb":
        return Lamb(groups, lr=config.lr, betas=config.betas, eps=config.eps)
    for g in groups:
        g.pop("adapt")
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)
