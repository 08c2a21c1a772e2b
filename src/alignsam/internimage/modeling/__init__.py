"""The plain InternImage model: configuration, DCNv3 module and reference core, the network."""

from alignsam.internimage.modeling.config import (
    INTERNIMAGE_PRESETS,
    InternImageConfig,
    internimage_b,
    internimage_l,
    internimage_s,
    internimage_t,
    internimage_xl,
)
from alignsam.internimage.modeling.dcnv3 import DCNv3, DCNv3Core, dcnv3_reference
from alignsam.internimage.modeling.internimage import InternImage

__all__ = [
    "INTERNIMAGE_PRESETS",
    "DCNv3",
    "DCNv3Core",
    "InternImage",
    "InternImageConfig",
    "dcnv3_reference",
    "internimage_b",
    "internimage_l",
    "internimage_s",
    "internimage_t",
    "internimage_xl",
]
