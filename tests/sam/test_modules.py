"""Tiny-config tests of the towers: shapes, fused == reference attention, gradients, module-level parity."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from alignsam.errors import ConfigError, InputError, PromptError
from alignsam.io import load_weights_into
from alignsam.layers import set_attention_impl
from alignsam.sam import ImageEncoderConfig, MaskDecoderConfig, SamConfig, SamModel
from alignsam.sam.convert import official_to_alignsam
from alignsam.sam.modeling import image_encoder
from alignsam.sam.modeling.config import SAM_PRESETS
from alignsam.sam.modeling.image_encoder import (
    decomposed_rel_pos,
    rel_pos_attention,
    window_partition,
    window_unpartition,
)
from tests.sam.sam_testing import official_from_config, randomize_, tiny_config


@pytest.fixture(scope="module")
def tiny() -> SamModel:
    torch.manual_seed(0)
    model = SamModel.from_config(tiny_config()).eval()
    return randomize_(model, seed=5)


def _prompts(b: int = 2) -> dict[str, torch.Tensor]:
    return {
        "point_coords": torch.tensor([[[30.0, 40.0], [100.0, 20.0]]]).repeat(b, 1, 1),
        "point_labels": torch.tensor([[1, 0]]).repeat(b, 1),
        "boxes": torch.tensor([[10.0, 10.0, 200.0, 150.0]]).repeat(b, 1),
    }


def test_forward_shapes(tiny: SamModel) -> None:
    pixels = torch.randn(2, 3, 256, 256)
    out = tiny(pixels, **_prompts(2), multimask_output=True)
    assert out.low_res_logits.shape == (2, 3, 64, 64)
    assert out.iou_predictions.shape == (2, 3)
    assert out.image_embeddings is not None and out.image_embeddings.shape == (2, 64, 16, 16)
    single = tiny(image_embeddings=out.image_embeddings, **_prompts(2), multimask_output=False)
    assert single.low_res_logits.shape == (2, 1, 64, 64)
    # Token 0 is the single-mask output, tokens 1..3 the multimask outputs.
    full, _ = tiny.mask_decoder.predict_masks(
        out.image_embeddings,
        tiny.prompt_encoder.get_dense_pe(),
        *tiny.prompt_encoder(
            points=(_prompts()["point_coords"], _prompts()["point_labels"]), boxes=_prompts()["boxes"], masks=None
        ),
    )
    torch.testing.assert_close(full[:, :1], single.low_res_logits)
    torch.testing.assert_close(full[:, 1:], out.low_res_logits, rtol=1e-5, atol=1e-5)
    assert out["iou_predictions"] is out.iou_predictions and out[0] is out.low_res_logits


def test_one_embedding_serves_many_prompt_sets(tiny: SamModel) -> None:
    embedding = torch.randn(1, 64, 16, 16)
    shared = tiny(image_embeddings=embedding, **_prompts(3))
    repeated = tiny(image_embeddings=embedding.expand(3, -1, -1, -1).contiguous(), **_prompts(3))
    torch.testing.assert_close(shared.low_res_logits, repeated.low_res_logits)
    with pytest.raises(InputError, match="2 image embeddings for 3 prompt sets"):
        tiny(image_embeddings=torch.randn(2, 64, 16, 16), **_prompts(3))


def test_forward_input_errors(tiny: SamModel) -> None:
    with pytest.raises(InputError, match="exactly one"):
        tiny(point_coords=torch.zeros(1, 1, 2), point_labels=torch.ones(1, 1))
    with pytest.raises(PromptError, match="at least one prompt"):
        tiny.embed_prompts(None, None, None, None)
    # Without any prompt, forward answers as transformers' SamModel does (tests/sam/test_transformers_api.py).
    assert tiny(image_embeddings=torch.randn(1, 64, 16, 16)).pred_masks.shape == (1, 1, 3, 64, 64)
    with pytest.raises(InputError, match="B x 3 x 256 x 256"):
        tiny(torch.randn(1, 3, 200, 256), boxes=torch.zeros(1, 4))


def test_sdpa_matches_reference_attention(tiny: SamModel) -> None:
    pixels = torch.randn(1, 3, 256, 256)
    masks = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        fused = tiny(pixels, **_prompts(2), mask_inputs=masks)
        set_attention_impl(tiny, "reference")
        try:
            plain = tiny(pixels, **_prompts(2), mask_inputs=masks)
        finally:
            set_attention_impl(tiny, "sdpa")
    torch.testing.assert_close(fused.low_res_logits, plain.low_res_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fused.iou_predictions, plain.iou_predictions, rtol=1e-4, atol=1e-5)
    assert (
        sum(hasattr(m, "attn_impl") for m in tiny.modules()) == 2 + 2 * 3 + 1
    )  # 2 encoder blocks; 2 decoder blocks x 3 + the final one


def test_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    model = randomize_(SamModel.from_config(tiny_config()), seed=1).train()
    out = model(torch.randn(2, 3, 256, 256), **_prompts(2), mask_inputs=torch.randn(2, 1, 64, 64))
    (out.low_res_logits.square().mean() + out.iou_predictions.sum()).backward()
    # The single-mask token and its hypernetwork only get gradients with multimask_output=False.
    single = model(torch.randn(1, 3, 256, 256), boxes=torch.tensor([[0.0, 0.0, 50.0, 50.0]]), multimask_output=False)
    single.low_res_logits.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_encoder_finetuning_step() -> None:
    """The fine-tuning pattern: cached embeddings, frozen encoder, prompt encoder + decoder trained."""
    model = SamModel.from_config(tiny_config()).train()
    model.image_encoder.requires_grad_(False)
    with torch.no_grad():
        embeddings = model.image_encoder(torch.randn(2, 3, 256, 256))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    before = model.mask_decoder.iou_token.weight.clone()
    out = model(image_embeddings=embeddings, **_prompts(2), multimask_output=False)
    torch.nn.functional.binary_cross_entropy_with_logits(
        out.low_res_logits, torch.ones_like(out.low_res_logits)
    ).backward()
    optimizer.step()
    assert not torch.equal(before, model.mask_decoder.iou_token.weight)
    assert all(p.grad is None for p in model.image_encoder.parameters())


def test_window_partition_round_trip_with_padding() -> None:
    x = torch.randn(2, 10, 13, 8)
    windows, padded = window_partition(x, 4)
    assert windows.shape == (2 * 3 * 4, 4, 4, 8) and padded == (12, 16)
    torch.testing.assert_close(window_unpartition(windows, 4, padded, (10, 13)), x)


def test_decomposed_rel_pos_matches_official(official: Any) -> None:
    from segment_anything.modeling.image_encoder import add_decomposed_rel_pos

    b, heads, size, dim = 2, 3, 5, 8
    q = torch.randn(b, heads, size * size, dim)
    rel_h, rel_w = torch.randn(2 * size - 1, dim), torch.randn(2 * size - 1, dim)
    zeros = torch.zeros(b * heads, size * size, size * size)
    expected = add_decomposed_rel_pos(
        zeros, q.reshape(b * heads, size * size, dim), rel_h, rel_w, (size, size), (size, size)
    )
    got = decomposed_rel_pos(q, rel_h, rel_w, (size, size), (size, size))
    torch.testing.assert_close(got.reshape(b * heads, size * size, size * size), expected)
    # A table of another length is resized first, as in the official code.
    short_h, short_w = torch.randn(5, dim), torch.randn(7, dim)
    expected = add_decomposed_rel_pos(
        zeros, q.reshape(b * heads, -1, dim), short_h, short_w, (size, size), (size, size)
    )
    got = decomposed_rel_pos(q, short_h, short_w, (size, size), (size, size))
    torch.testing.assert_close(got.reshape(b * heads, size * size, size * size), expected)


@pytest.mark.parametrize("rows", [1, 3, 7])  # one grid row per slice; slices of 3 (the last one short); whole
def test_rel_pos_attention_in_slices_equals_the_whole_bias(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    """Inference builds the bias a few query rows at a time; the result must equal the whole-bias attention
    to float32 rounding (observed: at most 7e-7 on values of about 1, the kernel blocks the rows otherwise),
    and training must still get gradients through the whole bias."""
    from alignsam.layers import attention

    b, heads, size, dim = 2, 3, 7, 8
    torch.manual_seed(0)
    q, k, v = (torch.randn(b, heads, size * size, dim).transpose(1, 2).contiguous().transpose(1, 2) for _ in range(3))
    rel_h, rel_w = torch.randn(2 * size - 1, dim), torch.randn(2 * size - 1, dim)
    whole = attention(q, k, v, decomposed_rel_pos(q, rel_h, rel_w, (size, size), (size, size)))
    row_bytes = b * heads * size * size * size * 4
    monkeypatch.setattr(image_encoder, "BIAS_CHUNK_BYTES", rows * row_bytes)
    with torch.no_grad():
        sliced = rel_pos_attention(q, k, v, rel_h, rel_w, (size, size))
    torch.testing.assert_close(sliced, whole, rtol=0, atol=2e-6)
    table = rel_h.clone().requires_grad_(True)
    trained = rel_pos_attention(q, k, v, table, rel_w, (size, size))
    trained.sum().backward()
    assert table.grad is not None and bool(table.grad.abs().sum() > 0)
    torch.testing.assert_close(trained.detach(), whole, rtol=0, atol=2e-6)


def test_towers_match_official_modules_directly(official: Any) -> None:
    """Module-level parity on a tiny config (fast; the full vit_b parity runs through the predictors)."""
    config = tiny_config()
    reference: Any = randomize_(official_from_config(config), seed=11)
    ours = SamModel.from_config(config).eval()
    load_weights_into(ours, official_to_alignsam(reference.state_dict()))
    pixels = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(ours.image_encoder(pixels), reference.image_encoder(pixels), rtol=1e-4, atol=1e-4)
        points = (torch.tensor([[[20.5, 30.0], [3.0, 200.0]]]), torch.tensor([[1, 0]]))
        masks = torch.randn(1, 1, 64, 64)
        for boxes in (None, torch.tensor([[5.0, 6.0, 100.0, 120.0]])):
            exp_sparse, exp_dense = reference.prompt_encoder(points=points, boxes=boxes, masks=masks)
            sparse, dense = ours.prompt_encoder(points=points, boxes=boxes, masks=masks)
            torch.testing.assert_close(sparse, exp_sparse)
            torch.testing.assert_close(dense, exp_dense)
        torch.testing.assert_close(ours.prompt_encoder.get_dense_pe(), reference.prompt_encoder.get_dense_pe())


def test_point_labels(tiny: SamModel) -> None:
    encoder = tiny.prompt_encoder
    coords = torch.tensor([[[10.0, 20.0], [30.0, 40.0]]])
    with torch.no_grad():
        pe = encoder.pe_layer.forward_with_coords(coords + 0.5, encoder.input_image_size)
        out, _ = encoder(points=(coords, torch.tensor([[-10, -1]])), boxes=None, masks=None)
        torch.testing.assert_close(out[0, 0], torch.zeros(64))  # ignored padding: a zero token
        torch.testing.assert_close(out[0, 1], encoder.not_a_point_embed.weight[0])
        assert out.shape == (1, 3, 64)  # plus SAM's own padding point (no box)
        # Labels 2 and 3 are box corners: the same tokens as the box.
        corners, _ = encoder(points=(coords, torch.tensor([[2, 3]])), boxes=None, masks=None)
        box, _ = encoder(points=None, boxes=coords.reshape(1, 4), masks=None)
        torch.testing.assert_close(corners[:, :2], box)
        fg, _ = encoder(points=(coords, torch.tensor([[1, 0]])), boxes=None, masks=None)
        negative, positive = (w[0] for w in list(encoder.point_embeddings.parameters())[:2])
        torch.testing.assert_close(fg[0, 0], pe[0, 0] + positive)
        torch.testing.assert_close(fg[0, 1], pe[0, 1] + negative)


def test_preprocess_and_postprocess_follow_the_config(tiny: SamModel) -> None:
    image = torch.full((1, 3, 100, 256), 255.0)
    pixels = tiny.preprocess(image)
    assert pixels.shape == (1, 3, 256, 256)
    assert pixels[:, :, 100:].abs().max() == 0  # padded after normalisation
    mean, std = torch.tensor(tiny.config.pixel_mean), torch.tensor(tiny.config.pixel_std)
    torch.testing.assert_close(pixels[0, :, 0, 0], (255 - mean) / std)
    masks = tiny.postprocess_masks(torch.randn(1, 3, 64, 64), (100, 256), (50, 128))
    assert masks.shape == (1, 3, 50, 128)
    with pytest.raises(InputError, match="at most 256"):
        tiny.preprocess(torch.zeros(1, 3, 300, 200))


def test_config_validation_and_json_round_trip() -> None:
    for preset in SAM_PRESETS.values():
        config = preset()
        assert SamConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="not divisible by num_heads"):
        ImageEncoderConfig(embed_dim=100, num_heads=12)
    with pytest.raises(ConfigError, match=r"outside 0\.\.11"):
        ImageEncoderConfig(global_attn_indexes=(12,))
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        ImageEncoderConfig(image_size=1000)
    with pytest.raises(ConfigError, match="share one width"):
        SamConfig(mask_decoder=MaskDecoderConfig(transformer_dim=128, num_heads=8))
    with pytest.raises(ConfigError, match="unknown keys"):
        SamConfig.from_dict({**SamConfig().to_dict(), "image_encoder": {"embed_dimm": 3}})
    with pytest.raises(ConfigError, match="unknown activation"):
        MaskDecoderConfig(mlp_act="swishh")


def test_official_batched_call_matches(official: Any) -> None:
    """`model(batched_input, multimask_output)` with a list of records, as in the official `Sam.forward`."""
    from segment_anything.utils.transforms import ResizeLongestSide

    config = tiny_config()
    reference: Any = randomize_(official_from_config(config), seed=12)
    ours = SamModel.from_config(config).eval()
    load_weights_into(ours, official_to_alignsam(reference.state_dict()))
    transform = ResizeLongestSide(256)
    gen = torch.Generator().manual_seed(0)
    records = []
    for h, w in [(120, 200), (300, 180)]:
        image = torch.randint(0, 256, (h, w, 3), generator=gen, dtype=torch.uint8).numpy()
        records.append(
            {
                "image": torch.as_tensor(transform.apply_image(image)).permute(2, 0, 1).contiguous(),
                "original_size": (h, w),
                "point_coords": transform.apply_coords_torch(torch.tensor([[[50.0, 60.0]], [[10.0, 100.0]]]), (h, w)),
                "point_labels": torch.tensor([[1], [1]]),
            }
        )
    records[1]["boxes"] = transform.apply_boxes_torch(torch.tensor([[5.0, 5.0, 150.0, 250.0]] * 2), (300, 180))
    with torch.no_grad():
        expected = reference(records, multimask_output=False)
        got = ours(records, multimask_output=False)
    for e, g in zip(expected, got, strict=True):
        assert g["masks"].shape == e["masks"].shape and g["masks"].dtype == torch.bool
        torch.testing.assert_close(g["low_res_logits"], e["low_res_logits"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(g["iou_predictions"], e["iou_predictions"], rtol=1e-4, atol=1e-5)
