"""``embedctl validate``: run the validation chord, print the report, exit 0 only on a pass.

With a broker configured the chord goes to the workers and the CLI waits; without one, an
embedded worker in this process runs the very same chord on the memory transport.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from embedding.validation import CHECK_NAMES
from workers.cli.db import ensure_schema


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="run the validation suite (a Celery chord) and report")
    p.add_argument(
        "--models", default=None, help="comma-separated specs (default: the default model)"
    )
    p.add_argument(
        "--check", action="append", choices=CHECK_NAMES, help="run only this check (repeatable)"
    )
    p.add_argument(
        "--timeout", type=float, default=600.0, help="deadline for the whole suite, seconds"
    )
    p.add_argument("--json", dest="json_path", default=None, help="write the results as JSON")
    p.add_argument("--junit", default=None, help="write JUnit XML")
    p.add_argument("--trigger", choices=("cli", "ci", "api"), default=None)
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    from embedding.config import get_settings
    from workers.app import embedded_worker, is_embedded
    from workers.client import start_validation
    from workers.report import render_junit, render_report
    from workers.validation_run import error_run, read_run

    settings = get_settings()
    models = [m.strip() for m in (args.models or settings.default_model).split(",") if m.strip()]
    trigger = args.trigger or ("ci" if os.environ.get("CI") else "cli")
    ensure_schema()
    started = time.perf_counter()
    with embedded_worker() if is_embedded(settings) else nullcontext():
        run_id, result = start_validation(models, trigger=trigger, checks=args.check)
        print(
            f"validation run {run_id}: {', '.join(args.check or CHECK_NAMES)} on {', '.join(models)}",
            file=sys.stderr,
        )
        try:
            result.get(timeout=args.timeout, propagate=False, disable_sync_subtasks=False)
        except Exception as exc:  # the deadline: a hung run is ended, never left running
            error_run(run_id, f"deadline of {args.timeout:g} s passed ({type(exc).__name__})")
        _wait_for_verdict(run_id, read_run)
    summary = read_run(run_id)
    summary["wall_time_s"] = time.perf_counter() - started
    print(render_report(summary))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(summary, indent=2))
    if args.junit:
        Path(args.junit).write_text(render_junit(summary))
    every_criterion_passed = summary["status"] == "passed" and all(
        c["status"] == "passed" and all(k["passed"] for k in c["criteria"])
        for c in summary["checks"]
    )
    return 0 if every_criterion_passed else 1


def _wait_for_verdict(run_id: str, fetch, seconds: float = 10.0) -> None:
    """The errback may land a moment after the chord result; wait briefly for a final status."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and fetch(run_id)["status"] == "running":
        time.sleep(0.2)
