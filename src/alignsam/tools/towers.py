"""Image towers for ALIGN's dual encoder besides its EfficientNet: InternImage (ALIGN's recipe with another
backbone and our BERT text tower).

`alignsam.align` and `alignsam.internimage` never import each other; this module, above both, puts them
together:

- `image_tower(ref)`: a tower to train: an InternImage architecture with fresh weights (`internimage-t`, ...,
  or a `config.json` of one), or a pretrained InternImage classifier without its classification layer (a hub
  id, a folder, an official `.pth`);
- `build_image_tower(config)`: the tower an `AlignConfig.image_tower` describes, for loading;
- `load_align(ref)`: `AlignModel.from_pretrained` for a model with any of these towers (what the tools and
  the commands use);
- `pixel_options(config)`: the image preprocessing a tower expects, as `AlignImageProcessor` options.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from alignsam.align.modeling.align import AlignModel
from alignsam.errors import ConfigError
from alignsam.internimage import INTERNIMAGE_PRESETS, InternImage
from alignsam.internimage.modeling.config import SUPPORTED
from alignsam.internimage.pretrained import MODEL_TYPES, read_config
from alignsam.internimage.processing import IMAGENET_MEAN, IMAGENET_STD
from alignsam.io.files import read_json_object
from alignsam.io.resolve import ModelSource, Ref
from alignsam.io.weights import build_on_meta


def image_tower(ref: str | os.PathLike[str]) -> InternImage:
    """An InternImage image tower (no classification layer: `forward_features` gives `B x embed_dim`).

    `ref`: an architecture name (`internimage-t`, `-s`, `-b`, `-l`, `-xl`) or an InternImage `config.json`
    (ours or Hugging Face's) for fresh weights with the official initialisation; anything else is a
    pretrained InternImage (`InternImage.from_pretrained`: a hub id, a folder, an official `.pth`) whose
    weights the tower starts from.
    """
    text = os.fspath(ref)
    if text in INTERNIMAGE_PRESETS:
        return InternImage(INTERNIMAGE_PRESETS[text]().replace(num_classes=0))
    if text.lower().startswith("internimage-") and not Path(text).exists():  # a name, not a hub id or a path
        raise ConfigError(
            f"No InternImage architecture '{text}': image towers are {', '.join(INTERNIMAGE_PRESETS)} ({SUPPORTED}), "
            "an InternImage config.json, or a pretrained InternImage (hub id, folder, .pth)."
        )
    if text.endswith(".json") and Path(text).is_file():
        data = read_json_object(text, ConfigError)
        if data.get("model_type") not in MODEL_TYPES:
            raise ConfigError(f"'{text}' is not an InternImage config.json (model_type one of {list(MODEL_TYPES)}).")
        return InternImage(read_config(data).replace(num_classes=0))
    classifier = InternImage.from_pretrained(text, device="cpu").float()
    config = classifier.config.replace(num_classes=0)
    tower = build_on_meta(lambda: InternImage(config))
    weights = {k: v for k, v in classifier.state_dict().items() if not k.startswith("head.")}
    tower.load_state_dict(weights, strict=True, assign=True)
    return tower.train()


def build_image_tower(config: Mapping[str, Any]) -> InternImage:
    """The image tower `config` (an `AlignConfig.image_tower`) describes, with fresh weights."""
    if config.get("model_type") not in MODEL_TYPES:
        raise ConfigError(
            f"Image tower {config.get('model_type')!r} is not one this alignsam builds (InternImage: "
            f"{list(MODEL_TYPES)})."
        )
    return InternImage(read_config(config))


def load_align(ref: Ref | ModelSource, **kwargs: Any) -> AlignModel:
    """`AlignModel.from_pretrained(ref, **kwargs)` with the towers of this module: an ALIGN, or one trained with
    another image tower (`alignsam train --image-tower`)."""
    return AlignModel.from_pretrained(ref, image_tower=build_image_tower, **kwargs)


def pixel_options(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """`AlignImageProcessor` options for the pixels an image tower expects: InternImage's ImageNet mean and
    std on [0, 1] values, bicubic resizing (as `InternImageProcessor`); {} for ALIGN's EfficientNet (`None`),
    whose default is [-1, 1]."""
    if config is None:
        return {}
    return {
        "resample": Image.Resampling.BICUBIC,
        "rescale_factor": 1 / 255,
        "rescale_offset": False,
        "do_normalize": True,
        "image_mean": IMAGENET_MEAN,
        "image_std": IMAGENET_STD,
    }
