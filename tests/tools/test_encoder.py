"""The batched embedding engine: same numbers as the model, order kept, bad inputs skipped."""

from __future__ import annotations

import pytest
import torch

from alignsam.errors import ImageError, InputError
from alignsam.tools import Encoder, resolve_templates


@pytest.fixture(scope="module")
def encoder(tiny_align_dir):
    return Encoder.from_pretrained(tiny_align_dir, batch_size=2, workers=2)


def test_texts_match_the_model_with_length_bucketing(encoder):
    texts = ["a cat", "a photo of a very large dog running on a beach", "red", "two blue squares", "x" * 10]
    got = encoder.encode_texts(texts)
    batch = encoder.processor(text=texts, padding="max_length")
    with torch.no_grad():
        want = encoder.model(**batch, pixel_values=torch.zeros(1, 3, 64, 64)).text_embeds
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_images_match_the_model_and_skip_bad_files(encoder, image_folder):
    files = sorted(image_folder.iterdir())
    out = encoder.encode_images(files, on_error="skip")
    good = [i for i, f in enumerate(files) if f.name.startswith(("photo", "plain"))]
    assert out.indices == good
    assert sorted(i for i, _ in out.errors) == [i for i in range(len(files)) if i not in good]
    messages = " ".join(m for _, m in out.errors)
    assert "empty" in messages and "not an image" in messages and "corrupt or truncated" in messages
    batch = encoder.processor(images=[files[i] for i in good])
    with torch.no_grad():
        want = encoder.model.encode_image(batch["pixel_values"], normalize=True)
    torch.testing.assert_close(out.embeds, want, atol=1e-5, rtol=0)
    with pytest.raises(ImageError):
        encoder.encode_images(files, on_error="raise")


def test_incremental_batches(encoder, image_folder):
    files = sorted(f for f in image_folder.iterdir() if f.name.startswith("photo"))
    seen = []
    out = encoder.encode_images(files, on_batch=lambda e, idx: seen.append((e.shape[0], idx)))
    assert [n for n, _ in seen] == [2, 1] and [i for _, idx in seen for i in idx] == out.indices == [0, 1, 2]


def test_classifier_ensembles_templates(encoder):
    single = encoder.classifier(["cat", "dog"], "photo")
    both = encoder.classifier(["cat", "dog"], ["a photo of a {}.", "a drawing of a {}."])
    manual = encoder.encode_texts(["a photo of a cat.", "a drawing of a cat."]).mean(0)
    torch.testing.assert_close(both[0], torch.nn.functional.normalize(manual, dim=0), atol=1e-5, rtol=0)
    assert single.shape == both.shape == (2, encoder.model.config.projection_dim)
    with pytest.raises(InputError, match="empty"):
        encoder.classifier([])
    with pytest.raises(InputError, match="non-empty strings"):
        encoder.classifier(["cat", " "])
    assert len(resolve_templates("imagenet")) == 80 and len(resolve_templates("simple")) == 7
    with pytest.raises(InputError, match="exactly one"):
        resolve_templates(["a {} and a {}"])
    with pytest.raises(InputError, match="Unknown template set"):
        resolve_templates("fancy")


def test_the_classifier_cache_writes_whole_files_and_reads_them_back(encoder, tmp_path, monkeypatch):
    from alignsam.tools.cache import cached_classifier

    monkeypatch.setenv("ALIGNSAM_CACHE", str(tmp_path / "cache"))
    first = cached_classifier(encoder, ["cat", "dog"])
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].startswith("classifier-") and files[0].endswith(".npy")  # no temp left
    assert torch.equal(first, encoder.classifier(["cat", "dog"], "photo"))
    calls = []
    monkeypatch.setattr(encoder, "classifier", lambda *a: calls.append(a))
    assert torch.equal(cached_classifier(encoder, ["cat", "dog"]), first) and not calls  # read, not recomputed
    monkeypatch.undo()
    # a cache place that cannot be written (a file) is no error: the classifier is still returned
    (tmp_path / "blocked").write_text("x")
    monkeypatch.setenv("ALIGNSAM_CACHE", str(tmp_path / "blocked"))
    assert torch.equal(cached_classifier(encoder, ["cat", "dog"]), first)
