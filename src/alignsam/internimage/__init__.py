"""InternImage: the DCNv3 CNN (T, S, B, L, XL), checkpoint-compatible with the official and Hugging Face
releases, with a fast CPU implementation of its deformable convolution.

    from alignsam.internimage import InternImage, InternImageProcessor

    model = InternImage.from_pretrained("internimage_t_1k_224.pth")  # or internimage-t, a folder, a hub id
    pixels = InternImageProcessor.for_config(model.config)(["cat.jpg"])
    logits = model(pixels)  # N x 1000
"""

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
from alignsam.internimage.processing import InternImageProcessor, imagenet_labels, labels_for, read_labels

__all__ = [
    "INTERNIMAGE_PRESETS",
    "DCNv3",
    "DCNv3Core",
    "InternImage",
    "InternImageConfig",
    "InternImageProcessor",
    "dcnv3_fast",
    "dcnv3_reference",
    "imagenet_labels",
    "internimage_b",
    "internimage_l",
    "internimage_s",
    "internimage_t",
    "internimage_xl",
    "labels_for",
    "read_labels",
]
