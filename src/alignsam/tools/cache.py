"""A disk cache for text embeddings of fixed label sets (tag vocabularies, class lists).

Embedding a few thousand tags with BERT-base takes a minute on a CPU, and the result depends only on the
model and the prompts, so it is stored under `$ALIGNSAM_CACHE` (default `~/.cache/alignsam`), keyed by a
fingerprint of the model's text weights and by the exact prompt texts. `ALIGNSAM_CACHE=off` disables it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from alignsam.align.modeling.align import AlignModel
from alignsam.io.files import cache_dir, write_atomic
from alignsam.tools.encoder import Encoder


def model_fingerprint(model: AlignModel) -> str:
    """Identifies the text side of a model: its configuration, projection, temperature and first layer."""
    h = hashlib.sha256(repr(model.config).encode())
    bert = model.text_model.bert
    parts = [model.text_projection.weight, model.temperature, bert.embeddings.word.weight[:64]]
    parts += [p for name, p in bert.named_parameters() if name.startswith(f"layers.{len(bert.layers) - 1}.")]
    for t in parts:
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def cached_classifier(
    encoder: Encoder, labels: Sequence[str], templates: str | Sequence[str] = "photo"
) -> torch.Tensor:
    """`encoder.classifier(labels, templates)`, read from or written to the disk cache."""
    from alignsam.tools.templates import resolve_templates

    root = cache_dir()
    if root is None:
        return encoder.classifier(labels, templates)
    forms = resolve_templates(templates)
    key = hashlib.sha256(
        "\x00".join([model_fingerprint(encoder.model), "\x01".join(forms), "\x01".join(labels)]).encode()
    ).hexdigest()[:32]
    path = root / f"classifier-{key}.npy"
    if path.is_file():
        try:
            cached = np.load(path)
            if cached.shape == (len(labels), encoder.model.config.projection_dim):
                return torch.from_numpy(cached)
        except (OSError, ValueError):
            pass  # unreadable: recompute and overwrite
    result = encoder.classifier(labels, forms)

    def write(partial: Path) -> None:
        with open(partial, "wb") as f:
            np.save(f, result.numpy())

    # a read-only home is not an error (OutputError is an OSError); the cache is only an optimisation
    with contextlib.suppress(OSError):
        write_atomic(path, write)  # concurrent runs never read half a file
    return result
