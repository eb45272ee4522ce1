"""``embedctl report --out DIR``: write the dashboard (:mod:`workers.dashboard`) from the database."""

from __future__ import annotations

import argparse
from pathlib import Path

from workers.cli.db import ensure_schema


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write PNG charts and an index.html from the database")
    p.add_argument("--out", required=True)
    p.add_argument("--jobs", type=int, default=10, help="latest N fine-tune jobs")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from workers.dashboard import write_report

    ensure_schema()
    print(write_report(Path(args.out), jobs=args.jobs))
    return 0
