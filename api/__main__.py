"""``python -m api``: serve the HTTP API under uvicorn (what ``embedctl serve`` runs).

The bind rule lives here, with the server: without API keys (``EMBEDDING_API_KEYS``) the
service answers on loopback only, so an open port never serves without a key.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from workers.cli.serve import add_serve_options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedctl serve", description="Serve the HTTP API.")
    add_serve_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from api.auth import keys_issued
    from api.security import check_bind

    try:
        check_bind(args.host, keys_issued=keys_issued())
    except PermissionError as exc:
        print(f"embedctl serve: error: {exc}", file=sys.stderr)
        return 1
    import uvicorn

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


if __name__ == "__main__":
    sys.exit(main())
