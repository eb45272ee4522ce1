"""``embedctl report --out DIR``: print the recent A/B evaluations and write the dashboard
(:mod:`workers.reports.dashboard`) from the database."""

from __future__ import annotations

import argparse
from pathlib import Path

from workers.cli.db import ensure_schema


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="print recent A/B evaluations; write PNG charts and an index.html from the database",
    )
    p.add_argument("--out", required=True)
    p.add_argument("--jobs", type=int, default=10, help="latest N fine-tune jobs")
    p.add_argument("--evaluations", type=int, default=10, help="latest N A/B evaluations")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from db.repo import ALL_PROJECTS
    from workers.jobs.evaluation_run import recent
    from workers.reports.dashboard import write_report
    from workers.reports.render import render_evaluations

    ensure_schema()
    print(render_evaluations(recent(args.evaluations, scope=ALL_PROJECTS)))
    print(write_report(Path(args.out), jobs=args.jobs, evaluations=args.evaluations))
    return 0
