"""LAMB, parameter groups, the learning-rate schedule, the WordPiece vocabulary, TensorBoard files."""

from __future__ import annotations

import json

import pytest
import torch

from alignsam.align import AlignModel
from alignsam.train.align import Lamb, OptimConfig, learning_rate, train_wordpiece
from alignsam.train.align.optim import build_optimizer, param_groups
from alignsam.train.core.metrics import RunLog
from tests.train.align.conftest import tiny_config


def _quadratic_steps(opt_factory, steps=5):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    target = torch.randn(4, 3)
    opt = opt_factory([w])
    history = []
    for _ in range(steps):
        opt.zero_grad()
        ((w - target) ** 2).sum().backward()
        before = w.detach().clone()
        opt.step()
        history.append((before, w.detach().clone()))
    return history


def test_lamb_without_adaptation_is_adam():
    lamb = _quadratic_steps(lambda p: Lamb([{"params": p, "adapt": False}], lr=0.01, eps=1e-6))
    adam = _quadratic_steps(lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-6))
    for (_, a), (_, b) in zip(lamb, adam, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_lamb_trust_ratio_moves_each_tensor_by_lr_times_its_norm():
    # With the trust ratio the step of a tensor is lr * ||w||, whatever the gradient's scale; weight decay
    # joins the update before the ratio is taken.
    for wd in (0.0, 0.1):
        for before, after in _quadratic_steps(lambda p, wd=wd: Lamb(p, lr=0.01, weight_decay=wd)):
            torch.testing.assert_close((after - before).norm(), 0.01 * before.norm(), rtol=1e-5, atol=0)
    # A zero tensor has no scale: the plain Adam step is taken instead of no step at all.
    z = torch.nn.Parameter(torch.zeros(3))
    z.grad = torch.ones(3)
    Lamb([z], lr=0.1).step()
    torch.testing.assert_close(z.detach(), torch.full((3,), -0.1), rtol=1e-5, atol=1e-6)


def test_no_weight_decay_on_norms_biases_and_temperature():
    model = AlignModel(tiny_config())
    decay, no_decay = param_groups(model, 1e-5)
    names = {id(p): n for n, p in model.named_parameters()}
    no_names = {names[id(p)] for p in no_decay["params"]}
    assert "temperature" in no_names and any(n.endswith("bn1.weight") for n in no_names)
    assert any(n.endswith("norm1.bias") for n in no_names) and any(n.endswith("qkv.bias") for n in no_names)
    assert all(p.ndim >= 2 for p in decay["params"]) and decay["weight_decay"] == 1e-5
    assert no_decay["weight_decay"] == 0.0 and not no_decay["adapt"] and decay["adapt"]
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert isinstance(build_optimizer(model, OptimConfig(optimizer="adamw")), torch.optim.AdamW)


def test_schedule_warms_up_then_decays():
    lr = [learning_rate(s, peak=1.0, warmup=4, total=12) for s in range(13)]
    assert lr[:4] == [0.25, 0.5, 0.75, 1.0] and lr[4] == 1.0 and lr[8] == 0.5 and lr[12] == 0.0
    cos = [learning_rate(s, peak=1.0, warmup=0, total=10, schedule="cosine", final=0.1) for s in (0, 5, 10)]
    assert cos == pytest.approx([1.0, 0.55, 0.1])
    assert learning_rate(50, peak=2.0, warmup=10, total=100, schedule="constant") == 2.0


def test_wordpiece_vocabulary_from_captions():
    captions = [f"a photo of {n} red circles and a blue star" for n in ("two", "three", "four")] * 20
    tok = train_wordpiece(captions, vocab_size=120)
    assert tok.pad_token_id == 0 and tok.vocab_size <= 120
    ids = tok.token_ids(["A photo of two red circles"])[0]
    assert tok.decode(ids) == "a photo of two red circles"
    assert tok._tokenizer.token_to_id("[UNK]") not in ids


def test_run_log_writes_each_step_once_and_tensorboard_scalars(tmp_path):
    """metrics.jsonl after a resume holds every step once (the rows past the checkpoint's step are dropped,
    as is a line cut short by a kill); TensorBoard event files hold the scalars."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = RunLog(tmp_path, total_steps=6, start_step=0, desc="t", progress=False, tensorboard=True)
    for step in (2, 4, 6):
        log.log({"step": step, "loss": 1.0 / step}, scalars={"train/loss": 1.0 / step})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "lo')  # killed mid-write
    RunLog(tmp_path, total_steps=6, start_step=4, desc="t", progress=False).log({"step": 6, "loss": 0.5})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6] and rows[-1]["loss"] == 0.5
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("train/loss")
    assert [s.step for s in scalars] == [2, 4, 6]
    assert scalars[1].value == pytest.approx(0.25)
