"""Prompt templates for zero-shot classification: one phrasing, or an ensemble whose text embeddings are
averaged per label (the CLIP and ALIGN practice; ALIGN reports +2.9% ImageNet top-1 from ensembling)."""

from __future__ import annotations

import string
from collections.abc import Sequence

from alignsam.errors import InputError

# OpenAI CLIP's 80 ImageNet templates, as used by CLIP, ALIGN and open_clip.
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)  # fmt: skip

# The 7-template subset open_clip calls SIMPLE_IMAGENET_TEMPLATES.
SIMPLE_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
)  # fmt: skip

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "photo": ("a photo of a {}.",),
    "none": ("{}",),
    "pipeline": ("This is a photo of {}.",),  # what transformers' zero-shot pipeline uses
    "simple": SIMPLE_TEMPLATES,
    "imagenet": IMAGENET_TEMPLATES,
}


def resolve_templates(templates: str | Sequence[str]) -> tuple[str, ...]:
    """A template-set name (`photo`, `none`, `pipeline`, `simple`, `imagenet`) or a list of templates, each
    with one `{}` where the label goes (literal braces written `{{` and `}}`, as `str.format` reads them)."""
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return TEMPLATE_SETS[templates]
        if "{" not in templates and "}" not in templates:
            raise InputError(
                f"Unknown template set {templates!r}; use one of {sorted(TEMPLATE_SETS)} or a '{{}}' template."
            )
        templates = [templates]
    if not isinstance(templates, Sequence):
        raise InputError(f"Templates must be a set name or a list of strings, not {type(templates).__name__}.")
    out = tuple(check_template(t) for t in templates)
    if not out:
        raise InputError("The list of templates is empty.")
    return out


def check_template(template: object) -> str:
    """`template` if `template.format(label)` puts the label in its one `{}` and can do nothing else.

    Why: `'a {} {1}'`, `'{} {name}'` or `'a {} {'` would otherwise fail inside `str.format` with an
    IndexError, KeyError or ValueError after the model is loaded, and `'{:>9999999}'` would pad.
    """
    if not isinstance(template, str):
        raise InputError(f"A template must be a string, not {type(template).__name__}: {template!r:.80}.")
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise InputError(
            f"Template {template!r:.200} is not a format string ({err}); write literal braces as '{{{{' and '}}}}'."
        ) from None
    if fields != [("", "", None)]:
        raise InputError(
            f"Template {template!r:.200} must hold exactly one '{{}}' for the label and no other field "
            "(no names, numbers, conversions or format specs); write literal braces as '{{' and '}}'."
        )
    return template
