"""Zero-shot classification: class names become prompt-ensembled text embeddings, images are scored against them.

A data set is a folder with one sub-folder of images per class (ImageNet's and torchvision's `ImageFolder`
layout). Class names are the folder names (underscores read as spaces), or come from a `classes.txt` (one
name per line) beside the folders or passed in: a file listing exactly the folder names gives their order;
otherwise its i-th line names the i-th folder in sorted order (ImageNet's `n01440764` folders).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from alignsam.errors import InputError
from alignsam.eval.metrics import topk_accuracy
from alignsam.io.images import ImageInput
from alignsam.tools.encoder import Encoder
from alignsam.tools.templates import resolve_templates

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def zero_shot_classification(
    encoder: Encoder,
    images: Sequence[ImageInput],
    targets: Sequence[int],
    class_names: Sequence[str],
    *,
    templates: str | Sequence[str] = "photo",
    ks: Sequence[int] = (1, 5),
) -> dict[str, Any]:
    """Top-k accuracy of zero-shot classification.

    Args:
        encoder: the model's batched embedding engine.
        images: N images (paths, bytes, PIL images or arrays); unreadable ones are skipped and counted.
        targets: N class indices into `class_names`.
        class_names: C names, put into each template ("a photo of a {}.").
        templates: a template-set name (`photo`, `simple`, `imagenet`, ...) or a list of templates.
    Returns:
        {"top1", "top5", "images" (scored), "skipped", "classes", "templates", "per_class_top1"}.
    """
    if len(images) != len(targets):
        raise InputError(f"{len(images)} images but {len(targets)} targets.")
    classifier = encoder.classifier(list(class_names), templates)  # C x D
    out = encoder.encode_images(images, on_error="skip")
    if not out.indices:
        raise InputError("None of the images could be read.")
    truth = torch.tensor([targets[i] for i in out.indices])
    logits = out.embeds @ classifier.t()  # N x C
    result: dict[str, Any] = topk_accuracy(logits, truth, ks)
    correct = logits.argmax(1) == truth
    per_class = {
        name: round(float(correct[truth == c].float().mean()), 4)
        for c, name in enumerate(class_names)
        if bool((truth == c).any())
    }
    result.update(
        images=len(out.indices),
        skipped=len(out.errors),
        classes=len(class_names),
        templates=len(resolve_templates(templates)),
        per_class_top1=per_class,
    )
    return result


def read_class_folders(
    root: str | os.PathLike[str], class_names: Sequence[str] | str | os.PathLike[str] | None = None
) -> tuple[list[Path], list[int], list[str]]:
    """(image paths, class indices, class names) of a folder-per-class data set (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"'{root}' is not a folder of class folders.")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise InputError(f"'{root}' holds no class folders.")
    if class_names is None and (root / "classes.txt").is_file():
        class_names = root / "classes.txt"
    if isinstance(class_names, str | os.PathLike):
        class_names = [line.strip() for line in Path(class_names).read_text().splitlines() if line.strip()]
    by_name = {f.name: f for f in folders}
    if class_names is None:
        names = [f.name.replace("_", " ") for f in folders]
    elif set(class_names) == set(by_name):
        folders, names = [by_name[n] for n in class_names], list(class_names)
    elif len(class_names) == len(folders):
        names = list(class_names)
    else:
        raise InputError(f"{len(class_names)} class names for {len(folders)} class folders in '{root}'.")
    paths: list[Path] = []
    targets: list[int] = []
    for c, folder in enumerate(folders):
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        targets += [c] * len(files)
    if not paths:
        raise InputError(f"No images in the class folders of '{root}'.")
    return paths, targets, names


def zero_shot_folder(
    encoder: Encoder,
    root: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | str | os.PathLike[str] | None = None,
    templates: str | Sequence[str] = "photo",
) -> dict[str, Any]:
    """`zero_shot_classification` on a folder-per-class data set."""
    paths, targets, names = read_class_folders(root, class_names)
    return {"dataset": str(root), **zero_shot_classification(encoder, paths, targets, names, templates=templates)}
