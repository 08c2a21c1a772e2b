"""The training loop: the loss goes down, frozen towers stay put, checkpoints resume exactly, the embedding
cache gives the same training, bf16 runs, the command line works end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from alignsam.cli import main
from alignsam.errors import ConfigError
from alignsam.sam import ImageEncoderConfig, SamConfig, SamModel, sam_vit_b
from alignsam.train.sam import FinetuneConfig, PromptConfig, finetune, freeze, open_dataset, training_step
from alignsam.train.sam.prepare import TrainingSet
from alignsam.train.sam.trainer import step_generator
from tests.train.sam.conftest import small_config


def _batch(data_path: Path, config: SamConfig, indices: list[int]) -> list:
    view = TrainingSet(open_dataset(str(data_path)), config.image_size, config.mask_input_size, 8, seed=0)
    return [view[(i, 0)] for i in indices]


def _fixed_loss(model: SamModel, batch: list, run: FinetuneConfig) -> float:
    with torch.no_grad():
        loss, _ = training_step(model, batch, None, run, step_generator(123, 0))
    return float(loss)


def test_a_vit_b_shaped_model_learns_in_a_few_steps(scenes: Path, tmp_path: Path) -> None:
    """vit_b's architecture (width 768, 12 blocks, windows of 14, global blocks 2, 5, 8, 11, decoder 256) at 64 px."""
    base = sam_vit_b()
    config = dataclasses.replace(base, image_encoder=dataclasses.replace(base.image_encoder, image_size=64))
    torch.manual_seed(0)
    model = SamModel.from_config(config).train()
    run = FinetuneConfig(out=str(tmp_path), train_data=(str(scenes),), arch="vit_b", prompts=PromptConfig(rounds=2))
    batch = _batch(scenes, config, [1])  # 3 objects
    before = _fixed_loss(model, batch, run)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    for step in range(4):
        loss, _ = training_step(model, batch, None, run, step_generator(0, step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = _fixed_loss(model, batch, run)
    assert after < 0.8 * before, (before, after)


def _run(out: Path, scenes: Path, **changes: object) -> FinetuneConfig:
    settings: dict[str, object] = {
        "out": str(out),
        "train_data": (str(scenes),),
        "steps": 4,
        "batch_size": 3,
        "lr": 1e-3,
        "warmup": 1,
        "save_every": 2,
        "log_every": 1,
        "prompts": PromptConfig(rounds=2, max_masks=3),
        "threads": 1,
    }
    settings.update(changes)
    return FinetuneConfig(**settings)  # type: ignore[arg-type]


def test_only_the_unfrozen_parts_change(scenes: Path, tmp_path: Path) -> None:
    start = SamModel.from_config(small_config())
    start.save_pretrained(tmp_path / "start")
    run = _run(tmp_path / "run", scenes, init=str(tmp_path / "start"), freeze=("image_encoder", "prompt_encoder"))
    summary = finetune(run, resume=None, progress=False)
    trained = SamModel.from_pretrained(summary["model"])
    before, after = start.state_dict(), trained.state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen = {k for k in before if k.startswith(("image_encoder.", "prompt_encoder."))}
    assert not changed & frozen
    decoder_weights = {k for k in before if k.startswith("mask_decoder.") and before[k].ndim >= 2}
    assert decoder_weights <= changed  # every decoder matrix moved (gradients and weight decay)
    assert summary["frozen_parameters"] == sum(1 for n, _ in start.named_parameters() if n.split(".")[0] in
                                               ("image_encoder", "prompt_encoder"))  # fmt: skip


def test_resume_is_exact(scenes: Path, small_arch: str, tmp_path: Path) -> None:
    straight = finetune(_run(tmp_path / "a", scenes, arch=small_arch), resume=None, progress=False)
    # the same run, stopped after 2 steps and resumed
    finetune(_run(tmp_path / "b", scenes, arch=small_arch, steps=2), resume=None, progress=False)
    resumed = finetune(_run(tmp_path / "b", scenes, arch=small_arch), resume="auto", progress=False)
    assert resumed["steps"] == straight["steps"] == 4
    a = SamModel.from_pretrained(straight["model"]).state_dict()
    b = SamModel.from_pretrained(resumed["model"]).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ca = torch.load(tmp_path / "a/checkpoints/step-0000004.pt", weights_only=True)
    cb = torch.load(tmp_path / "b/checkpoints/step-0000004.pt", weights_only=True)
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    lines_a = (tmp_path / "a/metrics.jsonl").read_text().splitlines()
    lines_b = (tmp_path / "b/metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["loss"] for x in lines_a] == [json.loads(x)["loss"] for x in lines_b]
    # a checkpoint cannot be continued with settings that change what it learns
    with pytest.raises(ConfigError, match="batch_size"):
        finetune(_run(tmp_path / "b", scenes, arch=small_arch, batch_size=2, steps=6), resume="auto", progress=False)


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_the_embedding_cache_trains_like_the_encoder(scenes: Path, tmp_path: Path, kind: str) -> None:
    start = SamModel.from_config(small_config())
    start.save_pretrained(tmp_path / "start")
    common = {"init": str(tmp_path / "start"), "freeze": ("image_encoder",)}
    plain = finetune(_run(tmp_path / "plain", scenes, **common), resume=None, progress=False)
    cached = finetune(_run(tmp_path / "cached", scenes, cache=kind, **common), resume=None, progress=False)
    a = SamModel.from_pretrained(plain["model"]).state_dict()
    b = SamModel.from_pretrained(cached["model"]).state_dict()
    # float16 embeddings: the same training up to rounding
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 2e-3
    assert abs(plain["last"]["loss"] - cached["last"]["loss"]) < 1e-2
    if kind == "disk":
        files = sorted(p.name for p in (tmp_path / "cached/cache").iterdir())
        assert len(files) == 2 and files[0].startswith("embeddings-")
        # a second run on the same data and weights reuses the file
        stamp = (tmp_path / "cached/cache" / files[0]).stat().st_mtime_ns
        finetune(_run(tmp_path / "cached", scenes, cache=kind, **common), resume=None, progress=False)
        assert (tmp_path / "cached/cache" / files[0]).stat().st_mtime_ns == stamp


def test_bf16_autocast_step(scenes: Path, small_arch: str, tmp_path: Path) -> None:
    summary = finetune(_run(tmp_path, scenes, arch=small_arch, precision="bf16", steps=2), resume=None, progress=False)
    assert torch.isfinite(torch.tensor(summary["last"]["loss"]))
    assert SamModel.from_pretrained(summary["model"]).dtype == torch.float32


def test_freeze_and_cache_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="frozen image encoder"):
        FinetuneConfig(out=str(tmp_path), train_data=("x",), arch="demo", cache="memory")
    with pytest.raises(ConfigError, match="exactly one of init"):
        FinetuneConfig(out=str(tmp_path), train_data=("x",))
    with pytest.raises(ConfigError, match="nothing to train"):
        FinetuneConfig(out=str(tmp_path), train_data=("x",), arch="demo", freeze=("image_encoder", "prompt_encoder",
                       "mask_decoder"))  # fmt: skip
    model = SamModel.from_config(small_config())
    names = freeze(model, ["prompt_encoder"])
    assert names and all(not p.requires_grad for p in model.prompt_encoder.parameters())
    assert all(p.requires_grad for p in model.mask_decoder.parameters())


def test_command_line_end_to_end(
    scenes: Path, small_arch: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main([
        "finetune-sam", "--arch", small_arch, "--train-data", str(scenes), "--val-data", str(scenes),
        "--out", str(out), "--steps", "3", "--batch-size", "2", "--rounds", "2", "--lr", "1e-3",
        "--val-samples", "3", "--eval-points", "2", "--threads", "1", "--workers", "1", "-q",
    ])  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 3 and summary["skipped"] == {}
    assert set(summary["eval"]) >= {"miou_point", "miou_box", "miou_points", "objects"}
    assert summary["eval"]["images"] == 3 and summary["eval"]["clicks"] == 2
    assert (out / "model/model.safetensors").is_file() and (out / "finetune_config.json").is_file()
    # the saved settings restart the run; options given on the command line override them
    code = main(["finetune-sam", "--config", str(out / "finetune_config.json"), "--steps", "4", "--resume", "-q"])
    assert code == 0 and json.loads(capsys.readouterr().out)["steps"] == 4
    # evaluation of a saved model alone
    code = main(["finetune-sam", "--eval-only", "--init", str(out / "model"), "--val-data", str(scenes),
                 "--val-samples", "2", "-q"])  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["images"] == 2 and 0.0 <= result["miou_box"] <= 1.0
    # a usage mistake is an error with a message, not a traceback
    assert main(["finetune-sam", "--train-data", str(scenes), "--out", str(tmp_path / "x")]) == 1
    assert "--init MODEL" in capsys.readouterr().err


def test_a_custom_architecture_file_and_image_size(tmp_path: Path) -> None:
    from alignsam.train.sam.models import architecture

    config = small_config()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    assert architecture(str(path)) == config
    assert architecture("demo").image_encoder == ImageEncoderConfig(
        image_size=128, patch_size=8, embed_dim=128, depth=4, num_heads=4, mlp_dim=512, out_chans=128,
        window_size=0, global_attn_indexes=(),
    )  # fmt: skip
    with pytest.raises(ConfigError, match="Unknown architecture"):
        architecture("vit_q")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match=r"broken\.json' is not readable JSON"):
        architecture(str(broken))
    broken.write_text(json.dumps({"image_encoder": {"depth": "four"}}))
    with pytest.raises(ConfigError, match=r"broken\.json' is not a usable configuration"):
        architecture(str(broken))
