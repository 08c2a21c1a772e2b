"""Loading InternImage checkpoints in the official and Hugging Face layouts, saving and reloading ours, the
architecture read from shapes, and the one-line errors for checkpoints that do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from alignsam.errors import CheckpointError, ConfigError, ModelNotFoundError
from alignsam.internimage import INTERNIMAGE_PRESETS, InternImage, labels_for
from alignsam.internimage.convert import hf_to_internimage, infer_config, internimage_to_hf, to_internimage
from alignsam.io.weights import build_on_meta, save_safetensors
from tests.internimage.helpers import random_model, tiny_config

HF_CONFIG = {  # the fields of OpenGVLab/internimage_*'s config.json (remote code)
    "act_layer": "GELU",
    "architectures": ["InternImageModel"],
    "center_feature_scale": False,
    "cls_scale": 1.5,
    "core_op": "DCNv3",
    "drop_path_rate": 0.0,
    "drop_path_type": "linear",
    "drop_rate": 0.0,
    "dw_kernel_size": None,
    "layer_scale": 1e-5,
    "level2_post_norm": False,
    "level2_post_norm_block_ids": None,
    "mlp_ratio": 4.0,
    "model_type": "internimage",
    "norm_layer": "LN",
    "offset_scale": 2.0,
    "post_norm": True,
    "remove_center": False,
    "res_post_norm": False,
    "torch_dtype": "float32",
    "use_clip_projector": False,
    "with_cp": False,
}
HF_PREPROCESSOR = {"crop_size": 96, "do_center_crop": True, "resample": 3, "size": 96}


@pytest.fixture(scope="module")
def tiny() -> InternImage:
    return random_model(tiny_config(post_norm=True, layer_scale=1e-5, offset_scale=2.0), seed=3)


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))


def _same_outputs(a: InternImage, b: InternImage, x: torch.Tensor) -> None:
    with torch.no_grad():
        out_a, out_b = a(x), b(x)
    assert out_a.abs().max() > 1.0
    assert (out_a - out_b).abs().max() < 1e-5 * out_a.abs().max()


def test_official_pth_under_model_loads_with_its_config_beside(tiny, pixels, tmp_path: Path) -> None:
    path = tmp_path / "internimage_tiny.pth"
    torch.save({"model": tiny.state_dict(), "epoch": 3, "optimizer": {"lr": 1.0}}, path)
    model = InternImage.from_pretrained(path, config=tiny.config)
    assert isinstance(model, InternImage) and not model.training
    _same_outputs(tiny, model, pixels)


def test_official_pth_without_config_gets_its_architecture_from_shapes(tiny, tmp_path: Path) -> None:
    path = tmp_path / "bare.pth"
    torch.save(tiny.state_dict(), path)
    model = InternImage.from_pretrained(path)
    config = tiny.config
    assert (model.config.channels, model.config.depths, model.config.groups) == (
        config.channels,
        config.depths,
        config.groups,
    )
    assert model.config.post_norm and model.config.layer_scale is not None and model.config.num_classes == 10
    # the offset scale is in no shape: a custom architecture gets the default, so its owner passes a config
    assert model.config.offset_scale == 1.0


def test_ema_only_checkpoint_loads(tiny, pixels, tmp_path: Path) -> None:
    path = tmp_path / "ema.pth"
    torch.save({"model_ema": tiny.state_dict(), "epoch": 1}, path)
    _same_outputs(tiny, InternImage.from_pretrained(path, config=tiny.config), pixels)


def test_hugging_face_folder_loads(tiny, pixels, tmp_path: Path) -> None:
    sd = internimage_to_hf(tiny.state_dict())
    assert "model.levels.0.blocks.0.layer_scale1" in sd and "model.patch_embed.conv1.weight" in sd
    config = tiny.config
    hf = {**HF_CONFIG, "channels": config.channels, "depths": list(config.depths), "groups": list(config.groups),
          "num_classes": config.num_classes}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(hf))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(HF_PREPROCESSOR))
    torch.save(sd, tmp_path / "pytorch_model.bin")
    model = InternImage.from_pretrained(tmp_path)
    assert model.config.image_size == 96 and model.config.offset_scale == 2.0
    _same_outputs(tiny, model, pixels)
    save_safetensors(sd, tmp_path / "model.safetensors")  # safetensors preferred when both are there
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    _same_outputs(tiny, InternImage.from_pretrained(tmp_path), pixels)


def test_round_trip(tiny, pixels, tmp_path: Path) -> None:
    labels = [f"thing {i}" for i in range(10)]
    out = tiny.save_pretrained(tmp_path / "saved", labels=labels)
    reloaded = InternImage.from_pretrained(out)
    assert reloaded.config == tiny.config
    for key, value in tiny.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    _same_outputs(tiny, reloaded, pixels)
    assert labels_for(out, 10) == labels
    assert json.loads((out / "config.json").read_text())["model_type"] == "alignsam-internimage"
    reloaded.save_pretrained(tmp_path / "again")
    assert labels_for(tmp_path / "again", 10) == [f"class {i}" for i in range(10)]


@pytest.mark.parametrize("name", list(INTERNIMAGE_PRESETS))
def test_architecture_from_shapes_finds_every_preset(name: str) -> None:
    config = INTERNIMAGE_PRESETS[name]()
    sd = build_on_meta(lambda: InternImage(config)).state_dict()
    for layout_sd in (sd, internimage_to_hf(sd)):
        converted, _ = to_internimage(layout_sd)
        found = infer_config(converted)
        assert found == config.replace(drop_path_rate=found.drop_path_rate)
        assert found.offset_scale == config.offset_scale and found.image_size == config.image_size


def test_converters_invert_each_other(tiny) -> None:
    sd = tiny.state_dict()
    assert hf_to_internimage(internimage_to_hf(sd)).keys() == sd.keys()


def test_a_checkpoint_of_another_size_names_the_mismatch(tmp_path: Path) -> None:
    small = random_model(tiny_config())
    path = tmp_path / "small.pth"
    torch.save({"model": small.state_dict()}, path)
    with pytest.raises(CheckpointError) as err:
        InternImage.from_pretrained(path, config=INTERNIMAGE_PRESETS["internimage-t"]())
    message = str(err.value)
    assert "\n" not in message and "missing" in message and "wrong shape" in message
    assert "holds InternImage (channels 16" in message and "InternImage-T was built" in message


def test_truncated_and_foreign_files_fail_in_one_line(tiny, tmp_path: Path) -> None:
    path = tmp_path / "full.pth"
    torch.save({"model": tiny.state_dict()}, path)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError) as err:
        InternImage.from_pretrained(cut)
    assert "truncated" in str(err.value) and "\n" not in str(err.value)
    other = tmp_path / "other.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match=r"Not an InternImage checkpoint.*Supported layouts"):
        InternImage.from_pretrained(other)


def test_h_and_g_are_refused_with_what_is_supported(tiny, tmp_path: Path) -> None:
    sd = dict(tiny.state_dict())
    sd["levels.0.blocks.0.dcn.center_feature_scale_proj_weight"] = torch.zeros(1, 16)
    path = tmp_path / "h.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(
        CheckpointError, match=r"InternImage-H/G checkpoint \(center_feature_scale.*supported: InternImage-T"
    ):
        InternImage.from_pretrained(path)
    folder = tmp_path / "g"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**HF_CONFIG, "use_clip_projector": True, "channels": 512}))
    with pytest.raises(ConfigError, match=r"use_clip_projector=True.*supported: InternImage-T, -S, -B, -L and -XL"):
        InternImage.from_pretrained(folder)


def test_backbone_only_checkpoints_are_named(tiny, tmp_path: Path) -> None:
    sd = {k: v for k, v in tiny.state_dict().items() if not k.startswith(("conv_head", "head"))}
    path = tmp_path / "backbone.pth"
    torch.save(internimage_to_hf(sd), path)
    with pytest.raises(CheckpointError, match="no classification head"):
        InternImage.from_pretrained(path)


def test_references_that_are_not_weights(tmp_path: Path) -> None:
    # a short name is the published checkpoint on the hub, through the one resolver (here: not in the cache)
    with pytest.raises(ModelNotFoundError, match="OpenGVLab/internimage_t_1k_224"):
        InternImage.from_pretrained("internimage-t", cache_dir=tmp_path / "empty-cache")
    folder = tmp_path / "only_pth"
    folder.mkdir()
    torch.save({"model": {}}, folder / "internimage_t_1k_224.pth")
    with pytest.raises(ModelNotFoundError, match=r"internimage_t_1k_224.pth'\]: pass the file itself"):
        InternImage.from_pretrained(folder)
    with pytest.raises(ModelNotFoundError):
        InternImage.from_pretrained(tmp_path / "missing.pth")


def test_hub_id_from_the_cache(tiny, pixels, tmp_path: Path) -> None:
    """A hub id (Hugging Face layout) resolves through the cache without network (HF_HUB_OFFLINE is set)."""
    repo = tmp_path / "cache" / "models--OpenGVLab--internimage_tiny"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    config = tiny.config
    hf = {**HF_CONFIG, "channels": config.channels, "depths": list(config.depths), "groups": list(config.groups),
          "num_classes": config.num_classes, "id2label": {str(i): f"kind {i}" for i in range(10)}}  # fmt: skip
    (snapshot / "config.json").write_text(json.dumps(hf))
    save_safetensors(internimage_to_hf(tiny.state_dict()), snapshot / "model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    model = InternImage.from_pretrained("OpenGVLab/internimage_tiny", cache_dir=tmp_path / "cache")
    _same_outputs(tiny, model, pixels)
    # the class names come from the same cache, wherever it is
    assert labels_for("OpenGVLab/internimage_tiny", 10, cache_dir=tmp_path / "cache")[3] == "kind 3"
    assert labels_for("OpenGVLab/internimage_tiny", 10)[3] == "class 3"  # not in the default cache
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache"):
        InternImage.from_pretrained("OpenGVLab/not-there", cache_dir=tmp_path / "cache")
