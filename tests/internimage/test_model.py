"""InternImage: the published structures (keys, shapes, parameter counts), the configuration's checks, the
forward pass against a functional restatement of the architecture, and training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from alignsam.errors import ConfigError
from alignsam.internimage import (
    INTERNIMAGE_PRESETS,
    InternImage,
    InternImageConfig,
    dcnv3_reference,
    internimage_l,
    internimage_s,
    internimage_t,
    internimage_xl,
)
from alignsam.io.weights import build_on_meta
from tests.internimage.helpers import random_model, tiny_config


def _meta(config: InternImageConfig) -> InternImage:
    return build_on_meta(lambda: InternImage(config))


@pytest.mark.parametrize(
    ("name", "entries", "params"),
    [("internimage-t", 633, 29.92e6), ("internimage-s", 751, 50.08e6), ("internimage-b", 751, 97.46e6)],
)
def test_published_structures(name: str, entries: int, params: float) -> None:
    config = INTERNIMAGE_PRESETS[name]()
    model = _meta(config)
    sd = model.state_dict()
    count = sum(p.numel() for p in model.parameters())
    assert len(sd) == entries
    assert round(count / 1e6, 2) == params / 1e6
    assert count == config.num_parameters()
    c = config.channels
    expected = {
        "patch_embed.conv1.weight": (c // 2, 3, 3, 3),
        "patch_embed.norm1.1.weight": (c // 2,),
        "patch_embed.conv2.weight": (c, c // 2, 3, 3),
        "patch_embed.norm2.1.bias": (c,),
        "levels.0.blocks.0.norm1.0.weight": (c,),
        "levels.0.blocks.0.dcn.dw_conv.0.weight": (c, 1, 3, 3),
        "levels.0.blocks.0.dcn.dw_conv.1.1.weight": (c,),
        "levels.0.blocks.0.dcn.offset.weight": (config.groups[0] * 18, c),
        "levels.0.blocks.0.dcn.mask.weight": (config.groups[0] * 9, c),
        "levels.0.blocks.0.dcn.input_proj.weight": (c, c),
        "levels.0.blocks.0.dcn.output_proj.bias": (c,),
        "levels.0.blocks.0.mlp.fc1.weight": (4 * c, c),
        "levels.0.blocks.0.mlp.fc2.weight": (c, 4 * c),
        "levels.0.downsample.conv.weight": (2 * c, c, 3, 3),
        "levels.0.downsample.norm.1.weight": (2 * c,),
        "levels.2.blocks.0.dcn.offset.weight": (config.groups[2] * 18, 4 * c),
        "conv_head.0.weight": (12 * c, 8 * c, 1, 1),
        "conv_head.1.0.running_var": (12 * c,),
        "conv_head.1.0.num_batches_tracked": (),
        "head.weight": (1000, 12 * c),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    last = len(config.depths) - 1
    assert f"levels.{last}.downsample.conv.weight" not in sd
    assert ("levels.0.norm.0.weight" in sd) == (not config.post_norm)
    assert ("levels.0.blocks.0.gamma1" in sd) == (config.layer_scale is not None)
    assert not any(".bias" in k for k in sd if k.startswith("levels.0.downsample.conv"))


@pytest.mark.parametrize(("build", "params"), [(internimage_l, 223.3e6), (internimage_xl, 334.8e6)])
def test_large_presets_build(build, params) -> None:
    config = build()
    assert config.offset_scale == 2.0 and config.image_size == 384 and config.post_norm
    model = _meta(config)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - params) < 0.1e6 and count == config.num_parameters()
    assert all(b.dcn.offset_scale == 2.0 for level in model.levels for b in level.blocks)  # type: ignore[union-attr]


def test_presets_match_the_published_configurations() -> None:
    t, s = internimage_t(), internimage_s()
    assert (t.channels, t.depths, t.groups, t.layer_scale, t.post_norm) == (
        64,
        (4, 4, 18, 4),
        (4, 8, 16, 32),
        None,
        False,
    )
    assert (s.channels, s.depths, s.groups, s.layer_scale, s.post_norm) == (
        80,
        (4, 4, 21, 4),
        (5, 10, 20, 40),
        1e-5,
        True,
    )
    for build in INTERNIMAGE_PRESETS.values():
        config = build()
        assert config.cls_scale == 1.5 and config.mlp_ratio == 4.0
        assert InternImageConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"channels": 64.0}, "channels must be an integer"),
        ({"channels": 63}, "must be even"),
        ({"depths": (4, 4, 18)}, "differ in length"),
        ({"depths": (4, 4, 1.5, 4)}, "depths[2] must be an integer"),
        ({"groups": (4, 8, 16, 30)}, "not divisible"),
        ({"channels": 4096, "depths": (8, 8, 64, 8)}, "over the limit"),
        ({"image_size": 100_000}, "over the limit"),
        ({"layer_scale": 0.0}, "layer_scale"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
        ({"num_classes": -1}, "num_classes"),
        ({"res_post_norm": True}, "InternImage-H/G"),
        ({"use_clip_projector": True}, "supported: InternImage-T"),
        ({"dw_kernel_size": 5}, "dw_kernel_size=5"),
        ({"level2_post_norm": True, "level2_post_norm_block_ids": [5, 11]}, "level2_post_norm"),
    ],
)
def test_config_refuses_bad_values(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        InternImageConfig(**{**internimage_t().to_dict(), **changes})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_config_from_a_hugging_face_config_refuses_other_operators() -> None:
    data = {"model_type": "internimage", "core_op": "DCNv3", "act_layer": "GELU", "norm_layer": "LN", "channels": 64}
    assert InternImageConfig.from_dict(data).channels == 64
    with pytest.raises(ConfigError, match="norm_layer='BN'"):
        InternImageConfig.from_dict({**data, "norm_layer": "BN"})
    with pytest.raises(ConfigError, match="depths must be a non-empty list"):
        InternImageConfig.from_dict({"depths": None})
    with pytest.raises(ConfigError, match="channels must be an integer"):
        InternImageConfig.from_dict({"channels": "64"})


def _functional_forward(model: InternImage, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """InternImage written out from the paper's description and the official module order, with
    functional ops on the state dict, in float64; DCNv3's sampling is the grid_sample formula (the fast core
    is proven against the explicit double sum in test_dcnv3.py)."""
    sd = {k: v.double() for k, v in model.state_dict().items()}
    cfg = model.config

    def ln(t: torch.Tensor, key: str) -> torch.Tensor:  # over the last (channel) dimension
        return F.layer_norm(t, t.shape[-1:], sd[key + ".weight"], sd[key + ".bias"], eps=1e-6)

    def lin(t: torch.Tensor, key: str) -> torch.Tensor:
        return F.linear(t, sd[key + ".weight"], sd[key + ".bias"])

    x = x.double()
    x = F.conv2d(x, sd["patch_embed.conv1.weight"], sd["patch_embed.conv1.bias"], stride=2, padding=1)
    x = F.gelu(ln(x.permute(0, 2, 3, 1), "patch_embed.norm1.1"))
    x = F.conv2d(
        x.permute(0, 3, 1, 2), sd["patch_embed.conv2.weight"], sd["patch_embed.conv2.bias"], stride=2, padding=1
    )
    x = ln(x.permute(0, 2, 3, 1), "patch_embed.norm2.1")  # N x H x W x C from here on
    levels = []
    for i, depth in enumerate(cfg.depths):
        g = cfg.groups[i]
        for j in range(depth):
            p = f"levels.{i}.blocks.{j}."

            def dcn(t: torch.Tensor, p: str = p, g: int = g) -> torch.Tensor:
                c = t.shape[-1]
                f = F.conv2d(
                    t.permute(0, 3, 1, 2),
                    sd[p + "dcn.dw_conv.0.weight"],
                    sd[p + "dcn.dw_conv.0.bias"],
                    padding=1,
                    groups=c,
                )
                f = F.gelu(ln(f.permute(0, 2, 3, 1), p + "dcn.dw_conv.1.1"))
                offsets = lin(f, p + "dcn.offset")
                weights = lin(f, p + "dcn.mask").unflatten(-1, (g, 9)).softmax(-1).flatten(-2)
                value = lin(t, p + "dcn.input_proj")
                sampled = dcnv3_reference(value, offsets, weights, group=g, offset_scale=cfg.offset_scale)
                return lin(sampled, p + "dcn.output_proj")

            def mlp(t: torch.Tensor, p: str = p) -> torch.Tensor:
                return lin(F.gelu(lin(t, p + "mlp.fc1")), p + "mlp.fc2")

            gamma1, gamma2 = sd.get(p + "gamma1", 1.0), sd.get(p + "gamma2", 1.0)
            if cfg.post_norm:
                x = x + gamma1 * ln(dcn(x), p + "norm1.0")
                x = x + gamma2 * ln(mlp(x), p + "norm2.0")
            else:
                x = x + gamma1 * dcn(ln(x, p + "norm1.0"))
                x = x + gamma2 * mlp(ln(x, p + "norm2.0"))
        if not cfg.post_norm:
            x = ln(x, f"levels.{i}.norm.0")
        levels.append(x.permute(0, 3, 1, 2))
        if i < len(cfg.depths) - 1:
            x = F.conv2d(x.permute(0, 3, 1, 2), sd[f"levels.{i}.downsample.conv.weight"], stride=2, padding=1)
            x = ln(x.permute(0, 2, 3, 1), f"levels.{i}.downsample.norm.1")
    h = F.conv2d(x.permute(0, 3, 1, 2), sd["conv_head.0.weight"])
    bn = "conv_head.1.0."
    h = F.batch_norm(h, sd[bn + "running_mean"], sd[bn + "running_var"], sd[bn + "weight"], sd[bn + "bias"], eps=1e-5)
    pooled = F.gelu(h).mean((2, 3))
    return lin(pooled, "head"), levels


@pytest.mark.parametrize(
    "changes",
    [{}, {"post_norm": True, "layer_scale": 1e-5}, {"post_norm": True}, {"layer_scale": 0.1, "offset_scale": 2.0}],
    ids=["T-like", "S/B-like", "post-norm", "layer-scale-pre-norm-offset-2"],
)
def test_forward_equals_the_functional_architecture(changes: dict) -> None:
    model = random_model(tiny_config(**changes))
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        logits = model(x)
        levels = model.forward_levels(x)
    expected, expected_levels = _functional_forward(model, x)
    scale = expected.abs().max().item()
    assert expected.std().item() > 0.1 * scale  # classes differ: a comparison with teeth
    assert (logits.double() - expected).abs().max() < 1e-4 * scale
    for ours, ref in zip(levels, expected_levels, strict=True):
        assert ours.shape == ref.shape
        assert (ours.double() - ref).abs().max() < 1e-4 * ref.abs().max()


def test_feature_outputs() -> None:
    config = tiny_config()
    model = random_model(config)
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        levels = model.forward_levels(x)
        pooled = model.forward_features(x)
        logits = model(x)
    c = config.channels
    assert [tuple(t.shape) for t in levels] == [(2, c, 16, 12), (2, 2 * c, 8, 6), (2, 4 * c, 4, 3), (2, 8 * c, 2, 2)]
    assert pooled.shape == (2, config.head_features) == (2, 192)
    assert torch.allclose(model.head(pooled), logits, atol=1e-6)  # type: ignore[misc]
    headless = random_model(config.replace(num_classes=0))
    with torch.no_grad():
        assert headless(x).shape == (2, 192)
    assert "head.weight" not in headless.state_dict()


def test_fast_and_reference_cores_agree_on_a_model() -> None:
    model = random_model(tiny_config(post_norm=True, layer_scale=0.5))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fast = model(x)
        reference = model.set_dcnv3_core(dcnv3_reference)(x)
    assert (fast - reference).abs().max() < 1e-4 * reference.abs().max()


def test_backward_reaches_every_parameter() -> None:
    model = random_model(tiny_config(post_norm=True, layer_scale=1e-5, drop_path_rate=0.1)).train()
    x = torch.randn(2, 3, 64, 64)
    loss = F.cross_entropy(model(x), torch.tensor([1, 7]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())  # type: ignore[arg-type]


def test_training_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = InternImage(tiny_config(num_classes=2)).train()
    x = torch.randn(4, 3, 32, 32)
    y = torch.tensor([0, 1] * 2)
    x[y == 1] += 0.5  # a learnable difference
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert any(b.dcn.offset.weight.abs().sum() > 0 for lv in model.levels for b in lv.blocks)  # type: ignore[union-attr]


def test_drop_path_rates_rise_linearly() -> None:
    config = tiny_config(drop_path_rate=0.3)
    rates = [b.drop_path.p for lv in InternImage(config).levels for b in lv.blocks]  # type: ignore[union-attr]
    assert rates == pytest.approx([0.0, 0.075, 0.15, 0.225, 0.3], abs=1e-7)
    assert config.replace(drop_path_type="uniform").drop_path_rates() == [0.3] * 5
    assert math.isclose(sum(rates), 0.75, rel_tol=1e-6)
