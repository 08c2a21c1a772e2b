"""ALIGN's recipe with an InternImage image tower (`alignsam train --image-tower`): a tiny InternImage and a
tiny BERT trained on the synthetic shards lower their loss, backward reaches every parameter, and the exported
folder says which tower it has and loads again (the tools, resumption, the zero-shot command)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from alignsam.align import AlignModel, AlignProcessor
from alignsam.cli import main as cli_main
from alignsam.errors import ConfigError
from alignsam.internimage import InternImage, InternImageConfig
from alignsam.tools.encoder import Encoder
from alignsam.tools.towers import image_tower, load_align
from alignsam.train.align import DataConfig, ModelSpec, OptimConfig, TrainConfig, Trainer
from tests.train.align.conftest import tiny_config

STEPS = 60


def _tiny_tower() -> InternImageConfig:
    """Four levels of one block, 16 channels (one DCNv3 group of 16 per 16 channels), 64 px: ~0.2 M parameters."""
    return InternImageConfig(channels=16, depths=(1, 1, 1, 1), groups=(1, 2, 4, 8), image_size=64)


@pytest.fixture(scope="module")
def tower_json(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tower") / "config.json"
    path.write_text(json.dumps({"model_type": "alignsam-internimage", **_tiny_tower().to_dict()}))
    return path


@pytest.fixture(scope="module")
def text_arch(tmp_path_factory) -> Path:
    """The tests' 1-layer, 32-wide BERT (its EfficientNet is replaced by the tower), initialised wide enough
    (std 0.3) that captions differ at the start: at BERT's 0.02 every caption's [CLS] state is the same to
    1e-3 and a short run learns nothing on the text side, whatever the image tower. Temperature 0.07."""
    config = tiny_config(dropout=0.0)
    config = config.replace(text_config=config.text_config.replace(initializer_range=0.3), temperature_init_value=0.07)
    path = tmp_path_factory.mktemp("arch") / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    return path


@pytest.fixture(scope="module")
def trained(shards, text_arch, tower_json, tmp_path_factory) -> Iterator[Trainer]:
    spec = f"{shards['out']}/{{00000..00005}}.tar"
    config = TrainConfig(
        out=str(tmp_path_factory.mktemp("run")),
        data=DataConfig(spec, workers=0, shuffle_buffer=60),
        model=ModelSpec(arch=str(text_arch), image_tower=str(tower_json), vocab_size=300),
        optim=OptimConfig(lr=2e-3, warmup_steps=3),  # LAMB, ALIGN's optimiser
        steps=STEPS,
        batch_size=16,
        log_every=20,
        save_every=STEPS,
        progress=False,
        threads=1,  # one thread: the same numbers on every run of the test
    )
    threads = torch.get_num_threads()
    trainer = Trainer(config)
    trainer.fit()
    yield trainer
    torch.set_num_threads(threads)


def test_the_loss_falls_below_chance_and_backward_reaches_every_parameter(trained):
    losses = [loss for _, loss in trained.history]
    assert len(losses) == STEPS
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    chance = 2 * math.log(16)  # both directions, uniform over a batch of 16 (5.55)
    assert last < first - 0.8 and last < chance - 0.15, (first, last, chance)
    model = trained.model
    assert isinstance(model.vision_model, InternImage) and model.image_projection is not None
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.startswith("vision_model.levels.0.blocks.0.dcn.offset") for n, _ in trainable)
    no_grad = [n for n, p in trainable if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not no_grad, no_grad  # the last step's gradients: every tensor of both towers got one
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert all(n.startswith("text_model.bert.pooler.") for n in frozen)  # only BERT's unused pooler


def test_the_exported_folder_names_its_tower_and_loads_again(trained):
    folder = Path(trained.out) / "model"
    saved = json.loads((folder / "config.json").read_text())
    assert saved["image_tower"]["model_type"] == "alignsam-internimage" and saved["image_tower"]["channels"] == 16
    with pytest.raises(ConfigError, match=r"alignsam-internimage image tower.*load_align"):
        AlignModel.from_pretrained(folder)  # the align package never builds an InternImage itself
    reloaded = load_align(folder)
    processor = AlignProcessor.from_pretrained(folder)
    assert processor.image_processor.do_normalize and processor.image_processor.crop_size == (64, 64)
    original = trained.model.eval()
    for key, value in original.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    pixels = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        a = original.encode_image(pixels, normalize=True)
        b = reloaded.encode_image(pixels, normalize=True)
    assert a.shape == (3, original.config.projection_dim) and torch.allclose(a, b, atol=1e-5)
    encoder = Encoder.from_pretrained(folder, batch_size=2, workers=1)
    assert encoder.encode_texts(["a red circle"]).shape == (1, original.config.projection_dim)


def test_resume_and_zero_shot_command(trained, capsys, tmp_path, sample_photo):
    from PIL import Image

    config = trained.config.replace(steps=STEPS + 2)
    resumed = Trainer(config, resume="auto")  # rebuilt from the checkpoint's model config
    assert resumed.step == STEPS and isinstance(resumed.model.vision_model, InternImage)
    photo = tmp_path / "photo.png"
    Image.fromarray(sample_photo[:200, :200]).save(photo)
    folder = str(Path(trained.out) / "model")
    code = cli_main(["classify", str(photo), "--labels", "red circle", "blue square", "--model", folder, "-q"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["num_images"] == 1 and len(out["predictions"][0]["labels"]) == 2


def test_tower_references(tmp_path):
    tower = image_tower("internimage-t")
    assert tower.head is None and tower.embed_dim == 768 and tower.config.channels == 64
    classifier = InternImage(_tiny_tower().replace(num_classes=5))
    path = tmp_path / "classifier.pth"
    torch.save({"model": classifier.state_dict()}, path)
    pretrained = image_tower(path)  # the classifier's weights, without its classification layer
    assert pretrained.head is None and pretrained.config.num_classes == 0
    assert torch.equal(pretrained.state_dict()["levels.0.blocks.0.dcn.offset.weight"],
                       classifier.state_dict()["levels.0.blocks.0.dcn.offset.weight"])  # fmt: skip
    with pytest.raises(ConfigError, match="image_tower builds a new model"):
        ModelSpec(init="demo", image_tower="internimage-t")
    with pytest.raises(ConfigError, match=r"No InternImage architecture 'internimage-h'.*InternImage-T, -S, -B, -L"):
        image_tower("internimage-h")
    g = tmp_path / "g.json"
    g.write_text(json.dumps({"model_type": "internimage", "channels": 512, "use_clip_projector": True}))
    with pytest.raises(ConfigError, match=r"use_clip_projector=True.*supported: InternImage-T"):
        image_tower(g)


def test_the_command_line(shards, text_arch, tower_json, tmp_path, capsys):
    threads = torch.get_num_threads()
    out = tmp_path / "run"
    args = [
        "train", "--train-data", f"{shards['out']}/{{00000..00005}}.tar", "--arch", str(text_arch),
        "--image-tower", str(tower_json), "--out", str(out), "--vocab-size", "300", "--steps", "2",
        "--batch-size", "8", "--workers", "0", "--threads", "1", "--no-progress",
    ]  # fmt: skip
    try:
        assert cli_main(args) == 0
    finally:
        torch.set_num_threads(threads)
    assert json.loads(capsys.readouterr().out)["steps"] == 2
    assert TrainConfig.load(out / "train_config.json").model.image_tower == str(tower_json)
    assert json.loads((out / "model" / "config.json").read_text())["image_tower"]["depths"] == [1, 1, 1, 1]
