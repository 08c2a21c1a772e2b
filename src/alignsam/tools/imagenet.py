"""Supervised classification with an InternImage classifier: the model's own classes (ImageNet-1k for the
published checkpoints), top-k with probabilities, batched as every image tool (`alignsam.tools.batches`).

    classifier = ImageClassifier.from_pretrained("internimage-t")  # or a hub id, a folder, an official .pth
    result = classifier.classify(["cat.jpg", "dog.png"], top_k=5)  # a ClassifyResult, as zero-shot `classify`

Images get the reference's evaluation preprocessing (`InternImageProcessor`: short side to the image size,
centre crop, ImageNet normalisation); probabilities are the softmax of the logits over all classes.
`model_family(ref)` tells which kind of classifier a reference names, which is how `alignsam classify`
chooses between this and zero-shot classification with an ALIGN model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from alignsam import presets
from alignsam.errors import CheckpointError, ConfigError
from alignsam.fast import FastPath
from alignsam.internimage import InternImage, InternImageProcessor, labels_for
from alignsam.internimage.convert import detect_layout
from alignsam.internimage.pretrained import MODEL_TYPES
from alignsam.io.checkpoints import CONFIG_NAME
from alignsam.io.files import read_json_object
from alignsam.io.hub import CacheDir, looks_like_hub_id
from alignsam.io.images import ImageInput
from alignsam.io.resolve import ModelSource, Ref, resolve_model
from alignsam.io.weights import load_state_dict
from alignsam.tools.batches import OnError, progress_bar, run_batches
from alignsam.tools.classify import ClassifyResult, ranked
from alignsam.tools.encoder import input_names
from alignsam.validation import check_count

Family = Literal["align", "internimage"]


class ImageClassifier:
    """Classifies images among an InternImage classifier's classes, in batches.

    Args:
        model: an `InternImage` with its classification layer (put in eval mode here).
        labels: the name of each class, in class-index order (`labels_for`).
        processor: the preprocessing (default: the model's, `InternImageProcessor.for_config`).
        batch_size: images per forward pass; workers: threads decoding and resizing images ahead of the model.
        progress: show a tqdm progress bar on stderr.
        fast: `precision="bf16"` runs the model under bfloat16 autocast, `compile` compiles it; the DCNv3
            sampling core is the fast one whatever the options.
    """

    def __init__(
        self,
        model: InternImage,
        labels: Sequence[str],
        *,
        processor: InternImageProcessor | None = None,
        batch_size: int = 16,
        workers: int = 2,
        progress: bool = False,
        fast: FastPath | None = None,
    ) -> None:
        if model.head is None:
            raise CheckpointError(
                "This InternImage has no classification layer (num_classes 0): it gives features, not classes."
            )
        if len(labels) != model.config.num_classes:
            raise ConfigError(f"{len(labels)} labels given for a model with {model.config.num_classes} classes.")
        self.model = model.eval()
        self.labels = list(labels)
        self.processor = processor or InternImageProcessor.for_config(model.config)
        self.batch_size = check_count(batch_size, "batch_size")
        self.workers = check_count(workers, "workers")
        self.progress = progress
        self.fast = fast or FastPath()
        self._run: Any = torch.compile(model) if self.fast.compile else model
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype

    @classmethod
    def from_pretrained(
        cls,
        ref: Ref | ModelSource,
        *,
        device: str | torch.device | None = None,
        revision: str | None = None,
        cache_dir: CacheDir = None,
        **kwargs: Any,
    ) -> ImageClassifier:
        """The classifier `ref` names (see `InternImage.from_pretrained`), with the class names stored beside
        its weights, else ImageNet-1k's (`labels_for`); `kwargs` as for the constructor."""
        source = resolve_model(ref, "internimage", revision=revision, cache_dir=cache_dir)
        model = InternImage.from_pretrained(source, device=device)
        return cls(model, labels_for(source, model.config.num_classes), **kwargs)

    def probabilities(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`pixel_values` `N x 3 x H x W` (from `processor`) -> class probabilities `N x C` (float32, CPU)."""
        pixels = pixel_values.to(self.device, self.dtype)
        with self.fast.autocast(self.device):
            return self._run(pixels).float().softmax(dim=-1).cpu()

    def classify(self, images: Sequence[ImageInput], *, top_k: int = 5, on_error: OnError = "skip") -> ClassifyResult:
        """The top `top_k` classes of each readable image (paths, bytes, PIL images, arrays) with their
        probabilities, and the unreadable inputs with the reason (`on_error="skip"`), or an error at the first
        one (`on_error="raise"`)."""
        check_count(top_k, "top_k")
        with progress_bar(len(images), "images", self.progress) as bar:
            done = run_batches(
                images, self.processor.preprocess, self.probabilities, batch_size=self.batch_size,
                workers=self.workers, on_error=on_error, progress=bar,
            )  # fmt: skip
        probs = torch.cat(done.rows) if done.rows else torch.empty(0, len(self.labels))
        return ranked(probs, self.labels, input_names(images), done.indices, done.errors, top_k)


def model_family(ref: Ref, *, revision: str | None = None, cache_dir: CacheDir = None) -> Family:
    """ "internimage" when `ref` names an InternImage classifier, else "align" (a zero-shot ALIGN model, which
    its loader then checks).

    As the resolver reads references (a local path first): a weights file is an InternImage when its keys are
    InternImage's (an ALIGN model is never a single file: another file is a `CheckpointError` saying so); a
    folder by its `config.json`'s `model_type`; a short name by the table of names (`alignsam.presets`); a hub
    id by the table, else by its `config.json` (from the cache, else downloaded, as loading would).
    """
    text = os.fspath(ref)
    local = Path(text).expanduser()
    if local.is_file():
        _check_internimage_weights(local)
        return "internimage"
    if local.is_dir():
        config = local / CONFIG_NAME
        return "internimage" if config.is_file() and _model_type(config) in MODEL_TYPES else "align"
    family = presets.family_of(text)
    if family == "internimage" or text in presets.NAMES["internimage"].values():
        return "internimage"
    named = family is not None or presets.bundled_folder("align", text) is not None
    if named or not looks_like_hub_id(text) or text in presets.NAMES["align"].values():
        return "align"
    source = resolve_model(text, "internimage", revision=revision, cache_dir=cache_dir)
    config_path = source.local_file(CONFIG_NAME) or source.find([CONFIG_NAME])
    assert config_path is not None
    return "internimage" if _model_type(config_path) in MODEL_TYPES else "align"


def _model_type(config: Path) -> Any:
    return read_json_object(config, ConfigError).get("model_type")


def _check_internimage_weights(path: Path) -> None:
    state_dict = load_state_dict(path)  # an unreadable or truncated file: its own error
    try:
        detect_layout(state_dict)
    except CheckpointError as err:
        raise CheckpointError(
            f"'{path}': {err} A single weights file must be an InternImage classifier; an ALIGN model for "
            "zero-shot labels is a folder or a hub id."
        ) from err
