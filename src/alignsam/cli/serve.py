"""`alignsam serve`: the tools as an HTTP JSON service (see `alignsam.service`)."""

from __future__ import annotations

import argparse

from alignsam.cli import _common as c


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the tools over HTTP (JSON)",
        description="Load the models once and answer JSON requests: POST /classify, /embed, /similarity, /tag, "
        "/segment, /masks; GET /health. Images travel as base64 strings. Binds to 127.0.0.1 by default (there "
        "is no authentication). Runs until interrupted.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--allow-paths", action="store_true", help="also accept image paths on the server")
    p.add_argument("--max-body-mb", type=float, default=64, help="largest request in MB (default 64)")
    c.add_align_args(p)
    c.add_sam_args(p)
    c.add_runtime_args(p)
    p.set_defaults(run=run, quiet=False)


def run(args: argparse.Namespace) -> int:
    import sys

    from alignsam.service import Service, make_server

    c.setup(args)
    service = Service(
        args.model,
        args.sam_model,
        device=c.device(args),
        fast=c.fast_path(args),
        backend=args.backend,
        batch_size=args.batch_size,
        allow_paths=args.allow_paths,
    )
    server = make_server(service, args.host, args.port, int(args.max_body_mb * 1024 * 1024))
    print(f"alignsam serve: listening on http://{args.host}:{server.server_port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
