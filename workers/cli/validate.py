"""``embedctl validate``: run the validation chord, print the report, exit 0 only on a pass.

With a broker configured the chord goes to the workers and the CLI waits; without one, an
embedded workers in this process run the very same chord on the memory transport.
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
    p.add_argument(
        "--worker-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for a worker that is starting (announced on the broker) to "
        "consume the queues; with none starting, validate fails after 10 s",
    )
    p.add_argument("--json", dest="json_path", default=None, help="write the results as JSON")
    p.add_argument("--junit", default=None, help="write JUnit XML")
    p.add_argument("--trigger", choices=("cli", "ci", "api"), default=None)
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    from core.config import get_settings
    from workers.reports.render import render_report

    settings = get_settings()
    models = [m.strip() for m in (args.models or settings.default_model).split(",") if m.strip()]
    trigger = args.trigger or ("ci" if os.environ.get("CI") else "cli")
    started = time.perf_counter()
    try:
        summary = _run(args, models, trigger)
    except Exception as exc:  # no worker, broker or database away: CI must see an error
        _write(
            args,
            {
                "run_id": None,
                "status": "error",
                "verdict": f"error: {type(exc).__name__}: {exc}",
                "trigger": trigger,
                "models": models,
                "checks": [],
            },
        )
        raise
    summary["wall_time_s"] = time.perf_counter() - started
    print(render_report(summary))
    _write(args, summary)
    every_criterion_passed = summary["status"] == "passed" and all(
        c["status"] == "passed" and all(k["passed"] for k in c["criteria"])
        for c in summary["checks"]
    )
    return 0 if every_criterion_passed else 1


def _run(args: argparse.Namespace, models: list[str], trigger: str) -> dict:
    """Check that workers consume the queues, run the chord, wait for the verdict.

    Past the deadline the run is abandoned: ended as ``error`` and its tasks revoked.
    """
    from core.config import get_settings
    from workers.app import VALIDATION_THREADS, app, embedded_worker, is_embedded
    from workers.client import abandon_validation, start_validation, validation_tasks
    from workers.jobs.validation_run import read_run

    ensure_schema()
    embedded = is_embedded(get_settings())
    with embedded_worker(threads=VALIDATION_THREADS) if embedded else nullcontext():
        if not embedded:
            from workers.lifeline.worker_check import queues_of, require_consumers

            require_consumers(app, queues_of(validation_tasks(args.check)), args.worker_timeout)
        run_id, result = start_validation(models, trigger=trigger, checks=args.check)
        print(
            f"validation run {run_id}: {', '.join(args.check or CHECK_NAMES)} on {', '.join(models)}",
            file=sys.stderr,
        )
        try:
            # A polling backend (the embedded one) is asked every 50 ms, not every 0.5 s.
            result.get(
                timeout=args.timeout,
                propagate=False,
                disable_sync_subtasks=False,
                interval=0.05,
            )
        except Exception as exc:  # the deadline: a hung run is ended, never left running
            abandon_validation(
                run_id, result, f"deadline of {args.timeout:g} s passed ({type(exc).__name__})"
            )
        finally:
            _forget_pending(result)
        _wait_for_verdict(run_id, read_run)
    return read_run(run_id)


def _forget_pending(result) -> None:
    """Stop listening for results nobody will read, while the interpreter is still whole.

    Sending the chord registers its header's results with the Redis result consumer; after a
    timed-out run they are still there at exit, and their ``__del__`` then unsubscribes on
    a half torn-down interpreter: "Exception ignored in AsyncResult.__del__". The CLI is done
    with every result it waited for, so it lets go of all of them here. (Celery offers no
    public way to list them: ``_pending_results`` is the async backends' registry.)
    """
    backend = result.backend
    for mapping in getattr(backend, "_pending_results", ()):
        for waiters in list(mapping.values()):
            for pending in list(waiters.values()):
                backend.remove_pending_result(pending)


def _write(args: argparse.Namespace, summary: dict) -> None:
    from workers.reports.render import render_junit

    if args.json_path:
        Path(args.json_path).write_text(json.dumps(summary, indent=2))
    if args.junit:
        Path(args.junit).write_text(render_junit(summary))


def _wait_for_verdict(run_id: str, fetch, seconds: float = 10.0) -> None:
    """The errback may land a moment after the chord result; wait briefly for a final status."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and fetch(run_id)["status"] == "running":
        time.sleep(0.2)
