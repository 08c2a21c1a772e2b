"""Checkpoints: our format round trip, the official and Hugging Face layouts, hub ids, and bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import alignsam
from alignsam.errors import CheckpointError, ConfigError, ModelNotFoundError
from alignsam.io import save_safetensors
from alignsam.sam import SamModel, sam_model_registry
from alignsam.sam.convert import detect_layout, hf_to_alignsam, infer_config, official_to_alignsam
from alignsam.sam.modeling.config import SAM_PRESETS
from tests.sam.sam_testing import official_from_config, randomize_, tiny_config


@pytest.fixture(scope="module")
def tiny() -> SamModel:
    torch.manual_seed(0)
    return randomize_(SamModel.from_config(tiny_config()).eval(), seed=2)


def _same_weights(a: SamModel, b: SamModel) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k].float(), sb[k].float(), rtol=0, atol=0, msg=k)


def test_save_and_load_round_trip(tiny: SamModel, tmp_path: Path) -> None:
    tiny.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["model_type"] == "alignsam-sam" and config["format_version"] == 1
    loaded = SamModel.from_pretrained(tmp_path / "saved")
    assert loaded.config == tiny.config and not loaded.training
    _same_weights(tiny, loaded)
    # The weights file alone finds the configuration beside it.
    alone = SamModel.from_pretrained(tmp_path / "saved" / "model.safetensors")
    assert alone.config == tiny.config
    half = SamModel.from_pretrained(tmp_path / "saved", dtype=torch.bfloat16, device="cpu")
    assert (
        half.dtype == torch.bfloat16
        and half.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.dtype == torch.bfloat16
    )


def test_loaded_model_is_trainable(tiny: SamModel, tmp_path: Path) -> None:
    tiny.save_pretrained(tmp_path)
    model = SamModel.from_pretrained(tmp_path).train()
    assert all(p.requires_grad and not p.is_meta for p in model.parameters())
    out = model(image_embeddings=torch.randn(1, 64, 16, 16), boxes=torch.tensor([[0.0, 0.0, 30.0, 30.0]]))
    out.low_res_logits.sum().backward()
    assert model.mask_decoder.iou_token.weight.grad is not None


def test_official_pth_loads(official: Any, tmp_path: Path) -> None:
    reference = randomize_(official_from_config(tiny_config()), seed=4)
    path = tmp_path / "tiny.pth"
    torch.save(reference.state_dict(), path)
    model = SamModel.from_pretrained(path, config=tiny_config())
    converted = official_to_alignsam(reference.state_dict())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, converted[k], rtol=0, atol=0)
    # Without a config the architecture is read from the shapes (heads of the decoder: the published 8).
    inferred = SamModel.from_pretrained(path).config
    assert inferred.image_encoder == tiny_config().image_encoder
    assert inferred.mask_decoder.num_heads == 8 and inferred.mask_decoder.layer_norm_eps == 1e-5
    # A checkpoint of another size is a clear error that names what it holds.
    with pytest.raises(CheckpointError, match=r"wrong shape.*holds a embed_dim 64, depth 2, 256 px model but a vit_b"):
        sam_model_registry["vit_b"](checkpoint=path)


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_infer_config_reads_the_presets_from_official_shapes(official: Any, name: str) -> None:
    with torch.device("meta"):
        reference = official.sam_model_registry[name]()
    sd = official_to_alignsam(reference.state_dict())
    assert infer_config(sd) == SAM_PRESETS[name]()
    with torch.device("meta"):
        ours = SamModel.from_config(SAM_PRESETS[name]())
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in sd.items()}


def _hf_tiny(tmp_path: Path) -> tuple[Any, Path]:
    from transformers import SamConfig as HFSamConfig
    from transformers import SamModel as HFSamModel

    config = HFSamConfig(
        vision_config={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "global_attn_indexes": [1]},
        mask_decoder_config={"hidden_size": 256},
    )
    hf = randomize_(HFSamModel(config).eval(), seed=8)
    hf.save_pretrained(tmp_path)
    return hf, tmp_path


def test_hf_layouts(tmp_path: Path) -> None:
    hf, directory = _hf_tiny(tmp_path / "hf")
    model = SamModel.from_pretrained(directory)
    assert model.config.image_encoder.embed_dim == 64 and model.config.mask_decoder.layer_norm_eps == 1e-6
    assert model.config.mask_decoder.final_layer_norm_eps == 1e-5
    # Older hub files are pickles that hold both names of the tied Fourier matrix.
    state = hf.state_dict()
    assert "prompt_encoder.shared_embedding.positional_embedding" in state
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text((directory / "config.json").read_text())
    torch.save(state, legacy / "pytorch_model.bin")
    _same_weights(model, SamModel.from_pretrained(legacy))
    assert detect_layout(state) == "hf"
    state = dict(state)
    state["prompt_encoder.shared_embedding.positional_embedding"] = (
        state["shared_image_embedding.positional_embedding"] + 1
    )
    with pytest.raises(CheckpointError, match="tied tensors"):
        hf_to_alignsam(state)


def test_hub_id_from_the_cache(tiny: SamModel, tmp_path: Path) -> None:
    """A hub id resolves through the Hugging Face cache without network (HF_HUB_OFFLINE is set by conftest)."""
    snapshot = tmp_path / "cache" / "models--someone--sam-tiny" / "snapshots" / "0123abcd"
    tiny.save_pretrained(snapshot)
    (tmp_path / "cache" / "models--someone--sam-tiny" / "refs").mkdir()
    (tmp_path / "cache" / "models--someone--sam-tiny" / "refs" / "main").write_text("0123abcd")
    loaded = SamModel.from_pretrained("someone/sam-tiny", cache_dir=tmp_path / "cache")
    _same_weights(tiny, loaded)
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache"):
        SamModel.from_pretrained("someone/not-there", cache_dir=tmp_path / "cache")


def test_bad_checkpoints(tiny: SamModel, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="No such file"):
        SamModel.from_pretrained(tmp_path / "missing.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a PyTorch weights file"):
        SamModel.from_pretrained(tmp_path / "garbage.pth")
    save_safetensors({"encoder.weight": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not a Segment Anything model"):
        SamModel.from_pretrained(tmp_path / "other.safetensors")
    sd = {**official_to_alignsam(tiny_official_state()), "image_encoder.extra.weight": torch.zeros(1)}
    save_safetensors(sd, tmp_path / "extra.safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected: image_encoder\.extra\.weight"):
        SamModel.from_pretrained(tmp_path / "extra.safetensors", config=tiny_config())
    sd = tiny_official_state()
    sd["image_encoder.neck.9.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"does not know: image_encoder\.neck\.9\.weight"):
        official_to_alignsam(sd)
    # Folders: one holding only a .pth is pointed at the file; another model's config is refused.
    (tmp_path / "pth_dir").mkdir()
    torch.save(tiny_official_state(), tmp_path / "pth_dir" / "sam.pth")
    with pytest.raises(ModelNotFoundError, match=r"\['sam.pth'\]: pass the file itself"):
        SamModel.from_pretrained(tmp_path / "pth_dir")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="not a Segment Anything model"):
        SamModel.from_pretrained(tmp_path / "bert")


def tiny_official_state() -> dict[str, torch.Tensor]:
    return official_from_config(tiny_config()).state_dict()


def test_registry_without_checkpoint_builds_random_models() -> None:
    assert set(sam_model_registry) == {"default", "vit_h", "vit_l", "vit_b"}
    assert alignsam.sam_model_registry is sam_model_registry
    with torch.device("meta"):
        model = sam_model_registry["vit_l"]()
    assert model.config == SAM_PRESETS["vit_l"]() and not model.training
