"""The engine behind every zero-shot tool: batched ALIGN embeddings of many images and many texts.

- Images run as every image tool runs them (`alignsam.tools.batches`): decoded and preprocessed in worker
  threads while the model runs, in input order; a file that cannot be read is reported and skipped
  (`on_error="skip"`), never fatal to the batch.
- Texts are tokenised once, sorted by length and batched so each batch pads only to its own longest text.
- Everything runs under `torch.inference_mode`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from alignsam.align.fast import prepare_align
from alignsam.align.modeling.align import AlignModel
from alignsam.align.processing import DEFAULT_MAX_LENGTH, AlignProcessor
from alignsam.errors import InputError
from alignsam.fast import PLAIN, FastPath
from alignsam.io.images import ImageInput
from alignsam.io.resolve import default_model, resolve_model
from alignsam.tools.batches import OnError, progress_bar, run_batches
from alignsam.tools.templates import resolve_templates
from alignsam.validation import check_count


@dataclasses.dataclass
class ImageEmbeddings:
    """Embeddings of the images that could be read.

    `embeds`: `N_ok x D`; `indices`: the input position of each row; `errors`: `(position, message)` for
    each input that was skipped.
    """

    embeds: torch.Tensor
    indices: list[int]
    errors: list[tuple[int, str]]


def input_names(images: Sequence[ImageInput]) -> list[str]:
    """How each input is named in results and error reports: its path, or `#<position>`."""
    return [os.fspath(im) if isinstance(im, str | os.PathLike) else f"#{i}" for i, im in enumerate(images)]


MAX_WORKERS = 1024
"""Image-decoding threads an Encoder may start (a typo of 100000 would start that many threads)."""


class Encoder:
    """Embeds images and texts with one ALIGN model, in batches.

    Args:
        model: an `AlignModel` (put in eval mode here).
        processor: its `AlignProcessor` (needs a tokenizer for texts).
        batch_size: images per forward pass; texts use `4 * batch_size`.
        workers: threads decoding and resizing images ahead of the model.
        progress: show tqdm progress bars on stderr.
        fast: speed options applied to the model *in place* (see `alignsam.fast.FastPath`); the
            default folds batch norms and uses channels-last, both exact to float32 rounding. Pass
            `alignsam.fast.PLAIN` to leave the model untouched.
        backend: "torch" (default) or "onnxruntime": the towers exported to ONNX (once, cached; see
            `alignsam.export.runtime`) and run on ONNX Runtime; the model itself is then left untouched.

    `crop_defaults` holds what the model recommends for the crops that `alignsam.tools.mask_labels` embeds
    (`context`, `background`), from the `regions.json` beside its weights (`AlignModel.recommended`); {}
    means the general defaults. `vocabulary` holds the words it recommends (its `vocabulary.json`), or None
    for the built-in vocabulary. The bundled `demo` recommends a wide context: it was trained on scenes where
    objects fill 12-40% of the image, and a tight crop shows it something it has never seen.
    """

    def __init__(
        self,
        model: AlignModel,
        processor: AlignProcessor,
        *,
        batch_size: int = 16,
        workers: int = 2,
        progress: bool = False,
        max_length: int = DEFAULT_MAX_LENGTH,
        fast: FastPath | None = None,
        backend: str = "torch",
    ) -> None:
        check_count(batch_size, "batch_size")
        self.fast = fast or FastPath()
        self.backend = backend
        self.towers: Any  # what runs the towers: the model, or its ONNX Runtime export
        if backend != "torch":
            from alignsam.export.runtime import OnnxAlignTowers, check_backend

            check_backend(backend, fast)
            self.model = model.eval()
            self.towers = OnnxAlignTowers.from_model(self.model)
        elif self.fast == PLAIN:
            model.eval().fast = PLAIN  # the modules as they are, also for calls the model answers itself
            self.model = self.towers = model
        else:
            self.model = self.towers = prepare_align(model, self.fast)
        self.processor = processor
        self.batch_size = batch_size
        self.workers = check_count(workers, "workers", 1, MAX_WORKERS)
        self.progress = progress
        positions = getattr(
            getattr(getattr(model, "config", None), "text_config", None), "max_position_embeddings", None
        )
        self.max_length = check_count(max_length, "max_length", 2, positions if isinstance(positions, int) else None)
        regions = model.recommended.get("regions.json", {})
        self.crop_defaults: dict[str, Any] = {k: v for k, v in regions.items() if k in ("context", "background")}
        tags = model.recommended.get("vocabulary.json", {}).get("tags")
        self.vocabulary: list[str] | None = [str(x) for x in tags] if isinstance(tags, list) and tags else None
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype

    @classmethod
    def from_pretrained(
        cls,
        ref: str | os.PathLike[str] | None = None,
        *,
        device: str | None = None,
        backend: str = "torch",
        **kwargs: Any,
    ) -> Encoder:
        """An encoder for the ALIGN model `ref` (a hub id, folder or bundled name; None: the default model),
        also one trained with another image tower (`alignsam.tools.towers`)."""
        from alignsam.tools.towers import load_align

        source = resolve_model(default_model("align") if ref is None else ref, "align")
        model = load_align(source, device=device)
        return cls(model, AlignProcessor.from_pretrained(source), backend=backend, **kwargs)

    @property
    def logit_scale(self) -> float:
        """What cosine similarities are multiplied by to give the model's logits (1 / temperature)."""
        return 1.0 / float(self.model.temperature.detach())

    # --- texts ----------------------------------------------------------------------------------------

    def encode_texts(self, texts: Sequence[str], *, normalize: bool = True) -> torch.Tensor:
        """`N x D` embeddings of `texts`, in input order (float32, on the CPU)."""
        tokenizer = self.processor.tokenizer
        if tokenizer is None:
            raise InputError("The processor has no tokenizer; texts cannot be embedded.")
        ids = tokenizer.token_ids(list(texts), self.max_length)
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = torch.empty(len(ids), self.model.config.projection_dim)
        step = 4 * self.batch_size
        with self.fast.autocast(self.device), self._bar(len(ids), "texts") as bar:
            for start in range(0, len(ids), step):
                rows = order[start : start + step]
                batch = [ids[i] for i in rows]
                arrays = tokenizer.pad(batch, max(len(x) for x in batch))
                embeds = self.towers.encode_text(
                    torch.from_numpy(arrays["input_ids"]).to(self.device),
                    torch.from_numpy(arrays["attention_mask"]).to(self.device),
                    normalize=normalize,
                )
                out[torch.from_numpy(rows)] = embeds.float().cpu()
                bar.update(len(rows))
        return out

    def classifier(self, labels: Sequence[str], templates: str | Sequence[str] = "photo") -> torch.Tensor:
        """Zero-shot class embeddings, `C x D`: each label's template texts embedded, L2-normalised,
        averaged, and normalised again (prompt ensembling)."""
        labels = list(labels)
        if not labels:
            raise InputError("The list of labels is empty.")
        if any(not isinstance(x, str) or not x.strip() for x in labels):
            raise InputError("Labels must be non-empty strings.")
        forms = resolve_templates(templates)
        texts = [t.format(label) for label in labels for t in forms]
        embeds = self.encode_texts(texts).view(len(labels), len(forms), -1)
        return torch.nn.functional.normalize(embeds.mean(1), dim=-1)

    # --- images ---------------------------------------------------------------------------------------

    def encode_images(
        self,
        images: Iterable[ImageInput],
        *,
        normalize: bool = True,
        on_error: OnError = "raise",
        total: int | None = None,
        on_batch: Callable[[torch.Tensor, list[int]], None] | None = None,
    ) -> ImageEmbeddings:
        """Embed images (paths, bytes, PIL images or arrays), in order.

        on_error: "raise" stops at the first unreadable image; "skip" reports it in `errors` and goes on.
        on_batch: called with each batch's embeddings and input positions as soon as they are ready
            (for writing results incrementally).
        """
        if total is None and isinstance(images, Sequence):
            total = len(images)

        def forward(pixels: torch.Tensor) -> torch.Tensor:
            return self.encode_pixels(pixels, normalize=normalize)

        with self._bar(total, "images") as bar:
            done = run_batches(
                images, self.processor.image_processor.preprocess, forward, batch_size=self.batch_size,
                workers=self.workers, on_error=on_error, progress=bar, on_batch=on_batch,
            )  # fmt: skip
        embeds = torch.cat(done.rows) if done.rows else torch.empty(0, self.model.config.projection_dim)
        return ImageEmbeddings(embeds, done.indices, done.errors)

    def encode_pixels(self, pixels: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """`B x D` float32 embeddings (on the CPU) of preprocessed pixels `B x 3 x H x W` (what the image
        processor's `preprocess` gives, stacked), for callers that decode images themselves."""
        with torch.inference_mode():
            pixels = pixels.to(self.device, self.dtype)
            if self.fast.align.channels_last:
                pixels = pixels.contiguous(memory_format=torch.channels_last)
            with self.fast.autocast(self.device):
                return self.towers.encode_image(pixels, normalize=normalize).float().cpu()

    def _bar(self, total: int | None, unit: str) -> Any:
        return progress_bar(total, unit, self.progress)
