"""`alignsam serve`: the tools as a web service with a web page (see `alignsam.serve`, docs/serve.md)."""

from __future__ import annotations

import argparse

from alignsam.cli import _common as c


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the tools over HTTP, with a web page to click, find, label and search",
        description="Load the models once and answer HTTP requests (FastAPI + uvicorn; needs alignsam[serve]): "
        "the page at /, the API described at /docs and /openapi.json. Binds to 127.0.0.1 by default; --token "
        "(or ALIGNSAM_TOKEN) requires a bearer token. Runs until interrupted.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=c.count(0, 65535), default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (default: $ALIGNSAM_TOKEN, else none)")
    p.add_argument(
        "--allow-paths",
        nargs="+",
        default=[],
        metavar="ROOT",
        help="also accept image paths on the server, only for files under these folders",
    )
    p.add_argument(
        "--index",
        metavar="DIR",
        help="an index folder (alignsam index DIR) or an embedding folder (alignsam embed --out DIR) for /search",
    )
    p.add_argument("--cors", nargs="+", default=[], metavar="ORIGIN", help="allow browser pages of these origins")
    p.add_argument("--max-body-mb", type=c.real(), default=64, help="largest request in MB (default 64)")
    p.add_argument("--timeout", type=c.real(), default=300, help="longest request in seconds (default 300)")
    p.add_argument("--cache-mb", type=c.real(), default=1024, help="memory for SAM image embeddings (default 1024)")
    p.add_argument("--sessions-mb", type=c.real(), default=1024, help="memory for image sessions (default 1024)")
    p.add_argument("--align-batch", type=c.count(), default=32, metavar="N", help="ALIGN request batch (32)")
    p.add_argument("--align-wait-ms", type=c.real(), default=10, help="ALIGN batch wait after its first item (10)")
    p.add_argument("--sam-batch", type=c.count(), default=8, metavar="N", help="SAM decoder batch (8)")
    p.add_argument("--sam-wait-ms", type=c.real(), default=0, help="SAM batch wait (0: what is queued)")
    p.add_argument(
        "--prompt-threads", type=c.count(), default=1, metavar="N", help="threads of SAM's prompt decoder (1)"
    )
    p.add_argument("--text-cache-mb", type=c.real(), default=256, help="memory for text embeddings (0: off)")
    p.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"],
        help="what the server logs on stderr (default warning)",
    )  # fmt: skip
    c.add_align_args(p)
    c.add_sam_args(p)
    c.add_runtime_args(p)
    p.set_defaults(run=run, quiet=False)


def run(args: argparse.Namespace) -> int:
    import sys

    from alignsam.serve import ServeConfig, Service
    from alignsam.serve.app import bind, make_server

    c.setup(args)
    config = ServeConfig(
        model=args.model,
        sam_model=args.sam_model,
        device=c.device(args),
        backend=args.backend,
        batch_size=args.batch_size,
        workers=args.workers,
        allow_paths=tuple(args.allow_paths),
        index=args.index,
        token=args.token or ServeConfig.token_from_env(),
        cors=tuple(args.cors),
        max_body=int(args.max_body_mb * 1024 * 1024),
        timeout_s=args.timeout,
        cache_mb=args.cache_mb,
        sessions_mb=args.sessions_mb,
        align_batch=args.align_batch,
        align_wait_ms=args.align_wait_ms,
        sam_batch=args.sam_batch,
        sam_wait_ms=args.sam_wait_ms,
        text_cache_mb=args.text_cache_mb,
        prompt_threads=args.prompt_threads,
    )
    service = Service(config=config, fast=c.fast_path(args))
    service.warm_up()
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    where = f"http://{host}:{port}/"
    auth = " (bearer token required)" if config.token else ""
    print(f"alignsam serve: listening on {where}{auth}; API at {where}docs", file=sys.stderr, flush=True)
    try:
        make_server(service, args.log_level).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        service.close()
        sock.close()
    return 0
