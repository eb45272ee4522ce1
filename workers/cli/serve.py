"""``embedctl serve``: the HTTP API (``api/``), started as ``python -m api``.

``api`` sits above ``workers`` in the layering, so this command imports nothing of it: it
replaces this process with the API's own entry point, which checks the bind rule (no API
keys: loopback only) and runs uvicorn.
"""

from __future__ import annotations

import argparse
import os
import sys

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the OpenAI-compatible HTTP API (uvicorn)")
    add_serve_options(p)
    p.set_defaults(func=cmd_serve)


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    """The serve options, for ``embedctl serve`` and ``python -m api`` alike (one definition,
    so the command that execs the API and the API's own parser cannot drift apart)."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="without EMBEDDING_API_KEYS: loopback only"
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)


def cmd_serve(args: argparse.Namespace) -> int:
    argv = [sys.executable, "-m", "api", "--host", args.host, "--port", str(args.port)]
    os.execv(sys.executable, [*argv, "--log-level", args.log_level])
    return 0  # not reached: the API process took this one's place
