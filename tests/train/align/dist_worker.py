"""Run by `torchrun --nproc-per-node 2` from test_distributed.py: one DDP training step per setting.

Each process takes its share of a fixed global batch, runs the trainer's `contrastive_step` under
DistributedDataParallel with synchronised batch norm, and rank 0 saves the (DDP-averaged) gradients, the
global loss and the batch-norm running statistics for the test to compare with one process.
"""

from __future__ import annotations

import sys

import torch
from torch.nn.parallel import DistributedDataParallel

from alignsam.align import AlignModel
from alignsam.train.align.distributed import convert_sync_batchnorm, mean_over_ranks, setup, teardown
from alignsam.train.align.trainer import DualEncoder, contrastive_step
from tests.train.align.conftest import tiny_config

GLOBAL, MICRO_STEPS = 8, 2
SETTINGS = {"naive": (False, 1), "local": (True, 1), "local_accum2": (True, MICRO_STEPS)}


def global_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 300, (GLOBAL, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[::3, 5:] = 0  # some padding
    return {"pixel_values": torch.randn(GLOBAL, 3, 32, 32, generator=g), "input_ids": ids, "attention_mask": mask}


def model() -> AlignModel:
    torch.manual_seed(0)
    m = AlignModel(tiny_config(dropout=0.0))  # no dropout: processes draw different masks than one process
    m.text_model.bert.pooler.requires_grad_(False)
    return m.train()


def micro_batches(batch: dict[str, torch.Tensor], rank: int, world: int, accum: int) -> list[dict[str, torch.Tensor]]:
    """This rank's micro-batches: micro-batch j of every rank together make micro-batch j of one process."""
    per = GLOBAL // (world * accum)
    out = []
    for j in range(accum):
        rows = slice(j * world * per + rank * per, j * world * per + (rank + 1) * per)
        out.append({k: v[rows] for k, v in batch.items()})
    return out


def main(out: str) -> None:
    world = setup("cpu")
    results = {}
    for name, (local_loss, accum) in SETTINGS.items():
        m = convert_sync_batchnorm(model(), world.device)
        ddp = DistributedDataParallel(DualEncoder(m))
        batches = micro_batches(global_batch(), world.rank, world.world_size, accum)
        loss = contrastive_step(ddp, batches, local_loss=local_loss)
        grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        stats = {n: b.clone() for n, b in m.named_buffers()}
        results[name] = {"loss": mean_over_ranks(loss), "grads": grads, "buffers": stats}
    if world.rank == 0:
        torch.save(results, out)
    # both ranks leave together: once, in 3 CI runs, rank 1 aborted in gloo's teardown ("terminate called
    # without an active exception") while rank 0 was still saving
    torch.distributed.barrier()
    teardown()


if __name__ == "__main__":
    main(sys.argv[1])
