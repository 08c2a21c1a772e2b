"""Two processes under torchrun (gloo) give the gradients of one process holding the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from alignsam.align import AlignModel
from alignsam.train.align.trainer import DualEncoder, contrastive_step
from tests.train.align import dist_worker

ROOT = Path(__file__).resolve().parents[3]


def _torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_ddp_step_equals_one_process_with_the_global_batch(tmp_path):
    out = tmp_path / "ddp.pt"
    _torchrun(str(ROOT / "tests/train/align/dist_worker.py"), str(out))
    results = torch.load(out)
    for name, (local_loss, accum) in dist_worker.SETTINGS.items():
        m = dist_worker.model()  # plain batch norm over the whole (micro-)batch, one process
        batches = dist_worker.micro_batches(dist_worker.global_batch(), 0, 1, accum)
        assert [len(b["input_ids"]) for b in batches] == [dist_worker.GLOBAL // accum] * accum
        loss = contrastive_step(DualEncoder(m), batches, local_loss=local_loss)
        got = results[name]
        # Observed: the same loss to the last bit; gradients within 1e-5 of each tensor's largest entry
        # (float32 sums in another order, amplified by batch norm over 4 samples). A wrong gather, loss or
        # batch-norm synchronisation is off by 1e-2 or more.
        torch.testing.assert_close(got["loss"], loss, rtol=1e-6, atol=1e-6)
        grads = {n: p.grad for n, p in m.named_parameters() if p.grad is not None}
        assert grads.keys() == got["grads"].keys()
        for n, g in grads.items():
            scale = float(g.abs().max())
            torch.testing.assert_close(got["grads"][n], g, rtol=0, atol=1e-4 * scale + 1e-7, msg=f"{name}: {n}")
        for n, b in m.named_buffers():
            torch.testing.assert_close(got["buffers"][n], b, rtol=1e-5, atol=1e-6, msg=f"{name}: {n}")


def test_train_command_under_torchrun(shards, tiny_arch, tmp_path):
    out = tmp_path / "run"
    done = _torchrun(
        "-m", "alignsam", "train", "--train-data", f"{shards['out']}/{{00000..00005}}.tar", "--arch", str(tiny_arch),
        "--vocab-size", "300", "--out", str(out), "--steps", "3", "--batch-size", "4", "--workers", "1",
        "--sync-bn", "--local-loss", "--accum-steps", "2", "--no-progress", "--threads", "1",
    )  # fmt: skip
    summary = json.loads(done.stdout)  # one summary, from rank 0
    assert summary["world_size"] == 2 and summary["global_batch"] == 16 and summary["steps"] == 3
    assert AlignModel.from_pretrained(out / "model").config.vision_config.image_size == 32
    state = torch.load(out / "checkpoints" / "step-0000003.pt", weights_only=True)
    assert len(state["data"]) == 2 and len(state["rng"]) == 2  # both processes' positions and random states
