"""`FastPath.sam.prompt_batch`: SAM's decoder with the image side done once and the attentions reassociated.

Against the plain `MaskDecoder` on the same random weights (LayerNorms, biases and positional tables all
random: `randomize_`): low-resolution logits within 1e-4 (they reach ~5-10; the rounding seen is ~5e-6) and
IoU predictions within 1e-5, for one shared image with and without mask prompts, one image per prompt set,
single and multimask output, batches split into chunks at odd places, and vit_b's decoder width.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import alignsam.sam.fast.mask_decoder as prompt_batch
from alignsam.errors import InputError
from alignsam.fast import PLAIN, FastPath
from alignsam.sam import SamModel, SamPredictor, sam_vit_b
from alignsam.sam.amg import MaskData
from alignsam.sam.fast.mask_decoder import PromptBatchDecoder, decode_prompt_batch
from alignsam.sam.modeling.mask_decoder import MaskDecoder
from tests.sam.sam_testing import randomize_, tiny_config

LOGITS, IOUS = 1e-4, 1e-5


def _model(config=None, seed: int = 0) -> SamModel:
    return randomize_(SamModel.from_config(config or tiny_config()), seed=seed, logit_gain=4.0).eval()


def _prompts(model: SamModel, b: int, *, masks: bool, boxes: bool = False, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    size = model.config.image_size
    points = torch.rand(b, 2, 2, generator=gen) * size
    labels = torch.randint(-1, 2, (b, 2), generator=gen, dtype=torch.int)  # background, foreground, padding
    box = torch.sort(torch.rand(b, 2, 2, generator=gen) * size, dim=1).values.flatten(1) if boxes else None
    low = model.config.mask_input_size
    mask_inputs = torch.randn(b, 1, low, low, generator=gen) * 5 if masks else None
    return model.embed_prompts(points, labels, box, mask_inputs)


def _check(model: SamModel, embeddings: torch.Tensor, sparse, dense, multimask: bool) -> None:
    decoder, pe = model.mask_decoder, model.prompt_encoder.get_dense_pe()
    with torch.inference_mode():
        expected = decoder(embeddings, pe, sparse, dense, multimask)
        got = decode_prompt_batch(decoder, embeddings, pe, sparse, dense, multimask)
    assert got[0].shape == expected[0].shape and got[1].shape == expected[1].shape
    assert expected[0].abs().max() > 1.0  # logits of a real spread, so that 1e-4 means something
    assert (got[0] - expected[0]).abs().max() <= LOGITS
    assert (got[1] - expected[1]).abs().max() <= IOUS


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("masks", [False, True])
def test_shared_image_matches_plain_decoder(masks: bool, multimask: bool) -> None:
    model = _model()
    grid = model.config.image_encoder.grid_size
    embeddings = torch.randn(1, model.config.mask_decoder.transformer_dim, grid, grid)
    sparse, dense = _prompts(model, 5, masks=masks, boxes=True)
    _check(model, embeddings, sparse, dense, multimask)


def test_one_image_per_prompt_set_matches_plain_decoder() -> None:
    model = _model(seed=1)
    grid = model.config.image_encoder.grid_size
    embeddings = torch.randn(4, model.config.mask_decoder.transformer_dim, grid, grid)
    for masks in (False, True):
        sparse, dense = _prompts(model, 4, masks=masks, seed=2)
        _check(model, embeddings, sparse, dense, True)


def test_chunks_split_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 1, 2 and 3 prompt sets (the shared projections are made by the first chunk, reused after)."""
    model = _model(seed=2)
    grid = model.config.image_encoder.grid_size
    one = model.prompt_encoder.get_dense_pe()[0]
    embeddings = torch.randn(1, model.config.mask_decoder.transformer_dim, grid, grid)
    sparse, dense = _prompts(model, 7, masks=False, seed=3)
    for per_chunk in (1, 2, 3):
        monkeypatch.setattr(prompt_batch, "CHUNK_BYTES", per_chunk * one.numel() * one.element_size())
        _check(model, embeddings, sparse, dense, True)


def test_vit_b_decoder_matches_plain() -> None:
    """The published decoder's width and heads (256, 8), 64 x 64 image tokens, 3 prompt sets."""
    model = _model(sam_vit_b(), seed=3)
    embeddings = torch.randn(1, 256, 64, 64)
    sparse, dense = _prompts(model, 3, masks=False, boxes=True, seed=4)
    _check(model, embeddings, sparse, dense, True)


def test_mismatched_image_batch_is_refused() -> None:
    model = _model()
    grid = model.config.image_encoder.grid_size
    sparse, dense = _prompts(model, 3, masks=False)
    with pytest.raises(InputError, match="2 image embeddings for 3 prompt sets"):
        decode_prompt_batch(
            model.mask_decoder, torch.randn(2, 64, grid, grid), model.prompt_encoder.get_dense_pe(), sparse, dense,
            True,
        )  # fmt: skip


def test_predictor_default_matches_plain_on_several_images(sample_photo: np.ndarray) -> None:
    """What users get (`prompt_batch` on by default) against PLAIN: single prompts, K prompt sets on one
    image, prompt sets on two images at once, and `predict_torch`."""
    model = _model(seed=4)
    images = [sample_photo[:300, :400], sample_photo[100:, 50:]]
    fast, plain = SamPredictor(model), SamPredictor(model, fast=PLAIN)
    assert fast.fast.sam.prompt_batch and not plain.fast.sam.prompt_batch
    assert type(fast._fast_model.mask_decoder) is PromptBatchDecoder and type(model.mask_decoder) is MaskDecoder
    for predictor in (fast, plain):
        predictor.set_images(images)
    sets = {"point_coords": np.array([[[50.0, 60.0]], [[200.0, 120.0]], [[10.0, 250.0]]]),
            "point_labels": np.array([[1], [1], [0]])}  # fmt: skip
    pairs = [
        (fast.predict(point_coords=np.array([[150.0, 120.0]]), point_labels=np.array([1])),
         plain.predict(point_coords=np.array([[150.0, 120.0]]), point_labels=np.array([1]))),
        (fast.predict(**sets, image_index=1), plain.predict(**sets, image_index=1)),
    ]  # fmt: skip
    for batch in ([sets, sets], [{"box": np.array([20.0, 30.0, 200.0, 240.0])}, sets]):  # one decoder call; two
        pairs += list(zip(fast.predict_batch(batch), plain.predict_batch(batch), strict=True))
    for got, expected in pairs:
        assert np.abs(got.low_res_logits - expected.low_res_logits).max() <= LOGITS
        assert np.abs(got.iou_predictions - expected.iou_predictions).max() <= IOUS
        flips = got.masks != expected.masks
        assert flips.mean() < 1e-3  # only pixels whose logit is a rounding away from the threshold
    coords = torch.as_tensor(fast.transform.apply_coords(np.array([[150.0, 120.0]]), images[0].shape[:2]))
    a = fast.predict_torch(coords[None].float(), torch.ones(1, 1, dtype=torch.int), return_logits=True)
    b = plain.predict_torch(coords[None].float(), torch.ones(1, 1, dtype=torch.int), return_logits=True)
    assert (a[0] - b[0]).abs().max() <= LOGITS and (a[2] - b[2]).abs().max() <= LOGITS


def test_zero_prompt_sets_are_refused(sample_photo: np.ndarray) -> None:
    """B = 0 is a clear PromptError on both paths (it was a torch error from deep inside either decoder)."""
    from alignsam.errors import PromptError

    model = _model(seed=6)
    for fast in (None, PLAIN):
        predictor = SamPredictor(model, fast=fast)
        predictor.set_image(sample_photo[:100, :120])
        for call in (predictor.predict_torch, predictor.decode_torch):
            with pytest.raises(PromptError, match="no prompt sets"):
                call(torch.zeros(0, 1, 2), torch.zeros(0, 1, dtype=torch.int))


def test_decode_torch_is_predict_torch_before_resizing(sample_photo: np.ndarray) -> None:
    model = _model(seed=5)
    predictor = SamPredictor(model, fast=FastPath())
    predictor.set_image(sample_photo)
    coords = torch.tensor([[[100.0, 200.0]], [[500.0, 300.0]]])
    labels = torch.ones(2, 1, dtype=torch.int)
    low_res, ious = predictor.decode_torch(coords, labels)
    masks, ious2, low_res2 = predictor.predict_torch(coords, labels, return_logits=True)
    assert torch.equal(low_res, low_res2) and torch.equal(ious, ious2)
    resized = model.postprocess_masks(low_res, predictor.input_sizes[0], predictor.original_sizes[0])
    assert torch.equal(resized, masks)


def test_mask_data_cat_copies_columns_not_items() -> None:
    """`cat` no longer deep-copies list items (the official class does; seconds for a 32 x 32 grid's RLEs),
    but the columns themselves are new: later filtering of one MaskData leaves the other alone."""
    rles = [{"size": [2, 2], "counts": [0, 4]}, {"size": [2, 2], "counts": [4]}]
    source = MaskData(rles=rles, iou=torch.tensor([0.5, 0.25]))
    target = MaskData()
    target.cat(source)
    source.filter(torch.tensor([False, True]))
    assert target["rles"] == rles and target["iou"].tolist() == [0.5, 0.25] and len(source["rles"]) == 1
    assert target["rles"] is not rles and target["rles"][0] is rles[0]
