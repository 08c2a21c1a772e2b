"""The HTTP layer: a FastAPI app over a `Service`, served by uvicorn. Thin on purpose: each route checks its
body against a pydantic model (so `/openapi.json` and `/docs` describe it), awaits the service, and answers
JSON; every error is one line of JSON, `{"error": "...", "field": "..."}`.

| status | when |
| --- | --- |
| 400 | a body that is not JSON; bad input the models refuse (an unreadable image, a point outside the image) |
| 401 | a missing or wrong bearer token (with `--token`) |
| 404 | an unknown image id, or a thumbnail path the index does not hold |
| 413 | a body over `--max-body-mb` |
| 422 | a body that does not fit the schema (a wrong type, NaN, a number out of range, an unknown field) |
| 503 | no search index; an embedding that failed |
| 504 | a request over `--timeout` seconds |

Uvicorn's HTTP parser answers malformed requests itself (a negative or non-numeric `Content-Length` gets a
400 before any of this code runs). The page (`/`, `/static/...`), `/docs` and `/openapi.json` hold no data
and need no token, so that the page can ask for one; `/health` neither, for probes.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from importlib import metadata
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from alignsam.errors import AlignSamError, InputError
from alignsam.serve import schemas as s
from alignsam.serve.errors import status_of
from alignsam.serve.inputs import Upload, image_source
from alignsam.serve.service import Service, validation_message

log = logging.getLogger("alignsam.serve")
STATIC = Path(__file__).parent / "static"
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.ErrorBody, "description": what}
    for code, what in ((400, "bad input"), (401, "token"), (404, "unknown id"), (413, "too large"),
                       (422, "schema"), (504, "time limit"))
}  # fmt: skip
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def error_response(status: int, message: str, field: str | None = None, **headers: str) -> JSONResponse:
    body: dict[str, Any] = {"error": " ".join(message.split())}  # one line
    if field:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers=headers or None)


async def _send_error(send: Send, status: int, message: str, close: bool = False) -> None:
    data = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class BodyLimit:
    """Reads the whole request body before the app sees it, and answers 413 past `max_body` bytes
    (declared or streamed). A body declared too large is read and dropped up to `drain` bytes first, so
    that the client, still sending, hears the answer instead of a reset connection."""

    def __init__(self, app: ASGIApp, max_body: int, drain: int = 256 * 1024 * 1024) -> None:
        self.app, self.max_body, self.drain = app, max_body, drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = f"The request body is over the limit of {self.max_body} bytes (--max-body-mb)."
        if declared is not None and int(declared) > self.max_body:  # the HTTP parser checked it is a number
            if int(declared) <= self.drain:
                while (await receive()).get("more_body"):
                    pass
            return await _send_error(send, 413, too_large, close=True)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await _send_error(send, 413, too_large, close=True)
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body, delivered = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


class TimeLimit:
    """Answers 504 when a request (reading its body included) takes longer than `seconds`; the request's
    work is cancelled (a model call already running in a worker thread finishes on its own)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, watched), self.seconds)
        except TimeoutError:
            if not started:
                await _send_error(send, 504, f"The request took longer than {self.seconds:g} s (--timeout).", True)


def create_app(service: Service) -> FastAPI:
    """The FastAPI app answering for `service` (see the module docstring for the statuses)."""
    config = service.config
    try:
        version = metadata.version("alignsam")
    except metadata.PackageNotFoundError:
        version = "0"
    app = FastAPI(
        title="alignsam",
        version=version,
        description="ALIGN and Segment Anything as a service: classify, embed, tag, segment, label, find and "
        "search. Images travel as base64 (or data URLs); image sessions keep SAM's embedding so a click costs "
        "only the decoder. With `--token`, send `Authorization: Bearer <token>`.",
        docs_url=None,
        redoc_url=None,
    )
    bearer = HTTPBearer(auto_error=False, description="The server's --token (or ALIGNSAM_TOKEN).")

    # FastAPI's way of declaring a dependency (a default, not a call at import; `bearer` is local, so an
    # Annotated form would be a forward reference FastAPI cannot resolve under `from __future__ import annotations`)
    async def authorised(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if config.token is None:
            return
        given = creds.credentials if creds is not None else ""
        if not hmac.compare_digest(given.encode(), config.token.encode()):
            what = "a wrong" if creds is not None else "no"
            raise HTTPException(
                401, f"This server needs 'Authorization: Bearer <token>'; the request had {what} token."
            )

    api = APIRouter(dependencies=[Depends(authorised)], responses=ERRORS)
    _routes(api, service)
    app.include_router(api)
    _handlers(app)
    _pages(app)

    @app.get("/health", tags=["service"], summary="liveness, models, caches and batching figures")
    async def health() -> dict[str, Any]:
        return service.health()

    app.add_middleware(BodyLimit, max_body=config.max_body)
    app.add_middleware(TimeLimit, seconds=config.timeout_s)
    if config.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def _routes(api: APIRouter, service: Service) -> None:
    """The endpoints: each a pydantic body, one awaited service call, JSON out."""

    async def answer(work: Awaitable[Any]) -> JSONResponse:
        return JSONResponse(await service.call(work))  # type: ignore[arg-type]

    @api.post("/classify", tags=["align"], response_model=dict[str, Any], summary="zero-shot classification")
    async def classify(req: s.ClassifyRequest) -> JSONResponse:
        return await answer(service.aclassify(req))

    @api.post("/embed", tags=["align"], response_model=dict[str, Any], summary="image and text embeddings")
    async def embed(req: s.EmbedRequest) -> JSONResponse:
        return await answer(service.aembed(req))

    @api.post("/similarity", tags=["align"], response_model=dict[str, Any], summary="rows x columns cosines")
    async def similarity(req: s.SimilarityRequest) -> JSONResponse:
        return await answer(service.asimilarity(req))

    @api.post("/tag", tags=["align"], response_model=dict[str, Any], summary="tags from a vocabulary")
    async def tag(req: s.TagRequest) -> JSONResponse:
        return await answer(service.atag(req))

    @api.post("/segment", tags=["sam"], response_model=s.SA1B, summary="masks for prompts on a sent image")
    async def segment(req: s.SegmentRequest) -> JSONResponse:
        return await answer(service.asegment(req))

    @api.post("/masks", tags=["sam"], response_model=s.SA1B, summary="automatic masks of a sent image")
    async def masks(req: s.MasksRequest) -> JSONResponse:
        return await answer(service.amasks(req))

    upload_body = {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/ImageUpload"}},
        },
        "required": True,
    }

    @api.post(
        "/images",
        tags=["sessions"],
        status_code=201,
        response_model=s.ImageInfo,
        summary="upload an image: a session whose SAM embedding is computed in the background",
        openapi_extra={"requestBody": upload_body},
    )
    async def add_image(request: Request) -> JSONResponse:
        source, name = await _upload(request, service)
        return JSONResponse(await service.call(service.aadd_image(source, name)), status_code=201)

    @api.get("/images/{image_id}", tags=["sessions"], response_model=s.ImageInfo, summary="pending, ready or failed")
    async def image_info(image_id: str) -> JSONResponse:
        return await answer(service.aimage_info(image_id))

    @api.post("/images/{image_id}/segment", tags=["sessions"], response_model=s.SegmentResult,
              summary="masks from points, boxes, a scribble and an earlier mask")  # fmt: skip
    async def segment_image(image_id: str, req: s.SessionSegmentRequest) -> JSONResponse:
        return await answer(service.asegment_image(image_id, req))

    @api.post("/images/{image_id}/masks", tags=["sessions"], response_model=s.LabelledMasks,
              summary="automatic masks (the image's embedding reused)")  # fmt: skip
    async def image_masks(image_id: str, req: s.SessionMasksRequest) -> JSONResponse:
        return await answer(service.aimage_masks(image_id, req))

    @api.post("/images/{image_id}/label", tags=["sessions"], response_model=s.LabelledMasks,
              summary="every automatic mask with a class name")  # fmt: skip
    async def label_image(image_id: str, req: s.LabelRequest) -> JSONResponse:
        return await answer(service.alabel(image_id, req))

    @api.post("/images/{image_id}/find", tags=["sessions"], response_model=dict[str, Any],
              summary="the masks that match a text or a box of another image")  # fmt: skip
    async def find(image_id: str, req: s.FindRequest) -> JSONResponse:
        return await answer(service.afind(image_id, req))

    @api.post("/images/{image_id}/tags", tags=["sessions"], response_model=dict[str, Any], summary="tags")
    async def tag_image(image_id: str, req: s.SessionTagRequest) -> JSONResponse:
        return await answer(service.atag_image(image_id, req))

    @api.post("/search", tags=["search"], response_model=s.SearchResult, summary="text, image or composed query")
    async def search(req: s.SearchRequest) -> JSONResponse:
        return await answer(service.asearch(req))

    @api.get(
        "/thumbnail",
        tags=["search"],
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
        summary="a JPEG thumbnail of an image of the search index (only those)",
    )
    async def thumbnail(path: str = Query(max_length=4096), size: int = Query(192, ge=16, le=1024)) -> Response:
        data = await service.call(service.athumbnail(path, size))
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


async def _upload(request: Request, service: Service) -> tuple[Any, str]:
    """An upload from a multipart form (field `file`) or a JSON body (`ImageUpload`)."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=4, max_part_size=service.config.max_body)
        except Exception as err:  # the multipart parser's own errors: a malformed form
            raise InputError(f"The multipart form could not be read: {err}") from err
        file = form.get("file")
        if file is None or isinstance(file, str):
            raise InputError("'file': the form has no file field named 'file'.")
        data = await file.read()
        if not data:
            raise InputError("'file': the uploaded file is empty.")
        return Upload(data, (file.filename or "upload")[:200]), (file.filename or "upload")[:200]
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError as err:
        raise InputError(f"The body is not valid JSON ({err}).") from err
    req = s.ImageUpload.model_validate(body)  # a ValidationError is a 422 naming the field
    return image_source(req.image, service.guard, "'image'"), req.name or "upload"


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        errors = list(err.errors())
        if errors and errors[0].get("type") == "json_invalid":
            return error_response(400, f"The body is not valid JSON ({errors[0].get('ctx', {}).get('error', '')}).")
        field = ".".join(str(p) for p in errors[0].get("loc", ()) if p != "body") if errors else None
        return error_response(422, validation_message(errors), field or None)

    @app.exception_handler(ValidationError)
    async def invalid_model(request: Request, err: ValidationError) -> JSONResponse:
        errors = err.errors()
        field = ".".join(str(p) for p in errors[0].get("loc", ()))
        return error_response(422, validation_message(err), field or None)

    @app.exception_handler(AlignSamError)
    async def refused(request: Request, err: AlignSamError) -> JSONResponse:
        return error_response(status_of(err), str(err))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if err.status_code == 401 else {}
        detail = err.detail if isinstance(err.detail, str) else json.dumps(err.detail)
        if err.status_code == 404 and detail == "Not Found":
            detail = f"No endpoint {request.method} {request.url.path}; see /docs."
        return error_response(err.status_code, detail, **headers)

    @app.exception_handler(Exception)
    async def bug(request: Request, err: Exception) -> JSONResponse:  # a bug: say so, keep serving
        log.exception("error answering %s %s", request.method, request.url.path)
        return error_response(500, f"Internal error ({type(err).__name__}); the server goes on.")


def _pages(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    try:  # Swagger UI's files from a package (no CDN): /docs works offline
        import fastapi_offline
    except ImportError:
        return
    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="alignsam API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), bound before the server starts so its port is known."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets that say they are
    # TCP; without it every answer on a kept-alive connection waited ~40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def make_server(service: Service, log_level: str = "warning") -> Any:
    """A uvicorn server for `service` (run it with `server.run(sockets=[bind(host, port)])`)."""
    import uvicorn

    config = uvicorn.Config(
        create_app(service),
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
        lifespan="off",
    )
    return uvicorn.Server(config)
