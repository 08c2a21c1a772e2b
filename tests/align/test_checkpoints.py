"""Loading real and local checkpoints: MiniLM's real BERT weights, the seed's code examples, the hub
cache layout, and malformed checkpoints."""

from __future__ import annotations

import json
import shutil
import textwrap

import pytest
import torch
from PIL import Image

from alignsam import AlignModel, AlignProcessor, AlignTextModel
from alignsam.errors import CheckpointError, ConfigError, ModelNotFoundError
from alignsam.io import load_state_dict, save_safetensors

from .conftest import MINILM, hf_align, write_hub_processor

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "The quick brown fox jumps over the lazy dog.",
    "Stock markets fell sharply on Tuesday after the announcement.",
    "Photosynthesis converts light energy into chemical energy.",
    "She sells seashells by the seashore.",
    "How do I reset my password?",
    "The Eiffel Tower is located in Paris, France.",
    "Please remember to bring an umbrella tomorrow.",
    "Neural networks are trained with gradient descent.",
    "The cat sat on the mat and looked out of the window.",
    "It was the best of times, it was the worst of times.",
    "Fresh bread smells wonderful in the morning.",
]


def test_minilm_real_weights_match_transformers_bert():
    """The text tower loads sentence-transformers/all-MiniLM-L6-v2 (a BERT checkpoint) and matches
    transformers' BertModel within 1e-4 on twenty real sentences."""
    from transformers import BertModel

    ours = AlignTextModel.from_pretrained(MINILM)
    theirs = BertModel.from_pretrained(MINILM).eval()
    processor = AlignProcessor(tokenizer=None)
    from alignsam.align import AlignTokenizer

    tok = AlignTokenizer.from_pretrained(MINILM)
    batch = tok(SENTENCES, padding="longest")
    with torch.no_grad():
        a = ours(**batch)
        b = theirs(**batch)
    mask = batch["attention_mask"].bool()
    diff = (a.last_hidden_state - b.last_hidden_state)[mask].abs().max().item()
    assert diff <= 1e-4, diff
    assert (a.pooler_output - b.pooler_output).abs().max().item() <= 1e-4
    # real weights: similar sentences are closer than unrelated ones (mean-pooled, as MiniLM is used)
    emb = (a.last_hidden_state * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    emb = torch.nn.functional.normalize(emb, dim=-1)
    assert emb[0] @ emb[1] > emb[0] @ emb[11] + 0.2
    assert processor.tokenizer is None


SEED_EXAMPLES = [
    # The three examples of the kakaobrain/align-base model card, verbatim.
    """
    import requests
    import torch
    from PIL import Image
    from transformers import AlignProcessor, AlignModel

    processor = AlignProcessor.from_pretrained("kakaobrain/align-base")
    model = AlignModel.from_pretrained("kakaobrain/align-base")

    url = "http://images.cocodataset.org/val2017/000000039769.jpg"
    image = Image.open(requests.get(url, stream=True).raw)
    candidate_labels = ["an image of a cat", "an image of a dog"]

    inputs = processor(text=candidate_labels, images=image, return_tensors="pt")

    with torch.no_grad():
        outputs = model(**inputs)

    # this is the image-text similarity score
    logits_per_image = outputs.logits_per_image

    # we can take the softmax to get the label probabilities
    probs = logits_per_image.softmax(dim=1)
    print(probs)
    """,
    """
    import requests
    import torch
    from PIL import Image
    from transformers import AlignProcessor, AlignModel

    processor = AlignProcessor.from_pretrained("kakaobrain/align-base")
    model = AlignModel.from_pretrained("kakaobrain/align-base")

    url = "http://images.cocodataset.org/val2017/000000039769.jpg"
    image = Image.open(requests.get(url, stream=True).raw)
    text = "an image of a cat"

    inputs = processor(text=text, images=image, return_tensors="pt")

    with torch.no_grad():
        outputs = model(**inputs)

    # multi-modal text embedding
    text_embeds = outputs.text_embeds

    # multi-modal image embedding
    image_embeds = outputs.image_embeds
    """,
    """
    import requests
    import torch
    from PIL import Image
    from transformers import AlignProcessor, AlignModel

    processor = AlignProcessor.from_pretrained("kakaobrain/align-base")
    model = AlignModel.from_pretrained("kakaobrain/align-base")

    # image embeddings
    url = "http://images.cocodataset.org/val2017/000000039769.jpg"
    image = Image.open(requests.get(url, stream=True).raw)
    inputs = processor(images=image, return_tensors="pt")

    image_embeds = model.get_image_features(
        pixel_values=inputs['pixel_values'],
    )

    # text embeddings
    text = "an image of a cat"
    inputs = processor(text=text, return_tensors="pt")

    text_embeds = model.get_text_features(
        input_ids=inputs['input_ids'],
        attention_mask=inputs['attention_mask'],
        token_type_ids=inputs['token_type_ids'],
    )
    """,
]


@pytest.fixture(scope="module")
def seed_checkpoint(tmp_path_factory):
    """A full ALIGN folder (hub layout: config.json, pytorch_model.bin, processor files) with 640-d
    embeddings, small enough for a test: B7 widths, one block per stage, a two-layer BERT."""
    out = tmp_path_factory.mktemp("align-seed")
    model = hf_align(
        {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256},
        {"width_coefficient": 2.0, "depth_coefficient": 0.1, "image_size": 289, "hidden_dim": 640},
        640,
    )
    model.save_pretrained(out)
    sd = load_state_dict(out / "model.safetensors")
    (out / "model.safetensors").unlink()
    torch.save({**sd, "text_model.embeddings.position_ids": torch.arange(512)[None]}, out / "pytorch_model.bin")
    write_hub_processor(out)
    return out


def _run_seed(code: str, ckpt, image_path, library: str) -> dict:
    code = textwrap.dedent(code)
    code = code.replace("import requests\n", "")
    code = code.replace('"kakaobrain/align-base"', repr(str(ckpt)))
    code = code.replace("Image.open(requests.get(url, stream=True).raw)", f"Image.open({str(image_path)!r})")
    code = code.replace("from transformers import", f"from {library} import")
    namespace: dict = {}
    exec(compile(code, f"<seed example, {library}>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("index", [0, 1, 2])
def test_seed_examples_run_and_match_transformers(seed_checkpoint, tmp_path, photos, index):
    image_path = tmp_path / "cats.jpg"
    Image.fromarray(photos[2]).save(image_path)  # chelsea the cat
    ours = _run_seed(SEED_EXAMPLES[index], seed_checkpoint, image_path, "alignsam")
    theirs = _run_seed(SEED_EXAMPLES[index], seed_checkpoint, image_path, "transformers")
    if index == 0:
        assert ours["probs"].shape == (1, 2)
        assert torch.allclose(ours["probs"].sum(1), torch.ones(1))
        torch.testing.assert_close(ours["probs"], theirs["probs"], atol=1e-4, rtol=0)
    elif index == 1:
        assert ours["text_embeds"].shape == ours["image_embeds"].shape == (1, 640)
        torch.testing.assert_close(ours["text_embeds"], theirs["text_embeds"], atol=1e-4, rtol=0)
        torch.testing.assert_close(ours["image_embeds"], theirs["image_embeds"], atol=1e-4, rtol=0)
    else:
        # plain (1, 640) tensors, as the model card uses them (transformers 5 returns output objects)
        assert isinstance(ours["image_embeds"], torch.Tensor) and ours["image_embeds"].shape == (1, 640)
        assert isinstance(ours["text_embeds"], torch.Tensor) and ours["text_embeds"].shape == (1, 640)
        # Unnormalised features have an arbitrary scale (here up to ~1e3 after random blocks), so they are
        # compared relative to their largest entry: 1e-4 of it. Each block differs from transformers only
        # by float32 rounding (~1e-7 relative) because means are summed in another order.
        for key in ("image_embeds", "text_embeds"):
            a, b = ours[key], theirs[key].pooler_output
            assert (a - b).abs().max() <= 1e-4 * b.abs().max(), key


def _fake_hub_cache(cache, repo_id: str, files_from) -> None:
    """Lay out files as huggingface_hub's cache does: models--org--name/snapshots/<rev>/ + refs/main."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    snap = root / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for f in files_from.iterdir():
        shutil.copy(f, snap / f.name)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("0" * 40)


def test_hub_id_loads_from_cache_offline(seed_checkpoint, tmp_path):
    _fake_hub_cache(tmp_path, "someorg/align-tiny", seed_checkpoint)
    model = AlignModel.from_pretrained("someorg/align-tiny", cache_dir=tmp_path)
    processor = AlignProcessor.from_pretrained("someorg/align-tiny", cache_dir=tmp_path)
    assert model.config.projection_dim == 640 and processor.tokenizer is not None
    with pytest.raises(ModelNotFoundError, match="hf download someorg/other"):
        AlignModel.from_pretrained("someorg/other", cache_dir=tmp_path)


def test_malformed_checkpoints(seed_checkpoint, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(seed_checkpoint, bad)
    sd = torch.load(bad / "pytorch_model.bin", weights_only=True)
    del sd["text_projection.bias"]
    del sd["vision_model.encoder.blocks.3.projection.project_bn.running_var"]
    sd["extra.head.weight"] = torch.zeros(3)
    torch.save(sd, bad / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as info:
        AlignModel.from_pretrained(bad)
    msg = str(info.value)
    assert "2 missing" in msg and "text_projection.bias" in msg and "blocks.3.bn3.running_var" in msg
    assert "1 unexpected: extra.head.weight" in msg

    (bad / "pytorch_model.bin").write_bytes(b"\x00 not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a PyTorch weights file"):
        AlignModel.from_pretrained(bad)
    (bad / "pytorch_model.bin").unlink()
    with pytest.raises(ModelNotFoundError, match="holds none of"):
        AlignModel.from_pretrained(bad)
    save_safetensors({"temperature": torch.tensor(1.0)}, bad / "model.safetensors")
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "clip"}))
    with pytest.raises(ConfigError, match="not ALIGN"):
        AlignModel.from_pretrained(bad)
    (bad / "config.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        AlignModel.from_pretrained(bad)
    with pytest.raises(ModelNotFoundError, match="No such file"):
        AlignModel.from_pretrained(tmp_path / "does-not-exist")
    with pytest.raises(ConfigError, match="single tower"):
        AlignModel.from_pretrained(MINILM)
