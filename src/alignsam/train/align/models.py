"""What the trainer trains: a pretrained ALIGN to fine-tune, or a new one from an architecture and a tokenizer,
with ALIGN's EfficientNet or another image tower (InternImage, `alignsam.tools.towers`).

Architectures are short builder functions in a plain dict, like `alignsam.align.PRESETS` (which they include).
A from-scratch model's vocabulary size and image size are filled in from its tokenizer and `image_size`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignsam.align.modeling.align import AlignModel
from alignsam.align.modeling.config import PRESETS, AlignConfig, AlignTextConfig, AlignVisionConfig, config_from_json
from alignsam.align.processing import AlignImageProcessor, AlignProcessor, AlignTokenizer
from alignsam.errors import ConfigError, InputError
from alignsam.io.files import named_or_json
from alignsam.tools import towers
from alignsam.train.align.config import ModelSpec
from alignsam.train.align.vocab import train_wordpiece


def align_small() -> AlignConfig:
    """EfficientNet-B0 width at half depth (12 blocks, 320-d) and a 4-layer, 256-wide BERT: ~7M parameters.
    Batch-norm momentum and initial temperature as `align_demo` (for short runs from scratch)."""
    vision = AlignVisionConfig(
        width_coefficient=1.0, depth_coefficient=0.5, image_size=128, drop_connect_rate=0.1, batch_norm_momentum=0.9
    )
    text = AlignTextConfig(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024, max_position_embeddings=64
    )
    return AlignConfig(
        text_config=text, vision_config=vision, projection_dim=vision.embed_dim, temperature_init_value=0.07
    )


def align_demo() -> AlignConfig:
    """The bundled `demo` model: a 64 px EfficientNet (width 0.5, depth 0.5: 10 blocks, 160-d) and a 2-layer,
    128-wide BERT, about 1.3M parameters; trains in under 30 minutes on two CPU cores.

    Three settings differ from align-base for a short run from scratch. The temperature starts at CLIP's
    0.07 instead of ALIGN's 1.0: at 1.0 the logits of random embeddings are nearly uniform and a short run
    spends hundreds of steps only lowering it. Batch-norm statistics average over the last ~10 steps (TF
    momentum 0.9) instead of ~100 (0.99): while the weights move fast, slow running statistics lag so far
    behind that evaluation-mode embeddings collapse onto one direction. No dropout and no drop-connect: a
    model this small on this much data underfits, and without them the loss after 400 steps of the noisy
    synthetic set was 7.64 instead of 8.32.
    """
    vision = AlignVisionConfig(
        width_coefficient=0.5, depth_coefficient=0.5, image_size=64, drop_connect_rate=0.0, batch_norm_momentum=0.9
    )
    text = AlignTextConfig(
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return AlignConfig(
        text_config=text, vision_config=vision, projection_dim=vision.embed_dim, temperature_init_value=0.07
    )


CENTERING_CAPTIONS = 1024  # captions whose mean text embedding `center_text_projection` moves to zero

ARCHITECTURES: dict[str, Callable[[], AlignConfig]] = {**PRESETS, "align-small": align_small, "align-demo": align_demo}


def architecture(name_or_path: str) -> AlignConfig:
    """An architecture by name (`ARCHITECTURES`) or from an ALIGN `config.json` file."""
    return named_or_json(name_or_path, ARCHITECTURES, _align_config)


def _align_config(data: dict[str, Any]) -> AlignConfig:
    config = config_from_json(data)
    if not isinstance(config, AlignConfig):
        raise ConfigError("it describes a single tower, not an ALIGN model.")
    return config


def image_processor(image_size: int, resize_size: int | None = None, **options: Any) -> AlignImageProcessor:
    """Resize to `resize_size` (default `round(image_size * 346 / 289)`, ALIGN's 346 -> 289) and crop `image_size`;
    `options` (`AlignImageProcessor`'s) set the pixel values an image tower expects (`towers.pixel_options`)."""
    return AlignImageProcessor(size=resize_size or round(image_size * 346 / 289), crop_size=image_size, **options)


def load_tokenizer(ref: str) -> AlignTokenizer:
    path = Path(ref)
    if path.is_file():  # a bare vocab.txt
        return AlignTokenizer.from_vocab(path)
    return AlignTokenizer.from_pretrained(ref)


def build(
    spec: ModelSpec, captions: Callable[[], Iterable[str]], seed: int, tokenizer: AlignTokenizer | None = None
) -> tuple[AlignModel, AlignProcessor]:
    """The model and processor a `ModelSpec` describes.

    Args:
        captions: the training captions, read only when a vocabulary has to be trained.
        seed: the from-scratch initialisation.
        tokenizer: use this tokenizer instead of loading or training one (the other ranks of a run).
    """
    if spec.init is not None:
        model, processor = towers.load_align(spec.init), AlignProcessor.from_pretrained(spec.init)
        if spec.image_size is not None or spec.resize_size is not None:
            size = spec.image_size or processor.image_processor.crop_size[0]
            pixels = towers.pixel_options(model.config.image_tower)
            processor.image_processor = image_processor(size, spec.resize_size, **pixels)
        return model, processor
    config = architecture(spec.arch)
    if tokenizer is None:
        tokenizer = load_tokenizer(spec.tokenizer) if spec.tokenizer else train_wordpiece(captions(), spec.vocab_size)
    torch.manual_seed(seed)
    tower = towers.image_tower(spec.image_tower) if spec.image_tower is not None else None
    size = spec.image_size or (config.vision_config if tower is None else tower.config).image_size
    config = dataclasses.replace(
        config,
        text_config=config.text_config.replace(vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_token_id),
        vision_config=config.vision_config.replace(image_size=size),
        image_tower=None if tower is None else tower.config_json(),
    )
    model = AlignModel(config, vision_model=tower)
    if spec.center_text:
        center_text_projection(model, tokenizer, list(itertools.islice(captions(), CENTERING_CAPTIONS)))
    pixels = towers.pixel_options(config.image_tower)
    return model, AlignProcessor(image_processor(size, spec.resize_size, **pixels), tokenizer)


def from_config(config: AlignConfig) -> AlignModel:
    """A model of `config` with fresh weights, whatever its image tower (to load a checkpoint's weights into)."""
    tower = None if config.image_tower is None else towers.build_image_tower(config.image_tower)
    return AlignModel(config, vision_model=tower)


def center_text_projection(model: AlignModel, tokenizer: AlignTokenizer, captions: Sequence[str]) -> None:
    """Set the text projection's bias so that the mean text embedding of `captions` is zero.

    Why: in a narrow BERT at initialisation the [CLS] state hardly depends on the words (the constant [CLS]
    embedding dominates; `align-demo`'s 128-wide BERT gives cosine 0.9998 between random captions), so every
    text embedding points the same way and the part of the logits that tells captions apart is tiny: the
    shape words of the synthetic captions were still ignored after 900 steps. Removing the common part at
    initialisation (cosine 0.01 between random captions, 0.81 between captions that differ in one shape word)
    lets the contrastive loss see the words from the first step. The image side needs no such thing: its
    embedding is a batch-normalised map, centred over the batch in training.
    """
    if not captions:
        raise InputError("No captions to centre the text projection on.")
    ids = tokenizer.token_ids(list(captions))
    arrays = tokenizer.pad(ids, max(len(x) for x in ids))
    was_training = model.training
    model.eval()  # no dropout
    with torch.no_grad():
        raw = model.encode_text(torch.from_numpy(arrays["input_ids"]), torch.from_numpy(arrays["attention_mask"]))
        model.text_projection.bias.sub_(raw.mean(0))  # D
    model.train(was_training)


def freeze(model: AlignModel, spec: ModelSpec) -> list[nn.Module]:
    """Freeze what is not trained; return the modules that must stay in eval mode.

    BERT's pooler is never trained: ALIGN's text embedding reads the [CLS] state directly, so the pooler gets
    no gradient, and DDP requires every trainable parameter to get one.
    A locked tower also keeps its batch-norm statistics (eval mode), as open_clip's `--lock-image`. With a
    locked text tower the text projection still trains, so the text side can still move to the images.
    """
    model.text_model.bert.pooler.requires_grad_(False)
    frozen: list[nn.Module] = []
    if spec.lock_image:
        model.vision_model.requires_grad_(False)
        frozen.append(model.vision_model)
    if spec.lock_text:
        model.text_model.requires_grad_(False)
        frozen.append(model.text_model)
    return frozen
