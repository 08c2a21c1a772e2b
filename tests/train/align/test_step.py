"""One optimiser step: feature-cache accumulation gives the big-batch gradients; bf16 runs."""

from __future__ import annotations

import torch

from alignsam.align import AlignModel
from alignsam.align.modeling.loss import distributed_align_loss
from alignsam.train.align.trainer import DualEncoder, contrastive_step
from tests.train.align.conftest import tiny_config


def _batch(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 300, (n, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1::2, 6:] = 0
    return {"pixel_values": torch.randn(n, 3, 32, 32, generator=g), "input_ids": ids, "attention_mask": mask}


def _model(dropout: float) -> AlignModel:
    torch.manual_seed(0)
    model = AlignModel(tiny_config(dropout=dropout))
    model.text_model.bert.pooler.requires_grad_(False)
    return model


def _grads(model: AlignModel) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_accumulation_equals_one_big_batch_with_frozen_batch_norm():
    # With batch-norm statistics frozen and no dropout, two micro-batches of 4 are one batch of 8.
    a, b = _batch(4, 1), _batch(4, 2)
    both = {k: torch.cat([a[k], b[k]]) for k in a}
    results = []
    for micro in ([both], [a, b]):
        model = _model(0.0).eval()
        loss = contrastive_step(DualEncoder(model), micro, label_smoothing=0.1)
        results.append((loss, _grads(model)))
    (big_loss, big), (acc_loss, acc) = results
    torch.testing.assert_close(acc_loss, big_loss, rtol=1e-6, atol=1e-6)
    assert big.keys() == acc.keys() and "temperature" in big
    for name in big:  # observed: within 2e-7 of each tensor's largest entry
        torch.testing.assert_close(acc[name], big[name], rtol=0, atol=1e-5 * float(big[name].abs().max()) + 1e-8)


def test_accumulation_replays_dropout_and_moves_batch_norm_once():
    # In training mode (dropout, drop-path, batch statistics) the cached step must equal embedding the
    # micro-batches one after the other with a graph, from the same random state, and one backward.
    a, b = _batch(4, 1), _batch(4, 2)
    cached = _model(0.3).train()
    torch.manual_seed(7)
    contrastive_step(DualEncoder(cached), [a, b])
    after_cached = torch.rand(1)  # the random stream continues where the plain computation leaves it

    plain = _model(0.3).train()
    encoder = DualEncoder(plain)
    torch.manual_seed(7)
    (ta, ia, temperature), (tb, ib, _) = [
        encoder(x["pixel_values"], x["input_ids"], x["attention_mask"]) for x in (a, b)
    ]
    distributed_align_loss(torch.cat([ta, tb]), torch.cat([ia, ib]), temperature, reduction="sum").backward()
    assert torch.equal(after_cached, torch.rand(1))

    want, got = _grads(plain), _grads(cached)
    assert want.keys() == got.keys()
    for name in want:  # the temperature's gradient is counted once, not once per micro-batch
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-5 * float(want[name].abs().max()) + 1e-8)
    for (name, x), y in zip(plain.named_buffers(), cached.buffers(), strict=True):
        torch.testing.assert_close(y, x, rtol=1e-6, atol=1e-7, msg=name)  # running statistics moved once


def test_bf16_autocast_step():
    model = _model(0.1).train()
    loss = contrastive_step(DualEncoder(model), [_batch(4, 3)], precision="bf16")
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(torch.isfinite(g).all() for g in _grads(model).values())
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)  # every parameter learns


def test_recalibrated_batch_norm_statistics_are_the_average_over_batches():
    from alignsam.train.align.trainer import recalibrate_batch_norm

    model = _model(0.0).train()
    batches = [_batch(6, s) for s in (4, 5, 6)]
    assert recalibrate_batch_norm(model, iter(batches)) == 3
    stem = model.vision_model.efficientnet.stem
    with torch.no_grad():
        means = [stem.conv(torch.nn.functional.pad(b["pixel_values"], (0, 1, 0, 1))).mean((0, 2, 3)) for b in batches]
    torch.testing.assert_close(stem.bn.running_mean, torch.stack(means).mean(0), rtol=1e-5, atol=1e-6)
    assert stem.bn.momentum == 1 - model.config.vision_config.batch_norm_momentum  # restored
