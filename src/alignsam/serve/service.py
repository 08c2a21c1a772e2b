"""`Service`: the models, the image sessions and every endpoint's work, usable in-process without HTTP.

    service = Service("demo", "demo")
    service.classify({"images": [b64], "labels": ["red star", "blue circle"]})
    info = service.add_image(png_bytes)                     # an image session; its embedding is computed once
    service.segment_image(info["id"], {"points": [[40, 52, 1]]})

Every request runs as a coroutine on the service's own event loop (a daemon thread started on first use):
the synchronous methods above wait for it, the HTTP app (`alignsam.serve.app`) awaits it through `call`.
There, concurrent requests meet:

- ALIGN images and texts go through request batchers (`alignsam.serve.batching`): the images of concurrent
  classify, embed, similarity, tag and search requests share one forward pass, and so do their texts;
- text embeddings are cached (by text: a label with its template is one text), and a text already being
  embedded for one request is awaited by the others instead of embedded again, so label embeddings are
  computed once for all requests that share them;
- images are decoded and resized in a thread pool while the models run;
- SAM image embeddings are computed once per distinct upload (keyed by the SHA-256 of its bytes) in the
  background, kept in a byte-bounded LRU cache, and a click costs only the prompt decoder; decoder calls on
  different images are batched too.

Model calls run in single-thread executors ("lanes": ALIGN, SAM prompts, SAM image embeddings and
automatic masks), never on the event loop, so a long image embedding never delays a click.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import numpy as np
import torch
from pydantic import BaseModel, ValidationError

from alignsam.errors import AlignSamError, ImageError, InputError, PromptError
from alignsam.fast import FastPath
from alignsam.io.images import load_image, load_image_array
from alignsam.serve import schemas as s
from alignsam.serve.batching import Batcher
from alignsam.serve.config import ServeConfig
from alignsam.serve.errors import NotFoundError, UnavailableError
from alignsam.serve.inputs import ImageSource, PathGuard, Term, Upload, image_source, parse_string_item, short_name
from alignsam.serve.search import SearchIndex, open_index, thumbnail
from alignsam.serve.segment import PromptJob, automatic, decode, install, label_map, png_base64, scribble_points
from alignsam.serve.sessions import ByteLRU, ImageSession, SamEmbedding, compute_embedding

T = TypeVar("T")
MB = 1024 * 1024
_ARTICLES = ("the ", "a ", "an ")


@dataclasses.dataclass
class EmbeddingJob:
    """The background computation of one SAM embedding (shared by every session of the same bytes)."""

    task: asyncio.Task[SamEmbedding]
    progress: float = 0.0
    error: str | None = None


class Service:
    """The models and the request handlers, independent of HTTP (see the module docstring).

    Args:
        model, sam_model: ALIGN and SAM references (hub id, folder, or `demo`).
        fast: speed options for both models (`alignsam.fast.FastPath`).
        config: every other setting (`ServeConfig`); or give its fields as keyword arguments.
    """

    def __init__(
        self,
        model: str | None = None,
        sam_model: str | None = None,
        *,
        fast: FastPath | None = None,
        config: ServeConfig | None = None,
        **settings: Any,
    ) -> None:
        if config is None:
            named: dict[str, Any] = {k: v for k, v in (("model", model), ("sam_model", sam_model)) if v is not None}
            config = ServeConfig(**named, **settings)
        elif model is not None or sam_model is not None or settings:
            raise InputError("Give either a ServeConfig or the settings, not both.")
        self.config = config
        self.fast = fast or FastPath()
        self.guard = PathGuard(config.allow_paths)
        self.index: SearchIndex | None = open_index(config.index) if config.index is not None else None
        self._models_lock = threading.Lock()
        self._encoder: Any = None
        self._sam: Any = None
        self.embeddings: ByteLRU[SamEmbedding] = ByteLRU(int(config.cache_mb * MB), lambda e: e.nbytes)
        self.sessions: ByteLRU[ImageSession] = ByteLRU(int(config.sessions_mb * MB), lambda x: x.nbytes)
        self.texts: ByteLRU[torch.Tensor] = ByteLRU(int(config.text_cache_mb * MB), lambda v: v.numel() * 4 + 200)
        self.thumbnails: ByteLRU[bytes] = ByteLRU(32 * MB, len)
        self._jobs: dict[str, EmbeddingJob] = {}
        self._text_flight: dict[str, asyncio.Future[torch.Tensor]] = {}
        self._amg_flight: dict[tuple[str, str], asyncio.Future[list[Any]]] = {}
        self.decode_pool = concurrent.futures.ThreadPoolExecutor(config.workers, "alignsam-decode")
        self.align_lane = concurrent.futures.ThreadPoolExecutor(1, "alignsam-align")
        self.sam_lane = concurrent.futures.ThreadPoolExecutor(
            1, "alignsam-sam", initializer=torch.set_num_threads, initargs=(config.prompt_threads,)
        )  # torch's thread count is per thread (OpenMP): this lane alone
        self.embed_lane = concurrent.futures.ThreadPoolExecutor(1, "alignsam-embed")
        wait = config.align_wait_ms / 1000
        self.image_batcher: Batcher[np.ndarray, torch.Tensor] = Batcher(
            self._embed_pixels, self.align_lane, config.align_batch, wait, "align-images"
        )
        self.text_batcher: Batcher[tuple[str, ...], torch.Tensor] = Batcher(
            self._embed_text_lists, self.align_lane, config.align_batch, wait, "align-texts"
        )
        self.sam_batcher: Batcher[tuple[PromptJob, int, tuple[str, ...]], Any] = Batcher(
            self._decode_jobs, self.sam_lane, config.sam_batch, config.sam_wait_ms / 1000, "sam-prompts"
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._prompt_predictor: Any = None
        self._embed_predictor: Any = None

    # --- models, loaded on first use (in a lane, never on the event loop) --------------------------------

    @property
    def encoder(self) -> Any:
        with self._models_lock:
            if self._encoder is None:
                from alignsam.tools.encoder import Encoder

                self._encoder = Encoder.from_pretrained(
                    self.config.model, device=self.config.device, batch_size=self.config.batch_size, fast=self.fast,
                    backend=self.config.backend,
                )  # fmt: skip
            return self._encoder

    @property
    def sam(self) -> Any:
        with self._models_lock:
            if self._sam is None:
                from alignsam.sam import SamModel

                self._sam = SamModel.from_pretrained(self.config.sam_model, device=self.config.device)
            return self._sam

    def warm_up(self) -> None:
        """Load both models now (the command does, so that the first request is not the slow one)."""
        _ = self.encoder, self.sam

    async def _align(self) -> Any:
        if self._encoder is None:
            await self._in(self.align_lane, lambda: self.encoder)
        return self._encoder

    async def _sam_model(self) -> Any:
        if self._sam is None:
            await self._in(self.embed_lane, lambda: self.sam)
        return self._sam

    # --- the event loop ----------------------------------------------------------------------------------

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._closed:
                raise UnavailableError("The service was closed; create another.")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="alignsam-service", daemon=True).start()
                self._loop = loop
            return self._loop

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine of this service to its end from synchronous code (any thread but the loop's)."""
        loop = self._event_loop()
        if threading.current_thread().name == "alignsam-service":
            work.close()
            raise RuntimeError("Service.run was called on the service's own event loop; await the coroutine.")
        return asyncio.run_coroutine_threadsafe(work, loop).result()

    async def call(self, work: Coroutine[Any, Any, T]) -> T:
        """Await a coroutine of this service from another event loop (the HTTP server's); cancelling the
        caller cancels the work."""
        future = asyncio.run_coroutine_threadsafe(work, self._event_loop())
        return await asyncio.wrap_future(future)

    def _background(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task that runs on its own (held here until it ends: the loop keeps only weak references)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _in(self, lane: concurrent.futures.Executor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(lane, fn, *args)

    def close(self) -> None:
        """Stop the event loop and the worker threads (the service cannot be used afterwards)."""
        with self._loop_lock:
            self._closed = True
            loop, self._loop = self._loop, None
        if loop is not None and loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_cancel_all(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        for pool in (self.decode_pool, self.align_lane, self.sam_lane, self.embed_lane):
            pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the synchronous API (as before the HTTP layer was FastAPI) --------------------------------------

    def endpoints(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "/classify": self.classify,
            "/embed": self.embed,
            "/similarity": self.similarity,
            "/tag": self.tag,
            "/segment": self.segment,
            "/masks": self.masks,
            "/search": self.search,
        }

    def handle(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Answer one request to a known endpoint; raises `AlignSamError` for bad input."""
        return self.endpoints()[path](body)

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "models": {"align": self.config.model, "sam": self.config.sam_model},
            "loaded": {"align": self._encoder is not None, "sam": self._sam is not None},
            "device": self.config.device,
            "backend": self.config.backend,
            "sessions": len(self.sessions),
            "embedding_cache": {"entries": len(self.embeddings), "mb": round(self.embeddings.nbytes / MB, 2),
                                "budget_mb": self.config.cache_mb, "evictions": self.embeddings.evictions},
            "text_cache": {"entries": len(self.texts), "mb": round(self.texts.nbytes / MB, 2)},
            "batching": {b.name: b.stats.to_dict() for b in (self.image_batcher, self.text_batcher, self.sam_batcher)},
            "index": None if self.index is None else {"images": len(self.index), "dim": self.index.dim},
        }  # fmt: skip

    def classify(self, body: dict[str, Any] | s.ClassifyRequest) -> dict[str, Any]:
        return self.run(self.aclassify(_parse(s.ClassifyRequest, body)))

    def embed(self, body: dict[str, Any] | s.EmbedRequest) -> dict[str, Any]:
        return self.run(self.aembed(_parse(s.EmbedRequest, body)))

    def similarity(self, body: dict[str, Any] | s.SimilarityRequest) -> dict[str, Any]:
        return self.run(self.asimilarity(_parse(s.SimilarityRequest, body)))

    def tag(self, body: dict[str, Any] | s.TagRequest) -> dict[str, Any]:
        return self.run(self.atag(_parse(s.TagRequest, body)))

    def segment(self, body: dict[str, Any] | s.SegmentRequest) -> dict[str, Any]:
        return self.run(self.asegment(_parse(s.SegmentRequest, body)))

    def masks(self, body: dict[str, Any] | s.MasksRequest) -> dict[str, Any]:
        return self.run(self.amasks(_parse(s.MasksRequest, body)))

    def search(self, body: dict[str, Any] | s.SearchRequest) -> dict[str, Any]:
        return self.run(self.asearch(_parse(s.SearchRequest, body)))

    def add_image(self, image: bytes | str, name: str = "upload", wait: bool = False) -> dict[str, Any]:
        """Start an image session from the bytes of an image file (or an image string); with `wait`, return
        once its embedding is ready."""
        source: ImageSource = Upload(image, name) if isinstance(image, bytes) else image_source(image, self.guard)
        info = self.run(self.aadd_image(source, name))
        if wait:
            self.run(self.aembedding(info["id"]))
            info = self.image_info(info["id"])
        return info

    def image_info(self, image_id: str) -> dict[str, Any]:
        return self.run(self.aimage_info(image_id))

    def segment_image(self, image_id: str, body: dict[str, Any] | s.SessionSegmentRequest) -> dict[str, Any]:
        return self.run(self.asegment_image(image_id, _parse(s.SessionSegmentRequest, body)))

    def image_masks(self, image_id: str, body: dict[str, Any] | s.SessionMasksRequest) -> dict[str, Any]:
        return self.run(self.aimage_masks(image_id, _parse(s.SessionMasksRequest, body)))

    def label_image(self, image_id: str, body: dict[str, Any] | s.LabelRequest) -> dict[str, Any]:
        return self.run(self.alabel(image_id, _parse(s.LabelRequest, body)))

    def find_in_image(self, image_id: str, body: dict[str, Any] | s.FindRequest) -> dict[str, Any]:
        return self.run(self.afind(image_id, _parse(s.FindRequest, body)))

    def tag_image(self, image_id: str, body: dict[str, Any] | s.SessionTagRequest) -> dict[str, Any]:
        return self.run(self.atag_image(image_id, _parse(s.SessionTagRequest, body)))

    # --- ALIGN: the batched primitives --------------------------------------------------------------------

    def _embed_pixels(self, pixels: list[np.ndarray]) -> list[torch.Tensor]:
        """One forward pass of the image tower over preprocessed `3 x S x S` arrays (runs in the ALIGN lane)."""
        encoder = self.encoder
        batch = torch.from_numpy(np.stack(pixels)).to(encoder.device, encoder.dtype)
        if encoder.fast.align.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with encoder.fast.autocast(encoder.device):
            rows = encoder.model.encode_image(batch, normalize=True).float().cpu()
        return list(rows)

    def _embed_text_lists(self, lists: list[tuple[str, ...]]) -> list[torch.Tensor]:
        """The texts of several requests embedded together, each distinct text once (the ALIGN lane)."""
        unique = list(dict.fromkeys(t for texts in lists for t in texts))
        rows = self.encoder.encode_texts(unique)
        where = {t: i for i, t in enumerate(unique)}
        return [rows[[where[t] for t in texts]] for texts in lists]

    async def image_rows(self, pixels: Sequence[np.ndarray]) -> torch.Tensor:
        """`N x D` normalised image embeddings, through the image batcher."""
        await self._align()
        if not pixels:
            return torch.empty(0, self._encoder.model.config.projection_dim)
        return torch.stack(await asyncio.gather(*(self.image_batcher.submit(p) for p in pixels)))

    async def text_rows(self, texts: Sequence[str]) -> torch.Tensor:
        """`N x D` normalised text embeddings: cached ones, ones other requests are embedding (awaited), and
        the rest through the text batcher."""
        await self._align()
        unique = list(dict.fromkeys(texts))
        if self.texts.budget <= 0:  # no cache: no sharing between requests either
            rows = await self.text_batcher.submit(tuple(unique))
            found = dict(zip(unique, rows, strict=True))
            return torch.stack([found[t] for t in texts])
        have: dict[str, torch.Tensor] = {}
        waits: dict[str, asyncio.Future[torch.Tensor]] = {}
        missing: list[str] = []
        for text in unique:
            row = self.texts.get(text)
            if row is not None:
                have[text] = row
            elif text in self._text_flight:
                waits[text] = self._text_flight[text]
            else:
                missing.append(text)
        if missing:
            loop = asyncio.get_running_loop()
            owned = {t: loop.create_future() for t in missing}
            self._text_flight.update(owned)
            # a task of its own: a request cancelled (timed out) while it runs does not fail the others
            self._background(self._fill_texts(owned))
            waits.update(owned)
        for text, future in waits.items():
            have[text] = await asyncio.shield(future)
        return torch.stack([have[t] for t in texts])

    async def _fill_texts(self, owned: dict[str, asyncio.Future[torch.Tensor]]) -> None:
        texts = tuple(owned)
        try:
            rows = await self.text_batcher.submit(texts)
        except BaseException as err:
            for future in owned.values():
                future.set_exception(err if isinstance(err, Exception) else RuntimeError("cancelled"))
                future.exception()  # marked as seen: requests that still wait raise it themselves
            raise
        finally:
            for text in texts:
                self._text_flight.pop(text, None)
        for text, row in zip(texts, rows, strict=True):
            self.texts.put(text, row)
            owned[text].set_result(row)

    async def class_rows(self, labels: Sequence[str], templates: str | Sequence[str]) -> torch.Tensor:
        """Zero-shot class embeddings `C x D`, as `Encoder.classifier`: each label's template texts
        embedded, averaged and normalised again (texts come from the shared cache)."""
        from alignsam.tools.templates import resolve_templates

        if any(not label.strip() for label in labels):
            raise InputError("Labels must be non-empty strings (one is blank).")
        forms = resolve_templates(templates)
        rows = await self.text_rows([form.format(label) for label in labels for form in forms])
        return torch.nn.functional.normalize(rows.view(len(labels), len(forms), -1).mean(1), dim=-1)

    async def _sources(self, refs: Sequence[str], field: str) -> list[ImageSource]:
        return [image_source(ref, self.guard, f"'{field}' item {i}") for i, ref in enumerate(refs)]

    async def _pixels(self, sources: Sequence[ImageSource | np.ndarray]) -> list[np.ndarray | AlignSamError]:
        """Each image decoded (with the size guard) and preprocessed for ALIGN in the decode pool, or the
        error that made it unreadable."""
        encoder = await self._align()
        prep = encoder.processor.image_processor.preprocess
        limit = self.config.max_pixels

        def work(source: ImageSource | np.ndarray) -> np.ndarray | AlignSamError:
            try:
                if isinstance(source, np.ndarray):
                    return prep(source)
                return prep(load_image(source.data if isinstance(source, Upload) else source, max_pixels=limit))
            except AlignSamError as err:
                return err

        return list(await asyncio.gather(*(self._in(self.decode_pool, work, src) for src in sources)))

    # --- ALIGN endpoints ----------------------------------------------------------------------------------

    async def aclassify(self, req: s.ClassifyRequest) -> dict[str, Any]:
        from alignsam.tools.classify import ClassifyResult, Prediction

        sources = await self._sources(req.images, "images")
        names = _names(sources)
        pixels = await self._pixels(sources)
        ok = [i for i, p in enumerate(pixels) if isinstance(p, np.ndarray)]
        classes, embeds = await asyncio.gather(
            self.class_rows(req.labels, req.templates), self.image_rows([_array(pixels[i]) for i in ok])
        )
        probs = (self._encoder.logit_scale * embeds @ classes.T).softmax(dim=-1)
        top = probs.topk(min(req.top_k, len(req.labels)), dim=-1)
        predictions = [
            Prediction(names[i], [req.labels[j] for j in idx.tolist()], [round(float(v), 6) for v in val])
            for i, idx, val in zip(ok, top.indices, top.values, strict=True)
        ]
        errors = [{"image": names[i], "error": str(p)} for i, p in enumerate(pixels) if not isinstance(p, np.ndarray)]
        return ClassifyResult(predictions, errors, probs).to_dict()

    async def aembed(self, req: s.EmbedRequest) -> dict[str, Any]:
        if req.images is None and req.texts is None:
            raise InputError("Give 'images', 'texts' or both.")
        out: dict[str, Any] = {}
        if req.images is not None:
            sources = await self._sources(req.images, "images")
            names = _names(sources)
            pixels = await self._pixels(sources)
            ok = [i for i, p in enumerate(pixels) if isinstance(p, np.ndarray)]
            out["image_embeddings"] = (await self.image_rows([_array(pixels[i]) for i in ok])).tolist()
            out["image_indices"] = ok
            out["errors"] = [
                {"image": names[i], "error": str(p)} for i, p in enumerate(pixels) if not isinstance(p, np.ndarray)
            ]
        if req.texts is not None:
            out["text_embeddings"] = (await self.text_rows(req.texts)).tolist()
        return out

    async def asimilarity(self, req: s.SimilarityRequest) -> dict[str, Any]:
        from alignsam.tools.similarity import SimilarityResult

        rows = [self._item(x, f"rows item {i}") for i, x in enumerate(req.rows)]
        cols = [self._item(x, f"cols item {i}") for i, x in enumerate(req.cols)]
        (row_names, a, row_errors), (col_names, b, col_errors) = await asyncio.gather(
            self._compose(rows), self._compose(cols)
        )
        cosine = a @ b.T
        result = SimilarityResult(row_names, col_names, cosine, self._encoder.logit_scale, row_errors + col_errors)
        return result.to_dict()

    def _item(self, item: str | s.ItemModel, where: str) -> tuple[str, list[Term]]:
        """(name, terms) of a similarity item; images are images whatever form they come in."""
        if isinstance(item, str):
            terms = parse_string_item(item, self.guard)
            named = [(t.weight, short_name(t.value, k)) for k, t in enumerate(terms)]
            name = (
                item
                if all(t.kind == "text" for t in terms)
                else " + ".join(f"{w:g}*{n}" if w != 1 else n for w, n in named)
            )
            return name, terms
        parts = item.terms or [s.TermModel(text=item.text, image=item.image, weight=1.0)]
        terms = []
        for k, part in enumerate(parts):
            if (part.text is None) == (part.image is None):
                raise InputError(f"{where}: each term needs exactly one of 'text' and 'image'.")
            if part.text is not None:
                terms.append(Term(part.weight, "text", part.text))
            else:
                assert part.image is not None
                terms.append(Term(part.weight, "image", image_source(part.image, self.guard, f"{where} term {k}")))
        default = " + ".join(short_name(t.value, k) for k, t in enumerate(terms))
        return item.name or default, terms

    async def _compose(self, items: list[tuple[str, list[Term]]]) -> tuple[list[str], torch.Tensor, list[dict]]:
        """The normalised weighted sum of each item's term embeddings; items whose image cannot be read go to
        the errors."""
        texts = [str(t.value) for _, terms in items for t in terms if t.kind == "text"]
        images = [t for _, terms in items for t in terms if t.kind == "image"]
        pixels = await self._pixels([t.value for t in images if not isinstance(t.value, str)])
        ok = [i for i, p in enumerate(pixels) if isinstance(p, np.ndarray)]
        text_rows, image_rows = await asyncio.gather(
            self.text_rows(texts) if texts else _nothing(), self.image_rows([_array(pixels[i]) for i in ok])
        )
        text_of = dict(zip(texts, text_rows, strict=True)) if texts else {}
        image_of = {id(images[i]): row for i, row in zip(ok, image_rows, strict=True)}
        failed = {id(images[i]): str(p) for i, p in enumerate(pixels) if not isinstance(p, np.ndarray)}
        names: list[str] = []
        rows: list[torch.Tensor] = []
        errors: list[dict[str, str]] = []
        for name, terms in items:
            bad = [failed[id(t)] for t in terms if id(t) in failed]
            if bad:
                errors.append({"item": name, "error": bad[0]})
                continue
            vec = sum(t.weight * (text_of[str(t.value)] if t.kind == "text" else image_of[id(t)]) for t in terms)
            assert isinstance(vec, torch.Tensor)
            if float(vec.norm()) < 1e-6:
                raise InputError(f"The composed item {name!r} cancels out to nothing.")
            names.append(name)
            rows.append(torch.nn.functional.normalize(vec, dim=0))
        dim = self._encoder.model.config.projection_dim
        return names, torch.stack(rows) if rows else torch.empty(0, dim), errors

    async def atag(self, req: s.TagRequest) -> dict[str, Any]:
        sources = await self._sources(req.images, "images")
        names = _names(sources)
        return await self._tag(await self._pixels(sources), names, req)

    async def _tag(self, pixels: list[np.ndarray | AlignSamError], names: list[str], req: s.TagOptions) -> dict:
        from alignsam.tools.tag import TagPolicy, select_tags

        vocab = _vocabulary(req.vocab, req.groups)
        if len(vocab) < 2:
            raise InputError("A tag vocabulary needs at least two tags (z-scores compare tags with each other).")
        policy = TagPolicy(req.threshold, req.max_tags, req.min_tags)
        ok = [i for i, p in enumerate(pixels) if isinstance(p, np.ndarray)]
        classes, embeds = await asyncio.gather(
            self.class_rows(vocab, req.templates), self.image_rows([_array(pixels[i]) for i in ok])
        )
        tags = select_tags(embeds @ classes.T, vocab, policy)
        return {
            "results": [{"image": names[i], "tags": t} for i, t in zip(ok, tags, strict=True)],
            "errors": [{"image": names[i], "error": str(p)} for i, p in enumerate(pixels) if i not in ok],
            "policy": dataclasses.asdict(policy),
            "vocabulary_size": len(vocab),
        }

    # --- search -------------------------------------------------------------------------------------------

    async def asearch(self, req: s.SearchRequest) -> dict[str, Any]:
        index = self.index
        if index is None:
            raise UnavailableError(
                "This server has no search index; start it with --index DIR (an index folder or an embedding folder)."
            )
        if req.image is not None and req.image_id is not None:
            raise InputError("Give 'image' or 'image_id', not both.")
        parts: list[Awaitable[torch.Tensor]] = []
        weights: list[float] = []
        if req.text is not None:
            parts.append(self.text_rows([req.text]))
            weights.append(req.text_weight)
        if req.image is not None or req.image_id is not None:
            if req.image_id is not None:
                source: ImageSource | np.ndarray = self._session(req.image_id).image
            else:
                assert req.image is not None
                source = image_source(req.image, self.guard, "'image'")
            pixels = (await self._pixels([source]))[0]
            if not isinstance(pixels, np.ndarray):
                raise pixels
            parts.append(self.image_rows([pixels]))
            weights.append(req.image_weight)
        if not parts:
            raise InputError("Give 'text', 'image' or 'image_id' (or a text with an image).")
        rows = await asyncio.gather(*parts)
        query = sum(w * r[0] for w, r in zip(weights, rows, strict=True))
        assert isinstance(query, torch.Tensor)
        if float(query.norm()) < 1e-6:
            raise InputError("The query cancels out to nothing (weights of opposite signs on equal parts).")
        query = torch.nn.functional.normalize(query, dim=0)[None]
        hits = (await self._in(self.decode_pool, index.search, query, req.k, req.where, req.dedupe))[0]
        for hit in hits:
            hit["thumbnail"] = f"/thumbnail?path={quote(hit['path'], safe='')}"
        described = {"text": req.text, "image": req.image_id or ("upload" if req.image else None),
                     "text_weight": req.text_weight, "image_weight": req.image_weight}  # fmt: skip
        return {"query": described, "results": hits, "index_size": len(index)}

    async def athumbnail(self, path: str, size: int) -> bytes:
        if self.index is None:
            raise UnavailableError("This server has no search index; start it with --index DIR.")
        key = f"{size}:{path}"
        cached = self.thumbnails.get(key)
        if cached is not None:
            return cached
        file = self.index.path_of(path)
        data = await self._in(self.decode_pool, thumbnail, file, size)
        self.thumbnails.put(key, data)
        return data

    # --- SAM: sessions and embeddings ---------------------------------------------------------------------

    async def aadd_image(self, source: ImageSource, name: str = "upload") -> dict[str, Any]:
        """A new image session: the image decoded now (a bad image fails here), its embedding started in the
        background unless an identical upload's is cached or on its way."""
        upload = source if isinstance(source, Upload) else await self._in(self.decode_pool, _read, source)
        key = upload.sha256
        limit = self.config.max_pixels
        image = await self._in(self.decode_pool, lambda: load_image_array(upload.data, max_pixels=limit))
        session = ImageSession(image, key, name if isinstance(source, Upload) else str(source))
        failed = self._jobs.get(key)
        if failed is not None and failed.error is not None:  # a new upload of the same bytes tries again
            del self._jobs[key]
        shared = key in self.embeddings or key in self._jobs
        self.sessions.put(session.id, session)
        if session.id not in self.sessions:
            raise InputError(f"The image takes {session.nbytes / MB:.0f} MB, more than the sessions' memory.")
        self._start_embedding(session)
        info = self._info(session)
        info["shared"] = shared
        return info

    async def aimage_info(self, image_id: str) -> dict[str, Any]:
        session = self._session(image_id)
        if session.key not in self.embeddings and session.key not in self._jobs:
            self._start_embedding(session)  # evicted from the cache: computed again
        return self._info(session)

    async def aembedding(self, image_id: str) -> dict[str, Any]:
        await self._embedding(self._session(image_id))
        return self._info(self._session(image_id))

    def _session(self, image_id: str) -> ImageSession:
        session = self.sessions.get(image_id)
        if session is None:
            raise NotFoundError(f"No image session '{image_id[:64]}' (never uploaded, or expired): upload it again.")
        return session

    def _info(self, session: ImageSession) -> dict[str, Any]:
        job = self._jobs.get(session.key)
        if session.key in self.embeddings:
            status, progress, error = "ready", 1.0, None
        elif job is not None and job.error is not None:
            status, progress, error = "failed", job.progress, job.error
        else:
            status, progress, error = "pending", job.progress if job else 0.0, None
        h, w = session.size
        return {"id": session.id, "status": status, "progress": round(progress, 3), "width": w, "height": h,
                "name": session.name, "sha256": session.key, "shared": False, "error": error}  # fmt: skip

    def _start_embedding(self, session: ImageSession) -> EmbeddingJob:
        key = session.key
        job = self._jobs.get(key)
        if job is not None:
            return job
        loop = asyncio.get_running_loop()
        holder: list[EmbeddingJob] = []

        def progress(value: float) -> None:  # called in the embedding lane
            holder[0].progress = value

        async def work() -> SamEmbedding:
            model = await self._sam_model()
            predictor = self._embedding_predictor(model)
            try:
                embedding = await self._in(self.embed_lane, compute_embedding, predictor, session.image, progress)
            except Exception as err:
                holder[0].error = f"{type(err).__name__}: {err}" if not isinstance(err, AlignSamError) else str(err)
                raise
            self.embeddings.put(key, embedding)
            del self._jobs[key]
            return embedding

        job = EmbeddingJob(loop.create_task(work()))
        holder.append(job)
        job.task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: no warning
        self._jobs[key] = job
        return job

    def _embedding_predictor(self, model: Any) -> Any:
        from alignsam.sam.predictor import SamPredictor

        if self._embed_predictor is None:
            self._embed_predictor = SamPredictor(model, max_pixels=self.config.max_pixels, fast=self.fast)
        return self._embed_predictor

    async def _embedding(self, session: ImageSession) -> SamEmbedding:
        embedding = self.embeddings.get(session.key)
        if embedding is not None:
            return embedding
        job = self._start_embedding(session)
        if job.error is not None:
            raise UnavailableError(f"The image's embedding failed: {job.error}")
        try:
            return await asyncio.shield(job.task)
        except AlignSamError:
            raise
        except Exception as err:
            raise UnavailableError(f"The image's embedding failed: {job.error or err}") from err

    async def _stateless_session(self, ref: str) -> ImageSession:
        """A session for an image sent with a request (`/segment`, `/masks`): its embedding is cached by its
        bytes like an upload's, so sending the same image again costs only the decoder."""
        info = await self.aadd_image(image_source(ref, self.guard, "'image'"))
        return self._session(info["id"])

    # --- SAM: prompts ---------------------------------------------------------------------------------------

    def _prompt_predictor_for(self) -> Any:
        if self._prompt_predictor is None:
            from alignsam.sam.predictor import SamPredictor

            self._prompt_predictor = SamPredictor(
                self.sam, max_pixels=self.config.max_pixels, fast=self.fast, backend=self.config.backend
            )
        return self._prompt_predictor

    def _decode_jobs(self, items: list[tuple[PromptJob, int, tuple[str, ...]]]) -> list[Any]:
        """The prompt lane's batch: every job decoded (one decoder batch per prompt shape), then each job's
        best `keep` candidates encoded as asked: `[(low-res logits 1 x L x L, candidate), ...]` per job."""
        predictions = decode(self._prompt_predictor_for(), [job for job, _, _ in items])
        out = []
        for (_, keep, output), prediction in zip(items, predictions, strict=True):
            sets = [prediction] if prediction.masks.ndim == 3 else [
                type(prediction)(*(f[k] for f in prediction)) for k in range(prediction.masks.shape[0])
            ]  # fmt: skip
            chosen = []
            for k, one in enumerate(sets):
                for i in np.argsort(-one.iou_predictions)[:keep]:
                    candidate = _candidate(one.masks[i], float(one.iou_predictions[i]), k, output)
                    chosen.append((one.low_res_logits[i][None].copy(), candidate))
            out.append(chosen)
        return out

    async def asegment_image(self, image_id: str, req: s.SessionSegmentRequest) -> dict[str, Any]:
        session = self._session(image_id)
        points = _points(req.points, session.size)
        for scribble in req.scribbles:
            points += [[float(x), float(y), float(scribble.label)] for x, y in scribble_points(scribble.line)]
        boxes = ([req.box] if req.box is not None else []) + list(req.boxes)
        if len(boxes) > 1 and points:
            raise PromptError("Several boxes cannot be combined with points; give one box, or boxes alone.")
        mask_input = None
        if req.mask_input is not None:
            mask_input = session.logits.get(req.mask_input)
            if mask_input is None:
                raise InputError(
                    f"'mask_input': no mask '{req.mask_input[:32]}' of this image is kept; send a recent mask_id."
                )
        if not points and not boxes and mask_input is None:
            raise PromptError("Give at least one point, box, scribble or mask_input.")
        # SAM's advice: three candidates for a lone click; a box, more points or an earlier mask settle it
        default = len(points) == 1 and not boxes and mask_input is None
        multimask = req.multimask if req.multimask is not None else default
        embedding = await self._embedding(session)
        array = np.array(points, dtype=np.float64).reshape(-1, 3)
        box = None if not boxes else np.array(boxes[0] if len(boxes) == 1 else boxes, dtype=np.float64)
        job = PromptJob(
            embedding,
            array[:, :2] if points else None,
            array[:, 2].astype(int) if points else None,
            box,
            mask_input,
            multimask,
        )
        # decoded, and the kept candidates encoded, in one trip to the prompt lane
        chosen = await self.sam_batcher.submit((job, req.max_candidates, tuple(req.output)))
        candidates = []
        for logits, candidate in chosen:
            candidates.append({"mask_id": session.keep_logits(logits), **candidate})
        self.sessions.put(session.id, session)  # its kept logits count now
        h, w = session.size
        return {"image_id": session.id, "width": w, "height": h, "candidates": candidates}

    async def asegment(self, req: s.SegmentRequest) -> dict[str, Any]:
        from alignsam.tools.masks import prompted_masks, sa1b

        session = await self._stateless_session(req.image)
        embedding = await self._embedding(session)
        points = _points(req.points, session.size)

        def work() -> list[list[Any]]:
            predictor = self._prompt_predictor_for()
            install(predictor, [embedding])
            try:
                return prompted_masks(predictor, points, req.boxes, multimask=req.multimask)
            finally:
                predictor.reset_image()

        per_prompt = await self._in(self.sam_lane, work)
        annotations = [
            {**m.annotation(i), "prompt_index": k} for k, masks in enumerate(per_prompt) for i, m in enumerate(masks)
        ]
        return sa1b("image", session.size, annotations)

    # --- SAM + ALIGN: automatic masks, labels, find, tags -----------------------------------------------------

    async def _automatic(self, session: ImageSession, amg: s.AmgOptions) -> list[Any]:
        from alignsam.sam.automatic import AmgConfig

        config = AmgConfig.for_model(self.sam).replace(**amg.given())  # the model's amg.json, then the request
        options = dataclasses.asdict(config)
        key = json.dumps(options, sort_keys=True)
        if session.automatic is not None and session.automatic[0] == key:
            return session.automatic[1]
        flight = self._amg_flight.get((session.id, key))
        if flight is None:
            flight = asyncio.get_running_loop().create_task(self._make_automatic(session, options, key))
            self._amg_flight[(session.id, key)] = flight
            flight.add_done_callback(lambda _: self._amg_flight.pop((session.id, key), None))
        return await asyncio.shield(flight)

    async def _make_automatic(self, session: ImageSession, options: dict[str, Any], key: str) -> list[Any]:
        embedding = await self._embedding(session)
        masks = await self._in(self.embed_lane, automatic, self.sam, session.image, embedding, options, self.fast)
        session.automatic = (key, masks)
        self.sessions.put(session.id, session)
        return masks

    async def amasks(self, req: s.MasksRequest) -> dict[str, Any]:
        from alignsam.tools.masks import sa1b

        session = await self._stateless_session(req.image)
        found = await self._automatic(session, req)
        return sa1b("image", session.size, [m.annotation(i) for i, m in enumerate(found)])

    async def aimage_masks(self, image_id: str, req: s.SessionMasksRequest) -> dict[str, Any]:
        from alignsam.tools.masks import sa1b

        session = self._session(image_id)
        found = await self._automatic(session, req)
        annotations = [m.annotation(i) for i, m in enumerate(found)]
        return await self._with_label_map(sa1b(session.name, session.size, annotations), found, session, req.output)

    async def _with_label_map(
        self, record: dict[str, Any], masks: list[Any], session: ImageSession, output: Sequence[str]
    ) -> dict[str, Any]:
        if "png" in output:
            record["label_map"] = await self._in(self.decode_pool, lambda: png_base64(label_map(masks, session.size)))
        if "rle" not in output:
            for annotation in record["annotations"]:
                annotation.pop("segmentation", None)
        return record

    async def alabel(self, image_id: str, req: s.LabelRequest) -> dict[str, Any]:
        from alignsam.tools.mask_labels import MASK_GROUPS, label_masks
        from alignsam.tools.masks import sa1b

        session = self._session(image_id)
        vocab = req.labels if req.labels is not None else _vocabulary(None, req.groups or list(MASK_GROUPS))
        encoder = await self._align()
        found = await self._automatic(session, req)
        records = await self._in(
            self.align_lane,
            lambda: label_masks(encoder, session.image, found, vocab, templates=req.templates, top_k=req.top_k),
        )
        record = sa1b(session.name, session.size, records)
        record["vocabulary_size"] = len(vocab)
        return await self._with_label_map(record, found, session, req.output)

    async def afind(self, image_id: str, req: s.FindRequest) -> dict[str, Any]:
        from alignsam.tools.mask_labels import crop_style, find, region_query

        session = self._session(image_id)
        if (req.text is None) == (req.reference is None):
            raise InputError("Give exactly one of 'text' and 'reference'.")
        encoder = await self._align()
        style = crop_style(encoder)
        if req.text is not None:
            words = req.text.strip()
            for article in _ARTICLES:  # "the red star" is the class "red star" in the templates
                if words.lower().startswith(article) and len(words) > len(article):
                    words = words[len(article) :].strip()
                    break
            query = (await self.class_rows([words], req.templates))[0]
            described: dict[str, Any] = {"text": req.text, "matched_as": words}
        else:
            assert req.reference is not None
            other = self._session(req.reference.image_id)
            box = req.reference.box
            query = await self._in(self.align_lane, region_query, encoder, other.image, box, style)
            described = {"reference": {"image_id": other.id, "box": box}}
        found = await self._automatic(session, req)
        matches = await self._in(
            self.align_lane, lambda: find(encoder, session.image, found, query, top_k=req.top_k, style=style)
        )
        if "png" in req.output:
            pngs = await self._in(self.decode_pool, lambda: [png_base64(found[m["id"]].mask) for m in matches])
            for match, png in zip(matches, pngs, strict=True):
                match["png"] = png
        if "rle" not in req.output:
            for match in matches:
                match.pop("segmentation", None)
        h, w = session.size
        return {"image_id": session.id, "width": w, "height": h, "query": described, "matches": matches,
                "candidates": len(found)}  # fmt: skip

    async def atag_image(self, image_id: str, req: s.SessionTagRequest) -> dict[str, Any]:
        session = self._session(image_id)
        result = await self._tag(await self._pixels([session.image]), [session.name], req)
        result["image_id"] = session.id
        return result


# --- helpers ---------------------------------------------------------------------------------------------------


def _parse(model: type[BaseModel], body: Any) -> Any:
    """A request model from a dict (in-process callers), with pydantic's complaint as an `InputError`."""
    if isinstance(body, model):
        return body
    if not isinstance(body, dict):
        raise InputError("The request body must be a JSON object.")
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise InputError(validation_message(err)) from None


def validation_message(err: ValidationError | Sequence[dict[str, Any]]) -> str:
    """pydantic's first complaint in one line, naming the field: `'top_k': Input should be ...`."""
    errors = err.errors() if isinstance(err, ValidationError) else list(err)
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    message = str(first.get("msg", "invalid")).rstrip(".")
    return f"'{where}': {message}{more}." if where else f"{message}{more}."


def _names(sources: Sequence[ImageSource]) -> list[str]:
    """How images are named in answers: their path on the server, or `#<position>`."""
    return [str(src) if isinstance(src, Path) else f"#{i}" for i, src in enumerate(sources)]


def _array(item: np.ndarray | AlignSamError) -> np.ndarray:
    assert isinstance(item, np.ndarray)
    return item


async def _cancel_all() -> None:
    """Cancel every other task of the running loop (batchers, embeddings) and wait for them to end."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _nothing() -> torch.Tensor:
    return torch.empty(0)


def _read(path: Path) -> Upload:
    try:
        return Upload(path.read_bytes(), str(path))
    except OSError as err:
        raise ImageError(f"'{path}' could not be read: {err.strerror or err}") from err


def _points(points: Sequence[Sequence[float]], size: tuple[int, int]) -> list[list[float]]:
    """`[x, y]` (on the object) or `[x, y, label]` with label 1 or 0, as `[x, y, label]` lists. The service
    takes points inside the image only (`size` is H, W): a click the page sends always is, and a point
    elsewhere is a client's mistake worth a 400; the library uses such points with a warning, as SAM does."""
    out = [[*p, 1.0] if len(p) == 2 else list(p) for p in points]
    h, w = size
    for p in out:
        if p[2] not in (0, 1):
            raise PromptError(f"A point's label must be 1 (object) or 0 (background), got {p[2]:g} in {p}.")
        if not (0 <= p[0] <= w and 0 <= p[1] <= h):
            raise PromptError(f"Point ({p[0]:g}, {p[1]:g}) lies outside the {w} x {h} image.")
    return out


def _vocabulary(vocab: Sequence[str] | None, groups: str | Sequence[str] | None) -> list[str]:
    from alignsam.tools.vocabulary import load_tags

    return list(vocab) if vocab is not None else load_tags(groups)


def _candidate(mask: np.ndarray, score: float, prompt_index: int, output: Sequence[str]) -> dict[str, Any]:
    """An answer's candidate: score, area, box, and the mask as COCO RLE and/or PNG."""
    from alignsam.io.rle import encode_rle
    from alignsam.tools.masks import Mask

    m = Mask(mask, score)
    item: dict[str, Any] = {"prompt_index": prompt_index, "score": round(score, 6), "area": m.area, "bbox": m.bbox}
    if "rle" in output:
        item["segmentation"] = encode_rle(mask)
    if "png" in output:
        item["png"] = png_base64(mask)
    return item
