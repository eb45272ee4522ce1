"""How a validation run is recorded, from its row to its verdict, and read back.

A run is one ``validation_runs`` row (:func:`create_run`, status ``running``). Each check
task writes its ``validation_checks`` row as it finishes (:func:`record_check`) and returns
its result instead of raising, so the chord's callback always runs and sets the verdict
(:func:`summarize_run`). If a check *task* dies (not a failed criterion) the chord's
errback ends the run as ``error`` (:func:`error_run`). :func:`read_run` gives the run with
its checks in the shape ``workers.reports.render`` renders.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from db import repo
from db.models import DEFAULT_PROJECT_ID
from db.session import session_scope
from embedding.validation import CheckResult
from workers.lifeline.leases import lease


def default_check_models(models: Sequence[str]) -> dict[str, str]:
    """Which model each check runs on: the combined profile for quality when both real
    models are asked for (the seed checks 2560-d vectors), else the first model."""
    first = models[0]
    quality = "combined" if {"qodo", "jina_v3"} <= set(models) else first
    return {"inference_quality": quality, "convergence": first, "benchmark": first}


def create_run(models: Sequence[str], trigger: str, project_id: str = DEFAULT_PROJECT_ID) -> str:
    """Record a new run (status ``running``) of ``project_id``; returns its id."""
    with session_scope() as session:
        run = repo.validations.create_validation_run(
            session, trigger=trigger, models=models, project_id=project_id
        )
        return str(run.id)


def is_open(run_id: str) -> bool:
    """Whether the run still waits for its checks (a check of an ended run is not run)."""
    with session_scope() as session:
        run = repo.validations.get_validation_run(session, run_id, scope=repo.ALL_PROJECTS)
        return run is not None and run.status == "running"


# The chord's check tasks: each takes the run id as its first argument.
CHECK_TASKS = frozenset(
    {
        "embedding.check_model_loading",
        "embedding.check_inference_quality",
        "embedding.check_convergence",
        "embedding.run_benchmark",
    }
)


def beat_on_receipt(sender: Any = None, request: Any = None, **_: Any) -> None:
    """``task_received`` (the worker's main process, before the message is acked): a check
    of the run is about to run, so its lease is fresh from here. Without it, the moment
    between the early ack and the check's own lease thread (a pool child starting the task
    on a loaded machine) showed the run with nothing running and nothing queued, and the
    lifeline ended a live run."""
    if request is None or getattr(request, "name", None) not in CHECK_TASKS:
        return
    args = getattr(request, "args", None) or ()
    if not args:
        return
    try:
        with session_scope() as session:
            repo.validations.beat_validation_run(session, str(args[0]))
    except Exception:  # best effort: the check's own lease follows
        return


def run_check(run_id: str, name: str, check: Callable[[], CheckResult]) -> dict[str, Any]:
    """Run one check of ``run_id`` and record it, unless the run has already ended (timed
    out, errored, abandoned by its caller): a late check then does nothing and says so."""
    if not is_open(run_id):
        return CheckResult(
            name=name, status="error", reason=f"not run: validation run {run_id} had already ended"
        ).to_dict()
    beat = functools.partial(repo.validations.beat_validation_run, run_id=run_id)
    with lease(f"validation run {run_id}", beat):  # the lifeline knows a check is running
        return record_check(run_id, check())


def record_check(run_id: str, result: CheckResult) -> dict[str, Any]:
    """Write one check's row; returns the result as the JSON the chord passes on."""
    data = result.to_dict()
    with session_scope() as session:
        repo.validations.record_validation_check(
            session,
            run_id,
            name=result.name,
            status=result.status,
            figures={**data["figures"], "reason": result.reason},
            criteria=data["criteria"],
            duration_s=result.duration_s,
        )
    return data


def summarize_run(run_id: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Set the run's verdict from every check's result.

    ``passed`` only if every check passed; ``error`` if any check could not run; else
    ``failed``. The verdict names each check that did not pass, with its status.
    """
    checks = [CheckResult.from_dict(r) for r in results]
    failed = [c.name for c in checks if c.status != "passed"]
    status = (
        "passed"
        if not failed
        else ("error" if any(c.status == "error" for c in checks) else "failed")
    )
    verdict = (
        f"all {len(checks)} checks passed"
        if not failed
        else f"{len(failed)} of {len(checks)} checks did not pass: "
        + ", ".join(f"{c.name} ({c.status})" for c in checks if c.status != "passed")
    )
    with session_scope() as session:
        repo.validations.finish_validation_run(session, run_id, status, verdict)
    return {"run_id": str(run_id), "status": status, "verdict": verdict, "checks": results}


def error_run(run_id: str, reason: str) -> None:
    """End the run as ``error``: a check task died, or the run timed out."""
    with session_scope() as session:
        repo.validations.finish_validation_run(
            session, run_id, "error", f"error: {reason}", error=reason
        )


def read_run(run_id: str, scope: repo.Scope = repo.ALL_PROJECTS) -> dict[str, Any]:
    """A run with its checks, in the shape the report renders (``LookupError`` for a run
    unknown in ``scope``)."""
    with session_scope() as session:
        run = repo.validations.get_validation_run(session, run_id, scope=scope)
        if run is None:
            raise LookupError(f"no validation run {run_id}")
        checks = []
        for check in sorted(run.checks, key=lambda c: c.created_at):
            figures = dict(check.figures or {})
            reason = figures.pop("reason", None)
            checks.append(
                {
                    "name": check.name,
                    "status": check.status,
                    "figures": figures,
                    "criteria": check.criteria or [],
                    "duration_s": check.duration_s,
                    "reason": reason,
                }
            )
        return {
            "run_id": str(run.id),
            "status": run.status,
            "verdict": run.verdict,
            "trigger": run.trigger,
            "models": run.models,
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "checks": checks,
        }
