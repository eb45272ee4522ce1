"""The public Python client: what other services call to fine-tune, follow, cancel, validate
and compare.

Submitting goes through the outbox (:mod:`workers.jobs.outbox`): the job is recorded first, then
sent. Validation records a run (:mod:`workers.jobs.validation_run`) and sends its chord. An A/B
evaluation records its row (:mod:`workers.jobs.evaluation_run`) and sends ``embedding.evaluation.compare``.
Every message is sent by task name, so a client never imports the task definitions.
"""

from __future__ import annotations

import logging
from typing import Any

from db import repo
from db.models import DEFAULT_PROJECT_ID
from db.session import session_scope
from workers.jobs import evaluation_run, validation_run
from workers.jobs.outbox import submit_request
from workers.lifeline.duties import cancel_orphaned
from workers.schemas import CompareRequest, FinetuneRequest, parse
from workers.serving.model_names import job_fine_tuned_id
from workers.tenancy import project_id_of

log = logging.getLogger(__name__)


def submit_finetune(
    model: str,
    triplets: list[dict[str, str]] | list[tuple[str, str, str]] | None = None,
    pairs: list[dict[str, str]] | list[tuple[str, str]] | None = None,
    dataset: str | None = None,
    idempotency_key: str | None = None,
    validation: list[dict[str, str]] | list[tuple[str, ...]] | None = None,
    validation_dataset: str | None = None,
    **hyperparameters: Any,
) -> str:
    """Validate, record and enqueue a fine-tune job; returns its id (a UUID string).

    ``validation`` (rows: triplets or pairs) or ``validation_dataset`` (a JSONL path under
    the roots): the validation set that picks the best epoch and drives early stopping.
    ``hyperparameters`` (``epochs=``, ``lr=``, ``loss=``, ``batch_size=``, ``margin=``,
    ``seed=``, ``mini_batch_size=``, ``matryoshka=``, ``early_stopping_patience=``,
    ``select_best_epoch=``): those not given take
    the defaults of :mod:`embedding.training.hyperparameters`.
    ``n_devices=`` (k or ``"all"``) trains on k devices of one worker host as a
    data-parallel group. ``suffix=`` names the model version ``<model>-<suffix>``; ``project=`` (a name or a
    ``proj_`` id) the project the job belongs to (default: ``default``). Raises ``PayloadError`` for a
    malformed request, ``UnknownModel`` / ``PathNotAllowed`` / ``DatasetNotFound`` for a model
    or dataset the workers may not use, and :class:`~workers.jobs.idempotency.IdempotencyConflict`
    for a key already used with another request (the same request with the same key returns
    the same job).
    """
    payload: dict[str, Any] = {"model": model, **hyperparameters}
    if triplets is not None:
        payload["triplets"] = [_row(t, ("anchor", "positive", "negative")) for t in triplets]
    if pairs is not None:
        payload["pairs"] = [_row(p, ("anchor", "positive")) for p in pairs]
    if dataset is not None:
        payload["dataset"] = str(dataset)
    if validation is not None:
        triplets = bool(validation) and _width(validation[0]) == 3
        names = ("anchor", "positive", "negative") if triplets else ("anchor", "positive")
        kind = "validation_triplets" if triplets else "validation_pairs"
        payload[kind] = [_row(r, names) for r in validation]
    if validation_dataset is not None:
        payload["validation_dataset"] = str(validation_dataset)
    if idempotency_key is not None:
        payload["idempotency_key"] = idempotency_key
    return submit_request(parse(FinetuneRequest, payload)).job_id


def _width(row: Any) -> int:
    """3 for a triplet (a dict with a negative, or three texts), else 2."""
    if isinstance(row, dict):
        return 3 if "negative" in row else 2
    return len(row) if isinstance(row, list | tuple) else 2


def _row(row: Any, names: tuple[str, ...]) -> Any:
    if isinstance(row, list | tuple) and len(row) == len(names):
        return dict(zip(names, row, strict=True))
    return row  # the schema names what is wrong with it


def job_status(job_id: str, scope: repo.Scope = repo.ALL_PROJECTS) -> dict[str, Any]:
    """The job with its epochs and its timeline (``events``, oldest first), as JSON types.
    (This client runs inside the company's services, beside the broker: it sees every
    project unless told one; the HTTP API's keys are the walls between teams.)"""
    with session_scope() as session:
        job = repo.jobs.get_job(session, job_id, scope=scope)
        if job is None:
            raise LookupError(f"no fine-tune job {job_id}")
        events = repo.jobs.job_events(session, job_id, scope=scope)
        return {**job_to_dict(job), "events": event_dicts(events)}


def event_dicts(events: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "at": e.at.isoformat(),
            "event": e.kind,
            "message": e.message,
            "worker": e.worker,
            **({"data": e.data} if e.data else {}),
        }
        for e in events
    ]


# Inline rows stay out of a job's JSON: they can be thousands of texts.
INLINE_ROWS = ("triplets", "pairs", "validation_triplets", "validation_pairs")


def job_to_dict(job: Any) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": str(job.id),
        "project_id": job.project_id,
        "model": job.model,
        "status": job.status,
        "error": job.error,
        "attempts": job.attempts,
        "worker": job.worker,
        "params": {k: v for k, v in job.params.items() if k not in INLINE_ROWS},
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "sent_at": iso(job.sent_at),
        "model_version_id": job.model_version_id,
        # How to embed with the job's model (any of the names workers.serving.model_names takes).
        "model_version": f"{job.model_version.name}:{job.model_version.version}"
        if job.model_version is not None
        else None,
        "fine_tuned_model": job_fine_tuned_id(job) if job.model_version is not None else None,
        # What training concluded (null until it succeeds): the eval set, the best epoch by
        # the validation metric, the epoch whose weights are the version, early stop.
        "result": job.result,
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


def list_jobs(
    status: str | None = None, limit: int = 50, scope: repo.Scope = repo.ALL_PROJECTS
) -> list[dict[str, Any]]:
    with session_scope() as session:
        jobs = repo.jobs.list_jobs(session, status=status, limit=limit, scope=scope)
        return [job_to_dict(job) for job in jobs]


def cancel_job(
    job_id: str, scope: repo.Scope = repo.ALL_PROJECTS, actor: str | None = None
) -> dict[str, Any]:
    """Revoke the message and record ``cancelled``: a queued job at once, a running one
    within seconds (its worker stops it in any phase), a running one whose worker is gone
    (its lease expired) at once. ``actor``: the key id that asked, kept in the job's events."""
    from workers.app import app

    with session_scope() as session:
        job = repo.jobs.get_job(session, job_id, scope=scope)
        if job is None:
            raise LookupError(f"no fine-tune job {job_id}")
        status = job.status
        repo.jobs.request_cancel(session, job_id, actor=actor)
        if status == "queued":
            repo.jobs.finish_job(session, job_id, "cancelled", error="cancelled before it started")
    if status == "running":
        cancel_orphaned(job_id)  # its worker is gone: nobody else would read the flag
    try:
        app.control.revoke(str(job_id))
    except Exception as exc:  # the database flag still stops it
        log.warning("could not broadcast revoke for %s: %s", job_id, type(exc).__name__)
    return job_status(job_id, scope)


# ------------------------------------------------------------------ validation
CHECK_TASKS = {
    "model_loading": "embedding.check_model_loading",
    "inference_quality": "embedding.check_inference_quality",
    "convergence": "embedding.check_convergence",
    "benchmark": "embedding.run_benchmark",
}
SUMMARY_TASK = "embedding.summarize_validation"
ERRBACK_TASK = "embedding.validation_failed"


def start_validation(
    models: list[str],
    trigger: str = "api",
    checks: list[str] | None = None,
    project_id: str = DEFAULT_PROJECT_ID,
) -> tuple[str, Any]:
    """Record a validation run (of ``project_id``) and send its chord; returns (run id,
    AsyncResult of the chord). The checks read version names in the default project: a
    caller of another project passes what its names resolved to (the API does).

    ``chord([check_model_loading, check_inference_quality, check_convergence, run_benchmark],
    summarize_validation)``: each check writes its row and returns its result instead of
    raising, so the callback always runs; the errback ends the run as ``error`` if a check
    task itself dies. The signatures are built by task name (the same names and arguments
    the tasks are registered with), so the client does not import the tasks.
    """
    from celery import chord

    from embedding.validation import CHECK_NAMES
    from workers.app import app

    wanted = list(checks or CHECK_NAMES)
    unknown = set(wanted) - set(CHECK_NAMES)
    if unknown:
        raise ValueError(f"unknown check(s) {sorted(unknown)}; checks: {', '.join(CHECK_NAMES)}")
    run_id = validation_run.create_run(models, trigger=trigger, project_id=project_id)
    per_check = validation_run.default_check_models(models)

    model_args = {"model_loading": models, **per_check}
    signatures = [
        app.signature(CHECK_TASKS[name], args=(run_id, model_args[name]), immutable=True)
        for name in wanted
    ]
    body = app.signature(SUMMARY_TASK, args=(run_id,)).on_error(
        app.signature(ERRBACK_TASK, kwargs={"run_id": run_id})
    )
    result = chord(signatures)(body)
    return run_id, result


def validation_tasks(checks: list[str] | None = None) -> list[str]:
    """The task names a validation run of ``checks`` (default: all) sends."""
    from embedding.validation import CHECK_NAMES

    return [CHECK_TASKS[name] for name in checks or CHECK_NAMES] + [SUMMARY_TASK, ERRBACK_TASK]


def abandon_validation(run_id: str, result: Any, reason: str) -> None:
    """End a run its caller stopped waiting for: ``error`` with ``reason``, and its tasks
    revoked so they do not hold workers for a result nobody reads. A worker that did not
    hear the revoke (one started later) still skips them: a check of a finished run does
    nothing (``workers.jobs.validation_run.is_open``)."""
    from workers.app import app

    validation_run.error_run(run_id, reason)
    header = getattr(result, "parent", None)
    ids = [r.id for r in getattr(header, "results", None) or []] + [result.id]
    try:
        app.control.revoke(ids)
    except Exception as exc:  # the run is already ended in the database
        log.warning("could not revoke the tasks of run %s: %s", run_id, type(exc).__name__)


# ------------------------------------------------------------------ A/B evaluations
COMPARE_TASK = "embedding.compare"


class NotSent(RuntimeError):
    """The broker refused the message; the evaluation is recorded as ``failed``."""


def start_evaluation(
    model_a: str,
    model_b: str,
    dataset: str | None = None,
    pairs: list[dict[str, str]] | list[tuple[str, str]] | None = None,
    n_resamples: int | None = None,
    seed: int = 0,
    data_name: str | None = None,
    trigger: str = "api",
    project: str | None = None,
) -> str:
    """Record an A/B evaluation of ``model_a`` and ``model_b`` and send it to a worker;
    returns its id (follow it with :func:`evaluation_status`). ``project`` (name or id,
    default ``default``): the project it belongs to, whose version names it reads.

    The data: a ``dataset`` path under the model roots, or inline ``pairs``; ``data_name``
    is how the record names it (default: the path, or ``inline``). Raises ``PayloadError``
    for a malformed request, ``UnknownModel`` / ``PathNotAllowed`` / ``DatasetNotFound`` for
    a model or dataset the workers may not use (nothing recorded), and :class:`NotSent` when
    the broker is unavailable (recorded as ``failed``).
    """
    from workers.app import GPU_QUEUE, publisher

    payload: dict[str, Any] = {"model_a": model_a, "model_b": model_b, "seed": seed}
    if n_resamples is not None:
        payload["n_resamples"] = n_resamples
    if dataset is not None:
        payload["dataset"] = str(dataset)
    if pairs is not None:
        payload["pairs"] = [_row(p, ("anchor", "positive")) for p in pairs]
    if project is not None:
        payload["project"] = project
    request = parse(CompareRequest, payload)
    project_id = project_id_of(request.project)
    evaluation_run.check_request(request, repo.scope.project(project_id))
    name = data_name or (request.dataset if request.dataset is not None else "inline")
    evaluation_id = evaluation_run.create(
        trigger,
        request.model_a,
        request.model_b,
        name,
        request.n_resamples,
        request.seed,
        dataset=request.dataset,
        project_id=project_id,
    )
    message = request.model_dump(mode="json", exclude_none=True)
    try:  # its result is read from the evaluation's row, not from Celery's backend
        publisher().send_task(
            COMPARE_TASK,
            kwargs={**message, "evaluation_id": evaluation_id},
            task_id=evaluation_id,
            queue=GPU_QUEUE,
        )
    except Exception as exc:
        evaluation_run.fail(evaluation_id, f"not sent: broker unavailable ({type(exc).__name__})")
        raise NotSent(f"evaluation {evaluation_id} not sent: broker unavailable") from exc
    return evaluation_id


def evaluation_status(evaluation_id: str, scope: repo.Scope = repo.ALL_PROJECTS) -> dict[str, Any]:
    """An evaluation as JSON (``LookupError`` for an id unknown in ``scope``)."""
    return evaluation_run.read(evaluation_id, scope=scope)
