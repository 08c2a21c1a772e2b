"""ALIGN model units: configs, block schedule, converters, encode paths, training, save/load."""

from __future__ import annotations

import json

import pytest
import torch

from alignsam import AlignConfig, AlignModel, AlignTextConfig, AlignVisionConfig
from alignsam.align import align_base, align_loss, convert
from alignsam.align.modeling.efficientnet import block_schedule
from alignsam.errors import ConfigError, InputError


def tiny_config(**vision) -> AlignConfig:
    text = AlignTextConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    v = AlignVisionConfig(**{"width_coefficient": 0.25, "depth_coefficient": 0.3, "image_size": 64, **vision})
    return AlignConfig.from_text_vision_configs(text, v, projection_dim=v.embed_dim)


def test_b7_schedule_matches_the_published_table():
    specs = block_schedule(align_base().vision_config)
    assert len(specs) == 55
    stages = [(0, 4), (4, 11), (11, 18), (18, 28), (28, 38), (38, 51), (51, 55)]
    widths = [(64, 32), (32, 48), (48, 80), (80, 160), (160, 224), (224, 384), (384, 640)]
    kernels = [3, 3, 5, 3, 5, 5, 3]
    strides = [1, 2, 2, 2, 1, 2, 1]
    se_first = [16, 8, 12, 20, 40, 56, 96]
    for (a, b), (cin, cout), k, s, se in zip(stages, widths, kernels, strides, se_first, strict=True):
        first, rest = specs[a], specs[a + 1 : b]
        assert (first.in_dim, first.out_dim, first.kernel_size, first.stride, first.se_dim) == (cin, cout, k, s, se)
        assert not first.residual and all(r.residual and r.stride == 1 and r.in_dim == cout for r in rest)
    assert specs[54].drop_path == pytest.approx(0.2 * 54 / 55)
    assert specs[4].pad == (0, 1, 0, 1) and specs[11].pad == (1, 2, 1, 2)


def test_config_json_round_trip_and_validation(tmp_path):
    cfg = tiny_config()
    cfg.save(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "align" and data["vision_config"]["model_type"] == "align_vision_model"
    assert AlignConfig.from_dict(data) == cfg
    # generic keys transformers writes (and the hub's align-base has) are ignored
    noisy = {**data, "architectures": ["AlignModel"], "torch_dtype": "float32", "num_beams": 1}
    assert AlignConfig.from_dict(noisy) == cfg
    with pytest.raises(ConfigError, match="multiple of num_attention_heads"):
        AlignTextConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ConfigError, match="kernel_sizes must be odd"):
        AlignVisionConfig(kernel_sizes=(3, 3, 4, 3, 5, 5, 3))
    with pytest.raises(ConfigError, match="projection_dim 512 must equal"):
        AlignConfig(projection_dim=512)
    with pytest.raises(ConfigError, match="pooling_type"):
        AlignVisionConfig(pooling_type="median")
    with pytest.raises(ConfigError, match="absolute position"):
        AlignTextConfig.from_dict({"position_embedding_type": "relative_key"})
    assert AlignConfig(text_config={"hidden_size": 64, "num_attention_heads": 2}).text_config.hidden_size == 64


def test_converter_round_trip_is_exact():
    model = AlignModel(tiny_config())
    ours = model.state_dict()
    hf = convert.ours_align_to_hf(ours)
    assert "text_model.encoder.layer.1.attention.self.query.weight" in hf
    assert "vision_model.encoder.blocks.0.depthwise_conv.depthwise_norm.running_var" in hf
    back = convert.hf_align_to_ours(hf)
    assert back.keys() == ours.keys() and all(torch.equal(back[k], ours[k]) for k in ours)


def test_encode_paths_and_output_api():
    model = AlignModel(tiny_config()).eval()
    ids = torch.randint(5, 100, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        t = model.encode_text(ids, mask, normalize=True)
        i = model.encode_image(pixels, normalize=True)
    assert out.logits_per_image.shape == (2, 3) and out.logits_per_text.shape == (3, 2)
    torch.testing.assert_close(out.text_embeds, t)
    torch.testing.assert_close(out.image_embeds, i)
    torch.testing.assert_close(out.logits_per_text, t @ i.T / model.temperature)
    assert torch.allclose(t.norm(dim=-1), torch.ones(3))
    assert out["logits_per_image"] is out.logits_per_image and out[0] is out.logits_per_image  # no loss: skipped
    assert "loss" not in out
    # padding beyond the mask does not change a text's embedding
    longer = torch.cat([ids, torch.zeros(3, 5, dtype=torch.long)], 1)
    with torch.no_grad():
        t2 = model.encode_text(longer, torch.cat([mask, torch.zeros(3, 5, dtype=torch.long)], 1), normalize=True)
    torch.testing.assert_close(t, t2, atol=1e-6, rtol=0)
    with pytest.raises(InputError, match="as many texts as images"):
        model(input_ids=ids, pixel_values=pixels, return_loss=True)
    with pytest.raises(InputError, match="both"):
        model(input_ids=ids)


def test_loss_matches_formula():
    logits = torch.randn(5, 5)
    eye = torch.eye(5) * 0.9 + 0.1 / 5
    manual = (-(eye * logits.log_softmax(1)).sum(1).mean() - (eye * logits.t().log_softmax(1)).sum(1).mean()) / 2
    torch.testing.assert_close(align_loss(logits), manual)
    torch.testing.assert_close(align_loss(logits, reduction="sum"), 2 * manual)


def test_tiny_model_trains():
    torch.manual_seed(0)
    model = AlignModel(tiny_config(drop_connect_rate=0.0)).train()
    ids = torch.randint(5, 100, (8, 6))
    pixels = torch.randn(8, 3, 64, 64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = model(input_ids=ids, pixel_values=pixels, return_loss=True).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # at temperature 1 logits lie in [-1, 1], which bounds the loss from below near 1.1 for 8 pairs, so
    # learning shows as a clear drop from log(8) and a temperature that has started to fall
    assert losses[0] == pytest.approx(2.08, abs=0.05)
    assert losses[-1] < losses[0] - 0.6, losses
    assert model.temperature.item() < 0.99


def test_save_load_round_trip(tmp_path):
    model = AlignModel(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    again = AlignModel.from_pretrained(tmp_path)
    assert not again.training
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)
    half = AlignModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert half.text_projection.weight.dtype == torch.bfloat16
