"""What people use ALIGN and SAM for: zero-shot classification, embeddings, tags, mask labels, search."""

from alignsam.tools.encoder import Encoder, ImageEmbeddings
from alignsam.tools.templates import IMAGENET_TEMPLATES, SIMPLE_TEMPLATES, TEMPLATE_SETS, resolve_templates

__all__ = [
    "IMAGENET_TEMPLATES",
    "SIMPLE_TEMPLATES",
    "TEMPLATE_SETS",
    "Encoder",
    "ImageEmbeddings",
    "resolve_templates",
]
