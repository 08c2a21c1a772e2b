"""InternImage: the DCNv3 CNN (T, S, B, L, XL), checkpoint-compatible with the official and Hugging Face
releases, with a fast CPU implementation of its deformable convolution."""

from alignsam.internimage.fast import dcnv3_fast
from alignsam.internimage.modeling import (
    INTERNIMAGE_PRESETS,
    DCNv3,
    DCNv3Core,
    InternImage,
    InternImageConfig,
    dcnv3_reference,
    internimage_b,
    internimage_l,
    internimage_s,
    internimage_t,
    internimage_xl,
)

__all__ = [
    "INTERNIMAGE_PRESETS",
    "DCNv3",
    "DCNv3Core",
    "InternImage",
    "InternImageConfig",
    "dcnv3_fast",
    "dcnv3_reference",
    "internimage_b",
    "internimage_l",
    "internimage_s",
    "internimage_t",
    "internimage_xl",
]
