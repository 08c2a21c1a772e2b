"""The service's settings: one frozen, validated dataclass, filled by `alignsam serve`'s options."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from alignsam.errors import ConfigError
from alignsam.io.images import DEFAULT_MAX_PIXELS
from alignsam.presets import DEFAULT_MODELS
from alignsam.validation import check_numbers

DEFAULT_MAX_BODY = 64 * 1024 * 1024
TOKEN_ENV = "ALIGNSAM_TOKEN"


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """How the service loads its models, what it may read, and how it batches and bounds its work.

    Args:
        model, sam_model: the ALIGN and SAM references (hub id, folder, or the bundled `demo`).
        device: "cpu", "cuda", ...
        batch_size: images per ALIGN forward pass outside the request batcher (tools, crops).
        allow_paths: root folders under which image paths on the server may be read (empty: none).
        index: an index folder (`alignsam index DIR`) or an embedding folder (`alignsam embed --out DIR`) that
            `/search` searches; None: no search.
        token: the bearer token every endpoint but `/health` requires; None: no authentication.
        cors: origins allowed to call the service from a browser page served elsewhere; empty: none.
        max_body: the largest request body in bytes (413 above it).
        timeout_s: the longest a request may take (504 after it); model work it started still finishes.
        cache_mb: memory for SAM image embeddings (LRU, shared by identical uploads).
        sessions_mb: memory for the image sessions themselves (pixels, automatic masks, kept logits).
        max_pixels: larger uploads are refused (the library's image guard).
        align_batch, align_wait_ms: the ALIGN request batcher: at most this many images (texts: 4x) per
            model call, gathered for at most this long after the first one arrives.
        sam_batch, sam_wait_ms: the same for SAM decoder calls on different images.
        text_cache_mb: memory for text embeddings (labels with their templates, queries); 0 turns the
            cache off, and with it the sharing of label embeddings between requests.
        workers: threads decoding and resizing images, overlapped with the models.
        prompt_threads: torch threads of the SAM prompt lane. Decoder calls are many small operations; on
            a busy machine the threads of each parallel region wait for each other (the demo's click on the
            2-core machine with other jobs running: 16 ms on one thread, 140 ms on two), and one thread
            leaves the other cores to image embeddings and ALIGN.
        backend: "torch", or "onnxruntime" for ALIGN's towers and SAM's prompt decoder on ONNX Runtime
            (`alignsam.export.runtime`; the `onnx` extra).
    """

    model: str = DEFAULT_MODELS["align"]
    sam_model: str = DEFAULT_MODELS["sam"]
    device: str = "cpu"
    batch_size: int = 16
    allow_paths: tuple[Path, ...] = ()
    index: Path | None = None
    token: str | None = None
    cors: tuple[str, ...] = ()
    max_body: int = DEFAULT_MAX_BODY
    timeout_s: float = 300.0
    cache_mb: float = 1024.0
    sessions_mb: float = 1024.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    align_batch: int = 32
    align_wait_ms: float = 10.0
    sam_batch: int = 8
    sam_wait_ms: float = 0.0
    text_cache_mb: float = 256.0
    workers: int = 2
    prompt_threads: int = 1
    backend: str = "torch"

    def __post_init__(self) -> None:
        if isinstance(self.allow_paths, bool | str):
            raise ConfigError(
                f"allow_paths takes the root folders images may be read from (a tuple), not {self.allow_paths!r}."
            )
        roots = tuple(Path(p) for p in self.allow_paths)
        for root in roots:
            if not root.is_dir():
                raise ConfigError(f"--allow-paths {root}: not a folder; name the folders images may be read from.")
        object.__setattr__(self, "allow_paths", tuple(r.resolve() for r in roots))
        object.__setattr__(self, "cors", tuple(self.cors))
        if self.index is not None:
            object.__setattr__(self, "index", Path(self.index))
        if self.token is not None and not self.token.strip():
            raise ConfigError("The token is empty; give a secret string, or no token.")
        check_numbers(
            self,
            "batch_size",
            "max_body",
            "max_pixels",
            "align_batch",
            "sam_batch",
            "workers",
            "prompt_threads",
            low=1,
            integer=True,
        )
        check_numbers(self, "timeout_s", "cache_mb", "sessions_mb", low=0, above=True)
        check_numbers(self, "align_wait_ms", "sam_wait_ms", "text_cache_mb", low=0)
        if self.backend not in ("torch", "onnxruntime"):
            raise ConfigError(f"ServeConfig.backend must be 'torch' or 'onnxruntime', got {self.backend!r}.")

    @classmethod
    def token_from_env(cls) -> str | None:
        """The token in `ALIGNSAM_TOKEN`, if set and not empty."""
        value = os.environ.get(TOKEN_ENV, "").strip()
        return value or None
