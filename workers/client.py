"""What other services call: submit fine-tune jobs, follow them, cancel them, validate.

Submission is an outbox: the job row is committed first (``sent_at`` empty), then the
Celery message is sent and the row marked sent. If the broker is down the job stays in
the outbox and :func:`relay_unsent` (run by ``embedctl jobs relay`` or the beat task
``embedding.relay_outbox``) sends it once the broker is back. Nothing is lost between
"recorded" and "queued", and the same idempotency key always gives the same job.
"""

from __future__ import annotations

import logging
from typing import Any

from db import repo
from db.session import session_scope
from workers.schemas import FinetuneRequest, parse

log = logging.getLogger(__name__)


def submit_finetune(
    model: str,
    triplets: list[dict[str, str]] | list[tuple[str, str, str]] | None = None,
    pairs: list[dict[str, str]] | list[tuple[str, str]] | None = None,
    dataset: str | None = None,
    epochs: int = 3,
    loss: str = "triplet",
    lr: float = 2e-5,
    batch_size: int = 16,
    idempotency_key: str | None = None,
    **extra: Any,
) -> str:
    """Validate, record and enqueue a fine-tune job; returns its id (a UUID string)."""
    payload: dict[str, Any] = {
        "model": model,
        "epochs": epochs,
        "loss": loss,
        "lr": lr,
        "batch_size": batch_size,
        **extra,
    }
    if triplets is not None:
        payload["triplets"] = [_row(t, ("anchor", "positive", "negative")) for t in triplets]
    if pairs is not None:
        payload["pairs"] = [_row(p, ("anchor", "positive")) for p in pairs]
    if dataset is not None:
        payload["dataset"] = str(dataset)
    if idempotency_key is not None:
        payload["idempotency_key"] = idempotency_key
    return submit_request(parse(FinetuneRequest, payload))


def _row(row: Any, names: tuple[str, ...]) -> Any:
    if isinstance(row, list | tuple) and len(row) == len(names):
        return dict(zip(names, row, strict=True))
    return row  # the schema names what is wrong with it


def submit_request(request: FinetuneRequest) -> str:
    """Record a validated request in the outbox, then try to send it.

    An unknown model or a model path outside the allowed roots is refused here, before
    anything is recorded.
    """
    from workers.jobs import checked_model_name

    checked_model_name(request.model)
    params = request.model_dump(exclude={"model", "idempotency_key"}, exclude_none=True)
    with session_scope() as session:
        job = repo.create_job(
            session, request.model, params, idempotency_key=request.idempotency_key
        )
        job_id, already_sent = str(job.id), job.sent_at is not None
    if not already_sent:
        _send(job_id)
    return job_id


def _send(job_id: str) -> bool:
    """Send one job's message; on a broker error leave it in the outbox for the relay."""
    from workers.app import app

    try:
        app.send_task("embedding.finetune", args=[job_id], task_id=job_id, queue="gpu")
    except Exception as exc:
        log.warning(
            "job %s stays in the outbox: broker unavailable (%s)", job_id, type(exc).__name__
        )
        return False
    with session_scope() as session:
        repo.mark_sent(session, job_id)
    return True


def relay_unsent(older_than_s: float = 0.0) -> int:
    """Send every job still in the outbox; returns how many were sent."""
    with session_scope() as session:
        pending = [str(job.id) for job in repo.unsent_jobs(session, older_than_s=older_than_s)]
    return sum(_send(job_id) for job_id in pending)


def job_status(job_id: str) -> dict[str, Any]:
    """The job with its epochs, as plain JSON types."""
    with session_scope() as session:
        job = repo.get_job(session, job_id)
        if job is None:
            raise LookupError(f"no fine-tune job {job_id}")
        return job_to_dict(job)


def job_to_dict(job: Any) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": str(job.id),
        "model": job.model,
        "status": job.status,
        "error": job.error,
        "attempts": job.attempts,
        "worker": job.worker,
        "params": {k: v for k, v in job.params.items() if k not in ("triplets", "pairs")},
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "sent_at": iso(job.sent_at),
        "model_version_id": job.model_version_id,
        "epochs": [
            {
                "epoch": e.epoch,
                "train_loss": e.train_loss,
                "lr": e.lr,
                "duration_s": e.duration_s,
                "samples_per_s": e.samples_per_s,
                "eval": e.eval,
            }
            for e in sorted(job.epochs, key=lambda e: e.epoch)
        ],
    }


def list_jobs(status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    with session_scope() as session:
        return [job_to_dict(job) for job in repo.list_jobs(session, status=status, limit=limit)]


def cancel_job(job_id: str) -> dict[str, Any]:
    """Revoke the message and record ``cancelled``; a running job stops at its next batch."""
    from workers.app import app

    with session_scope() as session:
        job = repo.get_job(session, job_id)
        if job is None:
            raise LookupError(f"no fine-tune job {job_id}")
        status = job.status
        repo.request_cancel(session, job_id)
        if status == "queued":
            repo.finish_job(session, job_id, "cancelled", error="cancelled before it started")
    try:
        app.control.revoke(str(job_id))
    except Exception as exc:  # the database flag still stops it
        log.warning("could not broadcast revoke for %s: %s", job_id, type(exc).__name__)
    return job_status(job_id)


# ------------------------------------------------------------------ validation
def default_check_models(models: list[str]) -> dict[str, str]:
    """Which model each check runs on: the combined profile for quality when both real
    models are asked for (the seed checks 2560-d vectors), else the first model."""
    first = models[0]
    quality = "combined" if {"qodo", "jina_v3"} <= set(models) else first
    return {"inference_quality": quality, "convergence": first, "benchmark": first}


def start_validation(
    models: list[str], trigger: str = "api", checks: list[str] | None = None
) -> tuple[str, Any]:
    """Record a validation run and send its chord; returns (run id, AsyncResult of the chord).

    ``chord([check_model_loading, check_inference_quality, check_convergence, run_benchmark],
    summarize_validation)``: each check writes its row and returns its result instead of
    raising, so the callback always runs; the errback ends the run as ``error`` if a check
    task itself dies.
    """
    from celery import chord

    from embedding.validation import CHECK_NAMES
    from workers import tasks

    wanted = list(checks or CHECK_NAMES)
    unknown = set(wanted) - set(CHECK_NAMES)
    if unknown:
        raise ValueError(f"unknown check(s) {sorted(unknown)}; checks: {', '.join(CHECK_NAMES)}")
    with session_scope() as session:
        run = repo.create_validation_run(session, trigger=trigger, models=models)
        run_id = str(run.id)
    per_check = default_check_models(models)
    signatures = {
        "model_loading": tasks.check_model_loading.si(run_id, models),
        "inference_quality": tasks.check_inference_quality.si(
            run_id, per_check["inference_quality"]
        ),
        "convergence": tasks.check_convergence.si(run_id, per_check["convergence"]),
        "benchmark": tasks.run_benchmark.si(run_id, per_check["benchmark"]),
    }
    body = tasks.summarize_validation.s(run_id).on_error(tasks.validation_failed.s(run_id=run_id))
    result = chord([signatures[name] for name in wanted])(body)
    return run_id, result


def validation_run(run_id: str) -> dict[str, Any]:
    """A run with its checks, in the shape the report renders."""
    with session_scope() as session:
        run = repo.get_validation_run(session, run_id)
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
