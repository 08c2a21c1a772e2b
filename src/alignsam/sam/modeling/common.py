"""The two small MLPs SAM uses in several towers."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from alignsam.layers import get_activation, needs_grad


class MLPBlock(nn.Module):
    """`lin2(act(lin1(x)))`: the feed-forward of the ViT blocks and of the two-way transformer."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: str) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.act = get_activation(act)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.lin1(x)
        if isinstance(self.act, nn.GELU) and not needs_grad(hidden):
            # the same function written into lin1's output: a fresh buffer of vit_b's 4096 x 3072 hidden
            # state costs its page faults every block
            return self.lin2(torch.ops.aten.gelu_(hidden, approximate=self.act.approximate))
        return self.lin2(self.act(hidden))


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them: the mask hypernetworks and the IoU head."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in itertools.pairwise(dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x
