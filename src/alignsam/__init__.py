"""alignsam: ALIGN and Segment Anything in plain PyTorch, exact to the published checkpoints.

The public API is imported lazily so that `import alignsam` (and the command line) start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alignsam.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # ALIGN
    "AlignConfig": "alignsam.align",
    "AlignTextConfig": "alignsam.align",
    "AlignVisionConfig": "alignsam.align",
    "AlignModel": "alignsam.align",
    "AlignTextModel": "alignsam.align",
    "AlignVisionModel": "alignsam.align",
    "AlignProcessor": "alignsam.align",
    "AlignImageProcessor": "alignsam.align",
    "AlignTokenizer": "alignsam.align",
    # Segment Anything
    "sam_model_registry": "alignsam.sam",
    "SamModel": "alignsam.sam",
    "SamProcessor": "alignsam.sam",
    "SamImageProcessor": "alignsam.sam",
    "SamPredictor": "alignsam.sam",
    "SamAutomaticMaskGenerator": "alignsam.sam",
    "mask_to_logits": "alignsam.sam",
    "AmgConfig": "alignsam.sam",
    # fast paths
    "FastPath": "alignsam.fast",
    "prepare_align": "alignsam.align.fast",
    "prepare_sam": "alignsam.sam.fast",
    # loading
    "resolve_model": "alignsam.io.resolve",
    # errors
    "AlignSamError": "alignsam.errors",
    "CheckpointError": "alignsam.errors",
    "ImageError": "alignsam.errors",
    "InputError": "alignsam.errors",
    "MissingDependencyError": "alignsam.errors",
    "ModelNotFoundError": "alignsam.errors",
    "PromptError": "alignsam.errors",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:
    from alignsam.align import (
        AlignConfig,
        AlignImageProcessor,
        AlignModel,
        AlignProcessor,
        AlignTextConfig,
        AlignTextModel,
        AlignTokenizer,
        AlignVisionConfig,
        AlignVisionModel,
    )
    from alignsam.align.fast import prepare_align
    from alignsam.errors import (
        AlignSamError,
        CheckpointError,
        ImageError,
        InputError,
        MissingDependencyError,
        ModelNotFoundError,
        PromptError,
    )
    from alignsam.fast import FastPath
    from alignsam.io.resolve import resolve_model
    from alignsam.sam import (
        AmgConfig,
        SamAutomaticMaskGenerator,
        SamImageProcessor,
        SamModel,
        SamPredictor,
        SamProcessor,
        mask_to_logits,
        sam_model_registry,
    )
    from alignsam.sam.fast import prepare_sam
