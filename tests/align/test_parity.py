"""Parity with transformers' AlignModel on the same weights (random, with randomised batch-norm statistics).

Tolerance: 1e-4 absolute (fp32) on image_embeds, text_embeds, logits_per_image and logits_per_text;
1e-5 on the loss and every gradient.
"""

from __future__ import annotations

import pytest
import torch

from alignsam import AlignModel, AlignProcessor, AlignTextModel, AlignVisionModel
from alignsam.align import convert
from alignsam.align.fast.prepare import _TwinCache
from alignsam.fast import FastPath
from alignsam.layers import set_attention_impl

from .conftest import SMALL_CONFIGS, TEXTS, conditioned_align, hf_align, write_hub_processor

ATOL = 1e-4


def _inputs(processor: AlignProcessor, photos, padding):
    text = processor(text=TEXTS, padding=padding, return_tensors="pt")
    images = processor(images=photos[:2], return_tensors="pt")
    return {**text, **images}


def _compare(ours: AlignModel, theirs, inputs) -> dict[str, float]:
    with torch.no_grad():
        a = ours(**inputs)
        b = theirs(**inputs)
    diffs = {}
    for name in ("image_embeds", "text_embeds", "logits_per_image", "logits_per_text"):
        diffs[name] = (getattr(a, name) - getattr(b, name)).abs().max().item()
        assert diffs[name] <= ATOL, (name, diffs[name])
    # the comparison means something only if the model separates its inputs
    assert torch.pdist(a.image_embeds).min() > 1e-2
    assert torch.pdist(a.text_embeds).min() > 1e-2
    return diffs


def _processor(tmp_path, size: int) -> AlignProcessor:
    processor = AlignProcessor.from_pretrained(write_hub_processor(tmp_path / "proc"))
    processor.image_processor.size = (size + size // 5, size + size // 5)
    processor.image_processor.crop_size = (size, size)
    return processor


def _check_config(tmp_path, photos, text_kw, vision_kw, proj, *, fast_twin: bool = True):
    theirs = hf_align(text_kw, vision_kw, proj)
    theirs.save_pretrained(tmp_path / "ckpt")
    ours = AlignModel.from_pretrained(tmp_path / "ckpt")
    processor = _processor(tmp_path, vision_kw["image_size"])
    if fast_twin:
        for padding in ("max_length", "longest"):
            _compare(ours, theirs, _inputs(processor, photos, padding))  # eval + no_grad: the fast twin answers
        assert isinstance(ours.__dict__.get("_twin_cache"), _TwinCache)
    ours.fast = FastPath.PLAIN  # the plain modules themselves
    for padding in ("max_length", "longest"):
        _compare(ours, theirs, _inputs(processor, photos, padding))
    # the plain reference attention path agrees with the fused one
    set_attention_impl(ours, "reference")
    _compare(ours, theirs, _inputs(processor, photos, "longest"))


@pytest.mark.parametrize("name", list(SMALL_CONFIGS))
def test_small_configs_match_transformers(tmp_path, photos, name):
    text_kw, vision_kw, proj = SMALL_CONFIGS[name]
    _check_config(tmp_path, photos, text_kw, vision_kw, proj)


@pytest.mark.slow
def test_align_base_matches_transformers(tmp_path, photos):
    """The align-base architecture: EfficientNet-B7 at 289 px, BERT-base, projection 640, with deliberately wild
    batch-norm statistics: the plain modules run transformers' operations in the same order, so they agree
    within 1e-4. The fast twin folds batch norms into the convolutions, which changes rounding; through 55
    blocks of wild statistics that difference grows chaotically (0.18 measured), so the fast twin is compared
    on weights shaped like a trained network's in the next test."""
    _check_config(tmp_path, photos, {}, {"image_size": 289, "hidden_dim": 640}, 640, fast_twin=False)


@pytest.mark.slow
def test_align_base_seed_api_matches_transformers(tmp_path, photos):
    """The seed API as users call it (eval + no_grad: the default fast twin answers) against transformers, on
    align-base weights with calibrated batch norms (`conditioned_align`), within 1e-4."""
    from alignsam.align import align_base
    from alignsam.align.convert import ours_align_to_hf

    ours = conditioned_align(align_base())
    theirs = hf_align({}, {"image_size": 289, "hidden_dim": 640}, 640)
    missing, unexpected = theirs.load_state_dict(ours_align_to_hf(ours.state_dict()), strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    theirs.eval()
    ours.fast = FastPath()  # the default a user gets
    processor = _processor(tmp_path, 289)
    inputs = _inputs(processor, photos, "longest")
    with torch.no_grad():
        a, b = ours(**inputs), theirs(**inputs)
    assert isinstance(ours.__dict__.get("_twin_cache"), _TwinCache)
    for name in ("image_embeds", "text_embeds", "logits_per_image", "logits_per_text"):
        assert (getattr(a, name) - getattr(b, name)).abs().max() <= ATOL, name
    # A random B7 maps different photos to nearly parallel embeddings (distance ~2e-3), so the part that depends
    # on the photo, the difference between the two embeddings, must also agree: within 1% of its size.
    ours_diff, ref_diff = a.image_embeds[0] - a.image_embeds[1], b.image_embeds[0] - b.image_embeds[1]
    assert ref_diff.abs().max() > 1e-4
    assert (ours_diff - ref_diff).abs().max() <= 0.01 * ref_diff.abs().max()
    assert torch.pdist(a.text_embeds).min() > 1e-2


def test_towers_load_alone_and_match(tmp_path, photos):
    text_kw, vision_kw, proj = SMALL_CONFIGS["w0.5-d0.5-64px"]
    theirs = hf_align(text_kw, vision_kw, proj)
    theirs.save_pretrained(tmp_path / "ckpt")
    text = AlignTextModel.from_pretrained(tmp_path / "ckpt")
    vision = AlignVisionModel.from_pretrained(tmp_path / "ckpt")
    ids = torch.randint(1000, 5000, (3, 9))
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        t_ours, t_ref = text(ids), theirs.text_model(ids)
        v_ours, v_ref = vision(pixels), theirs.vision_model(pixels)
    torch.testing.assert_close(t_ours.last_hidden_state, t_ref.last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(t_ours.pooler_output, t_ref.pooler_output, atol=ATOL, rtol=0)
    torch.testing.assert_close(v_ours.last_hidden_state, v_ref.last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(v_ours.pooler_output, v_ref.pooler_output, atol=ATOL, rtol=0)


def test_loss_and_gradients_match_transformers(tmp_path, photos):
    text_kw, vision_kw, proj = SMALL_CONFIGS["w0.5-d0.5-64px"]
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    theirs = hf_align({**text_kw, **no_dropout}, {**vision_kw, "drop_connect_rate": 0.0}, proj)
    theirs.save_pretrained(tmp_path / "ckpt")
    ours = AlignModel.from_pretrained(tmp_path / "ckpt")
    processor = AlignProcessor.from_pretrained(write_hub_processor(tmp_path / "proc"))
    processor.image_processor.crop_size = (64, 64)
    batch = {
        **processor(text=TEXTS, padding="longest"),
        **processor(images=photos),  # four photos, four texts: pairs on the diagonal
    }
    ours.train()
    theirs.train()  # batch norm uses batch statistics; dropout is off
    loss_ours = ours(**batch, return_loss=True).loss
    loss_ref = theirs(**batch, return_loss=True).loss
    loss_ours.backward()
    loss_ref.backward()
    assert abs(loss_ours.item() - loss_ref.item()) <= 1e-5

    grads_ours = convert.ours_align_to_hf({n: p.grad for n, p in ours.named_parameters() if p.grad is not None})
    grads_ref = {n: p.grad for n, p in theirs.named_parameters() if p.grad is not None}
    assert set(grads_ours) == set(grads_ref)
    worst = max((grads_ours[n] - grads_ref[n]).abs().max().item() for n in grads_ref)
    assert worst <= 1e-5, worst
    # backward reaches every parameter except BERT's tanh pooler, which ALIGN's embedding does not use
    no_grad = sorted(n for n, p in ours.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0)
    assert no_grad == ["text_model.bert.pooler.dense.bias", "text_model.bert.pooler.dense.weight"]


def test_round_trip_through_transformers(tmp_path, photos):
    """Our save_pretrained writes a folder transformers loads to the same numbers, and back."""
    from transformers import AlignModel as HFAlignModel

    text_kw, vision_kw, proj = SMALL_CONFIGS["w0.25-d0.3-128px-relu"]
    theirs = hf_align(text_kw, vision_kw, proj)
    theirs.save_pretrained(tmp_path / "a")
    ours = AlignModel.from_pretrained(tmp_path / "a")
    ours.save_pretrained(tmp_path / "b")
    again = HFAlignModel.from_pretrained(tmp_path / "b").eval()
    for (n1, t1), (n2, t2) in zip(sorted(theirs.state_dict().items()), sorted(again.state_dict().items()), strict=True):
        assert n1 == n2 and torch.equal(t1, t2), n1
    reloaded = AlignModel.from_pretrained(tmp_path / "b")
    for (n1, t1), (n2, t2) in zip(ours.state_dict().items(), reloaded.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(t1, t2), n1
