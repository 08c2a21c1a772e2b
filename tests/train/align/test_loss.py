"""The distributed ALIGN loss: naive gather and local loss give the single-process loss and gradients."""

from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from alignsam.align.modeling.loss import align_loss, distributed_align_loss

WORLD, LOCAL, DIM = 2, 4, 8


def _problem() -> tuple[torch.nn.Linear, torch.nn.Linear, torch.Tensor, torch.Tensor, torch.nn.Parameter]:
    """Two linear 'towers', a global batch of WORLD * LOCAL input pairs and a temperature."""
    torch.manual_seed(0)
    text_tower, image_tower = torch.nn.Linear(6, DIM), torch.nn.Linear(5, DIM)
    texts, images = torch.randn(WORLD * LOCAL, 6), torch.randn(WORLD * LOCAL, 5)
    return text_tower, image_tower, texts, images, torch.nn.Parameter(torch.tensor(0.2))


def _grads(text_tower, image_tower, temperature) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in (*text_tower.parameters(), *image_tower.parameters(), temperature)])


def _worker(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    results = {}
    for local_loss in (False, True):
        text_tower, image_tower, texts, images, temperature = _problem()
        rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
        text = F.normalize(text_tower(texts[rows]), dim=-1)
        image = F.normalize(image_tower(images[rows]), dim=-1)
        loss = distributed_align_loss(text, image, temperature, reduction="sum", local_loss=local_loss)
        loss.backward()
        grads = _grads(text_tower, image_tower, temperature)
        dist.all_reduce(grads)  # what DDP does: average the gradients over processes
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        results[local_loss] = (mean_loss / WORLD, grads / WORLD, loss.detach())
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def test_one_process_is_the_plain_loss():
    text, image = F.normalize(torch.randn(5, 4), dim=-1), F.normalize(torch.randn(5, 4), dim=-1)
    t = torch.tensor(0.5)
    for reduction in ("mean", "sum"):
        want = align_loss(text @ image.t() / t, reduction=reduction)
        for local in (False, True):
            got = distributed_align_loss(text, image, t, reduction=reduction, local_loss=local)
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_naive_gather_and_local_loss_match_one_process_on_the_global_batch():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "results.pt")
        mp.spawn(_worker, args=(os.path.join(tmp, "store"), out), nprocs=WORLD, join=True)
        results = torch.load(out)
    text_tower, image_tower, texts, images, temperature = _problem()
    logits = F.normalize(text_tower(texts), dim=-1) @ F.normalize(image_tower(images), dim=-1).t() / temperature
    want_loss = align_loss(logits, reduction="sum")
    want_loss.backward()
    want_grads = _grads(text_tower, image_tower, temperature)
    naive_loss, naive_grads, naive_rank0 = results[False]
    local_loss, local_grads, local_rank0 = results[True]
    # Observed: equal to float32 rounding (max difference ~1e-7); the tolerance leaves room for other BLAS.
    for loss in (naive_loss, local_loss):
        torch.testing.assert_close(loss, want_loss.detach(), rtol=1e-6, atol=1e-6)
    for grads in (naive_grads, local_grads):
        torch.testing.assert_close(grads, want_grads, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(naive_rank0, want_loss.detach(), rtol=1e-6, atol=1e-6)  # every rank: the global loss
    assert not torch.allclose(local_rank0, want_loss.detach())  # each rank: its own rows only
