"""``embedctl db upgrade|current``, and :func:`ensure_schema` for the commands that read the database.

Both are about migrations, so they live together: ``db upgrade`` migrates the database it is
told to, ``ensure_schema`` migrates only the embedded SQLite default on first use.
"""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="database migrations")
    p.add_argument("db_command", choices=("upgrade", "current"))
    p.add_argument("--url", default=None, help="database URL (default: EMBEDDING_DATABASE_URL)")
    p.add_argument("--revision", default="head")
    p.set_defaults(func=cmd_db)


def cmd_db(args: argparse.Namespace) -> int:
    from db import migrate

    if args.db_command == "upgrade":
        migrate.upgrade(args.url, revision=args.revision)
        print(f"database at revision {migrate.current(args.url)}")
    else:
        print(migrate.current(args.url) or "(no revision: run `embedctl db upgrade`)")
    return 0


def ensure_schema() -> None:
    """The embedded SQLite default is migrated on first use; a server database is not touched."""
    from core.config import get_settings

    if get_settings().database_url.startswith("sqlite"):
        from db import migrate

        migrate.upgrade(get_settings().database_url)
