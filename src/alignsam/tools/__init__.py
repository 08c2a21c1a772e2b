"""What people use the models for: zero-shot and ImageNet classification, embeddings, tags, mask labels, search.

Names are imported on first use, so that light modules of this package (the tag vocabulary, the template
sets) can be read without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alignsam.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "Encoder": "alignsam.tools.encoder",
    "ImageClassifier": "alignsam.tools.imagenet",
    "ImageEmbeddings": "alignsam.tools.encoder",
    "IMAGENET_TEMPLATES": "alignsam.tools.templates",
    "SIMPLE_TEMPLATES": "alignsam.tools.templates",
    "TEMPLATE_SETS": "alignsam.tools.templates",
    "resolve_templates": "alignsam.tools.templates",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:
    from alignsam.tools.encoder import Encoder, ImageEmbeddings
    from alignsam.tools.imagenet import ImageClassifier
    from alignsam.tools.templates import IMAGENET_TEMPLATES, SIMPLE_TEMPLATES, TEMPLATE_SETS, resolve_templates
