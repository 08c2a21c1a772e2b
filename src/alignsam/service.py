"""A small HTTP JSON service over the zero-shot tools: models load once and answer many requests.

    alignsam serve --model demo --sam-model demo --port 8000

Endpoints (JSON in, JSON out; images as base64 strings, data URLs included, or, with `--allow-paths`,
paths on the server):

| method, path | body | answer |
| --- | --- | --- |
| GET /health | | `{"status": "ok", "models": {...}}` |
| POST /classify | `{"images": [...], "labels": [...], "templates"?, "top_k"?}` | predictions as `alignsam classify` |
| POST /embed | `{"images"?: [...], "texts"?: [...]}` | `{"image_embeddings": [[...]], "text_embeddings": [[...]]}` |
| POST /similarity | `{"rows": [item, ...], "cols": [...]}` (items as in `alignsam similarity`) | the matrix |
| POST /tag | `{"images": [...], "groups"?, "vocab"?, "threshold"?, "max_tags"?}` | tags as `alignsam tag` |
| POST /segment | `{"image": ..., "points"?: [[x, y, label]], "boxes"?: [[x0, y0, x1, y1]]}` | SA-1B record |
| POST /masks | `{"image": ..., amg options?}` | SA-1B record of the automatic masks |

Bad input answers 400 with `{"error": message}`; unknown paths 404; requests over `max_body` bytes 413.
Requests are served by threads, and model calls are serialised (torch already uses every core).
It binds to 127.0.0.1 unless told otherwise: it runs models on uploaded data and has no authentication.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from alignsam.errors import AlignSamError, InputError
from alignsam.inference import FastPath
from alignsam.io.images import load_image_array
from alignsam.validation import check_count, check_number

DEFAULT_MAX_BODY = 64 * 1024 * 1024


class Service:
    """The models and the request handlers, independent of HTTP (usable in-process)."""

    def __init__(
        self,
        model: str = "kakaobrain/align-base",
        sam_model: str = "facebook/sam-vit-base",
        *,
        device: str = "cpu",
        fast: FastPath | None = None,
        backend: str = "torch",
        batch_size: int = 16,
        allow_paths: bool = False,
    ) -> None:
        self.model_ref, self.sam_ref = model, sam_model
        self.backend = backend  # "onnxruntime": ALIGN's towers and SAM's prompt decoder on ONNX Runtime
        self.device = device
        self.fast = fast or FastPath()
        self.batch_size = batch_size
        self.allow_paths = allow_paths
        self._lock = threading.Lock()
        self._encoder: Any = None
        self._sam: Any = None

    # --- models, loaded on first use ------------------------------------------------------------------

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from alignsam.tools.encoder import Encoder

            self._encoder = Encoder.from_pretrained(
                self.model_ref, device=self.device, batch_size=self.batch_size, fast=self.fast, backend=self.backend
            )
        return self._encoder

    @property
    def sam(self) -> Any:
        if self._sam is None:
            from alignsam.tools.masks import load_sam

            self._sam = load_sam(self.sam_ref, device=self.device)
        return self._sam

    # --- requests -------------------------------------------------------------------------------------

    def endpoints(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "/classify": self.classify,
            "/embed": self.embed,
            "/similarity": self.similarity,
            "/tag": self.tag,
            "/segment": self.segment,
            "/masks": self.masks,
        }

    def handle(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Answer one request to a known endpoint; raises `AlignSamError` for bad input."""
        handler = self.endpoints()[path]
        with self._lock:
            return handler(body)

    def health(self) -> dict[str, Any]:
        models = {"align": self.model_ref, "sam": self.sam_ref}
        return {"status": "ok", "models": models, "device": self.device, "backend": self.backend}

    def classify(self, body: dict[str, Any]) -> dict[str, Any]:
        from alignsam.tools.classify import classify

        images = self._images(body, "images")
        result = classify(
            self.encoder,
            images,
            _strings(body, "labels"),
            templates=_templates(body),
            top_k=check_count(body.get("top_k", 5), "'top_k'"),
        )
        return result.to_dict()

    def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "images" in body:
            done = self.encoder.encode_images(self._images(body, "images"), on_error="skip")
            out["image_embeddings"] = done.embeds.tolist()
            out["image_indices"] = done.indices
            out["errors"] = [{"image": f"#{i}", "error": m} for i, m in done.errors]
        if "texts" in body:
            out["text_embeddings"] = self.encoder.encode_texts(_strings(body, "texts")).tolist()
        if not out:
            raise InputError("Give 'images', 'texts' or both.")
        return out

    def similarity(self, body: dict[str, Any]) -> dict[str, Any]:
        from alignsam.tools.similarity import parse_items, similarity

        texts_only = not self.allow_paths  # image terms would name files on the server
        rows = parse_items(_strings(body, "rows"), texts_only=texts_only)
        cols = parse_items(_strings(body, "cols"), texts_only=texts_only)
        return similarity(self.encoder, rows, cols).to_dict()

    def tag(self, body: dict[str, Any]) -> dict[str, Any]:
        from alignsam.data import load_tags
        from alignsam.tools.tag import TagPolicy, tag

        groups = body.get("groups")
        if groups is not None and not isinstance(groups, str):
            groups = _strings(body, "groups")
        vocab = _strings(body, "vocab") if "vocab" in body else load_tags(groups)
        policy = TagPolicy(
            check_number(body.get("threshold", 3.0), "'threshold'"),
            check_count(body.get("max_tags", 10), "'max_tags'"),
            check_count(body.get("min_tags", 1), "'min_tags'", 0),
        )
        return tag(self.encoder, self._images(body, "images"), vocab, policy=policy)

    def segment(self, body: dict[str, Any]) -> dict[str, Any]:
        from alignsam.sam.predictor import SamPredictor
        from alignsam.tools.masks import prompted_masks, sa1b

        image = self._image(body.get("image"))
        predictor = SamPredictor(self.sam, fast=self.fast, backend=self.backend)
        predictor.set_image(image)
        points = [[*p, 1] if len(p) == 2 else p for p in _lists(body, "points")]  # [x, y]: on the object
        multimask = body.get("multimask")
        if multimask is not None and not isinstance(multimask, bool):
            raise InputError(f"'multimask' must be true, false or null, got {multimask!r}.")
        per_prompt = prompted_masks(predictor, points, _lists(body, "boxes"), multimask=multimask)
        annotations = [
            {**m.annotation(i), "prompt_index": k} for k, masks in enumerate(per_prompt) for i, m in enumerate(masks)
        ]
        return sa1b("image", image.shape[:2], annotations)

    def masks(self, body: dict[str, Any]) -> dict[str, Any]:
        from alignsam.sam.automatic import SamAutomaticMaskGenerator
        from alignsam.tools.masks import automatic_masks, recommended_amg, sa1b

        image = self._image(body.get("image"))
        options = {**recommended_amg(self.sam_ref), **{k: body[k] for k in _AMG_KEYS if k in body}}
        generator = SamAutomaticMaskGenerator(self.sam, fast=self.fast, **options)
        found = automatic_masks(generator, image)
        return sa1b("image", image.shape[:2], [m.annotation(i) for i, m in enumerate(found)])

    # --- inputs ---------------------------------------------------------------------------------------

    def _images(self, body: dict[str, Any], key: str) -> list[Any]:
        items = body.get(key)
        if not isinstance(items, list) or not items:
            raise InputError(f"'{key}' must be a non-empty list of images (base64 strings).")
        return [self._image_input(x) for x in items]

    def _image(self, item: Any) -> np.ndarray:
        return load_image_array(self._image_input(item))

    def _image_input(self, item: Any) -> Any:
        if not isinstance(item, str) or not item:
            raise InputError("An image must be a base64 string (or a server path, when allowed).")
        if self.allow_paths and os.path.isfile(item):
            return item
        data = item.split(",", 1)[1] if item.startswith("data:") else item
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as err:
            raise InputError(f"An image is not valid base64: {err}") from err


_AMG_KEYS = (
    "points_per_side",
    "points_per_batch",
    "pred_iou_thresh",
    "stability_score_thresh",
    "box_nms_thresh",
    "crop_n_layers",
    "min_mask_region_area",
)


def _lists(body: dict[str, Any], key: str) -> list[Any]:
    """`body[key]`, a list of lists (points, boxes; their numbers are checked where they are used), or []."""
    items = body.get(key, [])
    if not isinstance(items, list) or not all(isinstance(x, list) for x in items):
        raise InputError(f"'{key}' must be a list of lists of numbers, got {items!r}.")
    return items


def _templates(body: dict[str, Any]) -> str | list[str]:
    """The prompt templates: a preset name or a non-empty list of strings with '{}'."""
    templates = body.get("templates", "photo")
    return templates if isinstance(templates, str) else _strings(body, "templates")


def _strings(body: dict[str, Any], key: str) -> list[str]:
    items = body.get(key)
    if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
        raise InputError(f"'{key}' must be a non-empty list of strings.")
    return items


def make_server(
    service: Service, host: str = "127.0.0.1", port: int = 8000, max_body: int = DEFAULT_MAX_BODY
) -> ThreadingHTTPServer:
    """An HTTP server for `service` (call `serve_forever()`; port 0 picks a free port)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "alignsam"

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(HTTPStatus.OK, service.health())
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"No endpoint {self.path}."})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > max_body:
                # read and drop the body first, so the client sees the answer instead of a broken pipe
                while length > 0:
                    chunk = self.rfile.read(min(length, 1 << 20))
                    if not chunk:
                        break
                    length -= len(chunk)
                self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"Request over {max_body} bytes."})
                return
            if self.path not in service.endpoints():
                self._send(HTTPStatus.NOT_FOUND, {"error": f"No endpoint {self.path}."})
                return
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise InputError("The request body must be a JSON object.")
                self._send(HTTPStatus.OK, service.handle(self.path, body))
            except (AlignSamError, json.JSONDecodeError) as err:
                self._send(HTTPStatus.BAD_REQUEST, {"error": str(err)})
            except Exception as err:  # a bug: report it, keep serving
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(err).__name__}: {err}"})

        def log_message(self, format: str, *args: Any) -> None:  # quieter than the default
            pass

    return ThreadingHTTPServer((host, port), Handler)
