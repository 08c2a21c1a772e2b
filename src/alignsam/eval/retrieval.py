"""Image<->text retrieval on a captions file: R@1/5/10 in both directions (Flickr30K / COCO protocol).

Caption files, each naming images relative to an image folder:
- COCO captions JSON: `{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}`
  (`captions_val2017.json`, and what `alignsam synth retrieval` writes);
- Karpathy's split JSON (`dataset_flickr30k.json`, `dataset_coco.json`): `{"images": [{"filename",
  "filepath"?, "split", "sentences": [{"raw"}]}]}`, restricted to one split (default "test", the 1K/5K
  test sets of the papers);
- a CSV/TSV with `image` and `caption` columns, one row per caption.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from alignsam.errors import InputError
from alignsam.eval.metrics import recall_at_k
from alignsam.io.images import ImageInput
from alignsam.tools.encoder import Encoder


def retrieval(
    encoder: Encoder,
    images: Sequence[ImageInput],
    captions: Sequence[Sequence[str]],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, Any]:
    """Recall@K both ways over `images`, where `captions[i]` are the captions of image i.

    Images that cannot be read are skipped (with their captions) and counted.
    Returns:
        {"text_to_image_R@1", ..., "image_to_text_R@10", median ranks, "images", "captions", "skipped"}.
    """
    if len(images) != len(captions):
        raise InputError(f"{len(images)} images but {len(captions)} caption lists.")
    out = encoder.encode_images(images, on_error="skip")
    if not out.indices:
        raise InputError("None of the images could be read.")
    texts: list[str] = []
    owner: list[int] = []
    for row, i in enumerate(out.indices):  # row = the image's place among the readable ones
        texts += list(captions[i])
        owner += [row] * len(captions[i])
    if not texts:
        raise InputError("The images have no captions.")
    text_embeds = encoder.encode_texts(texts)
    result: dict[str, Any] = recall_at_k(out.embeds, text_embeds, torch.tensor(owner), ks)
    result.update(images=len(out.indices), captions=len(texts), skipped=len(out.errors))
    return result


def read_captions(
    path: str | os.PathLike[str], image_root: str | os.PathLike[str] | None = None, split: str | None = None
) -> tuple[list[Path], list[list[str]]]:
    """(image paths, captions of each image) from a captions file (see the module docstring).

    image_root: the folder the file names are relative to; default: `images/` beside the file if it exists,
        else the file's folder. split: Karpathy files only (default "test").
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Captions file '{path}' does not exist.")
    if image_root is None:
        image_root = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    root = Path(image_root)
    grouped: dict[str, list[str]] = {}
    if path.suffix.lower() in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ","):
                if "image" not in row or "caption" not in row:
                    raise InputError(f"'{path}' needs 'image' and 'caption' columns.")
                grouped.setdefault(row["image"], []).append(row["caption"])
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise InputError(f"'{path}' is not valid JSON: {err}") from err
        if not isinstance(data, dict) or "images" not in data:
            raise InputError(f"'{path}' is neither a COCO captions file nor a Karpathy split file.")
        if "annotations" in data:  # COCO
            by_id = {img["id"]: img["file_name"] for img in data["images"]}
            grouped = {name: [] for name in by_id.values()}
            for ann in data["annotations"]:
                grouped[by_id[ann["image_id"]]].append(ann["caption"])
        else:  # Karpathy
            wanted = split or "test"
            for img in data["images"]:
                if "split" in img and img["split"] != wanted:
                    continue
                name = os.path.join(img.get("filepath", ""), img["filename"])
                grouped[name] = [s["raw"] for s in img["sentences"]]
    if not grouped:
        raise InputError(f"'{path}' lists no images" + (f" in split {split!r}." if split else "."))
    names = list(grouped)
    return [root / n for n in names], [grouped[n] for n in names]


def retrieval_file(
    encoder: Encoder,
    path: str | os.PathLike[str],
    *,
    image_root: str | os.PathLike[str] | None = None,
    split: str | None = None,
) -> dict[str, Any]:
    """`retrieval` on a captions file."""
    images, captions = read_captions(path, image_root, split)
    return {"dataset": str(path), **retrieval(encoder, images, captions)}
