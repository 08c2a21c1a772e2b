"""One call from a model reference to a ready model and processor."""

from __future__ import annotations

import os

import torch

from alignsam import presets
from alignsam.align.model import AlignModel
from alignsam.align.processing import AlignProcessor
from alignsam.io.hub import CacheDir

DEFAULT_MODEL = "kakaobrain/align-base"


def resolve_align(ref: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """A bundled preset name (`demo`) becomes its folder; anything else (hub id, path) is returned as is."""
    bundled = presets.path("align", str(ref)) if isinstance(ref, str) else None
    return bundled if bundled is not None else ref


def load_align(
    ref: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
    cache_dir: CacheDir = None,
) -> tuple[AlignModel, AlignProcessor]:
    """Model (eval mode) and processor from a hub id, a local folder, or a bundled preset (`demo`)."""
    where = resolve_align(ref)
    model = AlignModel.from_pretrained(where, revision=revision, cache_dir=cache_dir, dtype=dtype, device=device)
    processor = AlignProcessor.from_pretrained(where, revision=revision, cache_dir=cache_dir)
    return model, processor
