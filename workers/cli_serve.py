"""``embedctl serve``: the HTTP API (``api/``) under uvicorn.

``api`` sits above ``workers`` in the layering; the CLI is the top-level entry point, so
this handler imports ``api.app`` lazily, inside the command, and no module of ``workers``
imports ``api`` at import time.
"""

from __future__ import annotations

import argparse


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.security import check_bind

    check_bind(args.host)  # no API keys: loopback only
    from api.app import create_app

    uvicorn.run(
        create_app(),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        proxy_headers=False,
        server_header=False,
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the OpenAI-compatible HTTP API (uvicorn)")
    p.add_argument("--host", default="127.0.0.1", help="without EMBEDDING_API_KEYS: loopback only")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    p.set_defaults(func=cmd_serve)
