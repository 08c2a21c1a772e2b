"""End to end: `alignsam train` on shards and on a COYO-style parquet; exact resumption; locked towers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from alignsam.align import AlignModel, AlignProcessor
from alignsam.cli import main as cli_main
from alignsam.errors import ConfigError
from alignsam.train.align import DataConfig, FilterConfig, ModelSpec, OptimConfig, TrainConfig, Trainer, train


def _config(out: Path, spec: str, arch: Path, **changes) -> TrainConfig:
    base = TrainConfig(
        out=str(out),
        data=DataConfig(spec, workers=0, shuffle_buffer=30),
        model=ModelSpec(arch=str(arch), vocab_size=300),
        optim=OptimConfig(lr=2e-3, warmup_steps=2),
        steps=4,
        batch_size=8,
        log_every=2,
        progress=False,
    )
    return base.replace(**changes)


def test_shards_with_corrupt_samples_and_filters(shards, tiny_arch, tmp_path):
    spec = f"{shards['out']}/{{00000..00005}}.tar"
    data = DataConfig(spec, workers=0, shuffle_buffer=30, filters=FilterConfig(min_clip_similarity=0.25))
    summary = train(_config(tmp_path / "run", spec, tiny_arch, data=data, tensorboard=True))
    assert summary["steps"] == 4 and summary["global_batch"] == 8 and summary["final_loss"] > 0
    counts = summary["data"]
    assert counts["filtered:min_clip_similarity"] > 0  # wrong and unrelated captions score low
    assert counts.get("skipped:missing_caption", 0) + counts.get("skipped:bad_json", 0) > 0
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4] and all(x["samples_per_second"] > 0 for x in lines)
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    folder = tmp_path / "run" / "model"  # a Hugging Face folder with its processor
    model, processor = (
        AlignModel.from_pretrained(folder),
        AlignProcessor.from_pretrained(folder),
    )  # a Hugging Face folder with its processor
    assert processor.tokenizer is not None and processor.tokenizer.vocab_size <= 300
    assert model.config.text_config.vocab_size == processor.tokenizer.vocab_size


def test_coyo_parquet_through_the_command_line(table, tiny_arch, tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train", "--train-data", f"{table['out']}/captions.parquet", "--arch", str(tiny_arch), "--out", str(out),
        "--vocab-size", "300", "--steps", "3", "--batch-size", "8", "--workers", "0", "--no-progress",
        "--max-watermark", "0.5", "--filter", "clip_similarity_vitb32>=0.2", "--max-nsfw", "0.5", "--max-faces", "0",
        "--opt", "adamw", "--lr", "1e-3", "--accum-steps", "2", "--precision", "bf16", "--image-size", "32",
        "--recalibrate-bn", "2",
    ]  # fmt: skip
    assert cli_main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 3 and summary["global_batch"] == 16
    saved = TrainConfig.load(out / "train_config.json")
    assert saved.data.filters.max_watermark == 0.5 and str(saved.data.filters.rules[0]) == "clip_similarity_vitb32>=0.2"
    assert saved.optim.optimizer == "adamw" and saved.accum_steps == 2 and saved.precision == "bf16"
    # The same run again from its saved configuration, two steps longer, resumed from its checkpoint.
    assert cli_main(["train", "--config", str(out / "train_config.json"), "--steps", "5", "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["steps_this_run"] == 2


def test_resume_continues_the_loss_curve_exactly(shards, tiny_arch, tmp_path):
    # 6 steps uninterrupted, then the run again from its step-3 checkpoint: identical losses and weights.
    # Two DataLoader workers, two micro-batches and dropout make every part of the state matter.
    spec = f"{shards['out']}/{{00000..00005}}.tar"
    config = _config(
        tmp_path / "run", spec, tiny_arch, data=DataConfig(spec, workers=2, shuffle_buffer=30),
        steps=6, save_every=3, keep_checkpoints=5, accum_steps=2,
    )  # fmt: skip
    full = Trainer(config)
    full.fit()
    weights = {k: v.clone() for k, v in full.model.state_dict().items()}
    resumed = Trainer(config, resume=str(tmp_path / "run" / "checkpoints" / "step-0000003.pt"))
    assert resumed.step == 3
    resumed.fit()
    assert resumed.history == full.history[3:]  # bit for bit
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, weights[name]), name
    assert resumed.loader.counts() == full.loader.counts()
    with pytest.raises(ConfigError, match="settings differ"):
        Trainer(config.replace(batch_size=4), resume="auto")


def test_fine_tuning_with_a_locked_image_tower(shards, tiny_arch, tmp_path):
    spec = f"{shards['out']}/{{00000..00005}}.tar"
    train(_config(tmp_path / "base", spec, tiny_arch, steps=2))
    base = AlignModel.from_pretrained(tmp_path / "base" / "model")
    ft = _config(
        tmp_path / "ft", spec, tiny_arch, steps=2,
        model=ModelSpec(init=str(tmp_path / "base" / "model"), lock_image=True),
    )  # fmt: skip
    train(ft)
    tuned = AlignModel.from_pretrained(tmp_path / "ft" / "model")
    before, after = base.state_dict(), tuned.state_dict()
    vision = [k for k in before if k.startswith("vision_model.")]
    assert all(torch.equal(before[k], after[k]) for k in vision)  # weights and batch-norm statistics
    assert not torch.equal(before["text_projection.weight"], after["text_projection.weight"])
    assert torch.equal(before["text_model.bert.pooler.dense.weight"], after["text_model.bert.pooler.dense.weight"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not readable JSON"),
        ("[1, 2]", "does not hold a JSON object"),
        ('{"hidden_size": 8}', "has no model_type"),
        ('{"model_type": "bert"}', "single tower"),
    ],
)
def test_a_bad_architecture_file_is_a_config_error_naming_it(tmp_path, capsys, content, message):
    from alignsam.train.align.models import architecture

    path = tmp_path / "arch.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        architecture(str(path))
    assert "arch.json" in str(caught.value)
    # the command line reports it in one line instead of a traceback
    table = tmp_path / "pairs.csv"
    table.write_text("image,caption\na.jpg,a cat\n")
    assert (
        cli_main(["train", "--arch", str(path), "--train-data", str(table), "--out", str(tmp_path / "run"), "-q"]) != 0
    )
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
