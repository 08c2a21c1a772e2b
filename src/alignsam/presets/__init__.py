"""The one table of model names: default models, short names for published checkpoints, bundled models.

Every `from_pretrained`, `sam_model_registry`, tool, command and the service resolve a model reference
through `alignsam.io.resolve.resolve_model`, which reads this table; nothing else names a model.

- `DEFAULT_MODELS`: what a tool loads when no model is given.
- `NAMES`: short names for published checkpoints on the Hugging Face hub (`align-base`, `vit_b`, ...).
- `BUNDLED`: models that ship inside the package (this folder), so every tool works offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Family = Literal["align", "sam", "internimage"]

ROOT = Path(__file__).parent

DEFAULT_MODELS: dict[Family, str] = {
    "align": "kakaobrain/align-base",
    "sam": "facebook/sam-vit-base",
    "internimage": "OpenGVLab/internimage_t_1k_224",
}

NAMES: dict[Family, dict[str, str]] = {
    "align": {"align-base": "kakaobrain/align-base"},
    "sam": {
        "vit_b": "facebook/sam-vit-base",
        "vit_l": "facebook/sam-vit-large",
        "vit_h": "facebook/sam-vit-huge",
        "sam-vit-base": "facebook/sam-vit-base",
        "sam-vit-large": "facebook/sam-vit-large",
        "sam-vit-huge": "facebook/sam-vit-huge",
    },
    "internimage": {
        "internimage-t": "OpenGVLab/internimage_t_1k_224",
        "internimage-s": "OpenGVLab/internimage_s_1k_224",
        "internimage-b": "OpenGVLab/internimage_b_1k_224",
        "internimage-l": "OpenGVLab/internimage_l_22kto1k_384",
        "internimage-xl": "OpenGVLab/internimage_xl_22kto1k_384",
    },
}

BUNDLED: dict[Family, dict[str, str]] = {
    "align": {"demo": "align-demo"},
    "sam": {"demo": "sam-demo"},
    "internimage": {},
}


def bundled_folder(family: Family, name: str) -> Path | None:
    """The folder of the bundled model `name` of `family`, or None if no such model ships."""
    folder = BUNDLED[family].get(name)
    return None if folder is None else ROOT / folder


def family_of(name: str) -> Family | None:
    """The family whose table knows `name` (a short name or a bundled model), or None."""
    for family in DEFAULT_MODELS:
        if name in NAMES[family]:
            return family
    hits = [family for family, names in BUNDLED.items() if name in names]
    return hits[0] if len(hits) == 1 else None
