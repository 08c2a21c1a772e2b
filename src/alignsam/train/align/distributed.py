"""Process-group set-up for `torchrun`, and batch norm whose statistics span all processes.

`torchrun --nproc-per-node N` sets RANK, LOCAL_RANK and WORLD_SIZE; `setup()` reads them and joins the
process group: NCCL when the processes drive GPUs, gloo on the CPU. A plain `python` run is a world of one.

PyTorch's `nn.SyncBatchNorm` runs only on accelerators, so on the CPU (gloo) `GlobalBatchNorm2d` computes the
global mean and variance with two autograd-aware all-reduces; its gradients are those of batch norm over the
concatenated global batch (tested against one process holding the whole batch).
"""

from __future__ import annotations

import dataclasses
import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from alignsam.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place: `rank` of `world_size`, `local_rank` on its machine, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto", timeout_s: float = 1800.0) -> World:
    """Join the process group that `torchrun` describes in the environment (no-op for a single process).

    device: "auto" (the local GPU when there is one, else the CPU), "cpu", or "cuda".
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, not {device!r}.")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for, but no GPU is available.")
    dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count())) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )
    return World(rank, world_size, local_rank, dev)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the backward sums the gradients too (every rank's loss depends on the sum)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of `x` over all ranks, differentiable."""
    out: torch.Tensor = _AllReduceSum.apply(x)
    return out


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """`BatchNorm2d` with training statistics over the batches of every process (CPU and GPU).

    The mean and the (biased) variance are each one all-reduce of per-channel sums, whose backward
    all-reduces the gradients, so every process's inputs get the gradient of the global normalisation.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return super().forward(x)
        c = x.shape[1]
        count = torch.tensor([x.numel() // c], dtype=x.dtype, device=x.device)
        sums = all_reduce_sum(torch.cat([x.sum((0, 2, 3)), count]))  # C + 1
        n = sums[-1]
        mean = sums[:c] / n  # C
        centred = x - mean[None, :, None, None]
        var = all_reduce_sum(centred.square().sum((0, 2, 3))) / n  # C, biased (normalisation)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                momentum = self.momentum if self.momentum is not None else 0.1
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp(min=1), momentum)  # unbiased, as torch
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every `BatchNorm2d` by its synchronised version: `nn.SyncBatchNorm` on a GPU,
    `GlobalBatchNorm2d` on the CPU. Parameters and running statistics are kept."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return module


def all_gather_objects(obj: object) -> list[object]:
    """Every rank's `obj` (picklable), in rank order; `[obj]` for a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over all ranks (for logging the global loss)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


__all__ = [
    "GlobalBatchNorm2d",
    "World",
    "all_gather_objects",
    "convert_sync_batchnorm",
    "mean_over_ranks",
    "setup",
    "teardown",
]
