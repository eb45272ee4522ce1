"""``/v1/fine_tuning/jobs``: OpenAI's fine-tuning API over our fine-tune jobs.

A job is submitted through ``workers.client.submit_request`` (the outbox), with the
training file's path as its dataset, so it runs exactly as a job from ``embedctl`` or
``send_task`` does (the suffix is in its payload, the body's digest is its request digest for
``Idempotency-Key``). The file ids, which the payload names as a path, are kept in
``finetune_job_requests``. Events are the job's timeline (``job_events``); checkpoints are read
from its ``epoch_metrics``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query

from api import files_store, model_ids
from api.auth import Caller, CallerDep, audit, authenticate
from api.errors import APIError, not_found
from api.schemas import (
    CheckpointList,
    CheckpointMetrics,
    EventList,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    FineTuningJobList,
    FineTuningJobRequest,
    Hyperparameters,
    JobError,
    JobHyperparameters,
    JobResult,
    unix,
)
from db import repo
from db.models import DEFAULT_PROJECT_ID
from db.session import session_scope
from embedding.training import hyperparameters as hp
from embedding.training.hyperparameters import LEVERS
from workers.serving.model_names import FT_PREFIX, job_fine_tuned_id

router = APIRouter(dependencies=[Depends(authenticate)], tags=["fine-tuning"])

DEFAULT_EPOCHS, DEFAULT_BATCH_SIZE, DEFAULT_LR = (
    hp.EPOCHS.default,
    hp.BATCH_SIZE.default,
    hp.LR.default,
)
DEFAULT_PATIENCE, DEFAULT_SELECT_BEST = (
    hp.EARLY_STOPPING_PATIENCE.default,
    hp.SELECT_BEST_EPOCH.default,
)
KEY_PREFIX = "api:"  # API idempotency keys live apart from send_task/CLI keys


def scoped_idempotency_key(project_id: str, key: str) -> str:
    """The job key an ``Idempotency-Key`` header stands for: a project's own (the default
    project's keep their form from before projects)."""
    return KEY_PREFIX + (key if project_id == DEFAULT_PROJECT_ID else f"{project_id}:{key}")


# ------------------------------------------------------------------ the job object
def job_object(job: Any, request: Any) -> FineTuningJob:
    params = job.params or {}
    lr = float(params.get("lr", DEFAULT_LR))
    suffix = (job.params or {}).get("suffix")
    succeeded = job.status == "succeeded" and job.model_version_id is not None
    return FineTuningJob(
        id=str(job.id),
        created_at=unix(job.created_at) or 0,
        error=_error(job),
        fine_tuned_model=job_fine_tuned_id(job) if succeeded else None,
        finished_at=unix(job.finished_at),
        hyperparameters=JobHyperparameters(
            n_epochs=int(params.get("epochs", DEFAULT_EPOCHS)),
            batch_size=int(params.get("batch_size", DEFAULT_BATCH_SIZE)),
            learning_rate=lr,
            learning_rate_multiplier=lr / DEFAULT_LR,
            early_stopping_patience=int(params.get("early_stopping_patience", DEFAULT_PATIENCE)),
            select_best_epoch=bool(params.get("select_best_epoch", DEFAULT_SELECT_BEST)),
            mini_batch_size=int(params.get("mini_batch_size", hp.MINI_BATCH_SIZE.default)),
            matryoshka=bool(params.get("matryoshka", hp.MATRYOSHKA.default)),
            **{
                name: hp.HYPERPARAMETERS[name].type(
                    params.get(name, hp.HYPERPARAMETERS[name].default)
                )
                for name in hp.LEVERS
            },
            n_devices=params.get("n_devices") or 1,
        ),
        model=job.model,
        seed=int(params.get("seed", 0)),
        status=job.status,
        training_file=request.training_file if request else None,
        validation_file=request.validation_file if request else None,
        loss=str(params.get("loss", "triplet")),
        suffix=suffix,
        result=JobResult.model_validate(job.result) if job.result else None,
        project_id=job.project_id,
    )


def _error(job: Any) -> JobError | None:
    if job.status != "failed":
        return None
    message = job.error or "the job failed"
    code = "invalid_training_file" if message.startswith("DataError") else "training_failed"
    return JobError(code=code, message=message)


def _load(caller: Caller, job_id: str) -> tuple[Any, Any]:
    try:
        jid = uuid.UUID(job_id)
    except ValueError:
        raise not_found("fine-tuning job", job_id, param="fine_tuning_job_id") from None
    with session_scope() as session:
        job = repo.jobs.get_job(session, jid, scope=caller.scope)
        if job is None:
            raise not_found("fine-tuning job", job_id, param="fine_tuning_job_id")
        return job, repo.jobs.get_job_request(session, jid, scope=caller.scope)


# ------------------------------------------------------------------ create
def _payload(body: FineTuningJobRequest, dataset: str, validation: str | None) -> dict[str, Any]:
    """The job's payload. What the body leaves "auto" (loss, epochs, batch size, learning
    rate) is left out: the submit fills it with the recipe for the training file's rows
    (``embedding.training.hyperparameters.recipe_for``: pairs get the code-search recipe).
    A ``learning_rate_multiplier`` multiplies the table's lr (``DEFAULT_LR``)."""
    hp = body.hyperparameters or Hyperparameters()
    payload: dict[str, Any] = {"model": body.model, "dataset": dataset}
    if body.loss is not None:
        payload["loss"] = body.loss
    if hp.n_epochs != "auto":
        payload["epochs"] = hp.n_epochs
    if hp.batch_size != "auto":
        payload["batch_size"] = hp.batch_size
    if hp.learning_rate != "auto":
        payload["lr"] = hp.learning_rate
    elif hp.learning_rate_multiplier != "auto":
        payload["lr"] = DEFAULT_LR * hp.learning_rate_multiplier
    if body.seed is not None:
        payload["seed"] = body.seed
    if validation is not None:  # picks the best epoch, drives early stopping
        payload["validation_dataset"] = validation
    if hp.early_stopping_patience != "auto":
        payload["early_stopping_patience"] = hp.early_stopping_patience
    if hp.select_best_epoch != "auto":
        payload["select_best_epoch"] = hp.select_best_epoch
    if hp.mini_batch_size != "auto":
        payload["mini_batch_size"] = hp.mini_batch_size
    if hp.matryoshka != "auto":
        payload["matryoshka"] = hp.matryoshka
    for lever in LEVERS:
        if getattr(hp, lever) != "auto":
            payload[lever] = getattr(hp, lever)
    n_devices = hp.n_devices if hp.n_devices != "auto" else body.n_devices
    if body.n_devices is not None and n_devices != body.n_devices:
        raise APIError(
            400,
            f"n_devices is {body.n_devices!r} but hyperparameters.n_devices is {hp.n_devices!r}",
            param="n_devices",
            code="invalid_value",
        )
    if n_devices is not None:
        payload["n_devices"] = n_devices
    return payload


def _conflict(exc: Exception) -> APIError:
    return APIError(
        409,
        f"This Idempotency-Key was already used with a different request body ({exc}).",
        param="Idempotency-Key",
        code="idempotency_key_reused",
    )


@router.post("/v1/fine_tuning/jobs", response_model=FineTuningJob)
def create_job(
    caller: CallerDep,
    body: FineTuningJobRequest,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=150)] = None,
) -> FineTuningJob:
    """The job goes through the outbox as any other; ``Idempotency-Key`` is the job's key
    (prefixed, apart from send_task/CLI keys) and the body's digest its request digest, so
    a repeat is the same job and another body under the key a 409 (``workers/idempotency``)."""
    from embedding.models.hub import PathNotAllowed
    from embedding.models.specs import UnknownModel
    from workers.fleet.quotas import QuotaExceeded
    from workers.jobs.idempotency import IdempotencyConflict, request_digest
    from workers.jobs.outbox import submit_request
    from workers.jobs.submit_checks import DatasetNotFound
    from workers.schemas import FinetuneRequest, PayloadError, parse

    scope = caller.scope
    if model_ids.resolve(body.model, scope=scope).name.startswith(FT_PREFIX):
        raise APIError(400, "Fine-tuning a fine-tuned model is not supported yet.", param="model")
    dataset = files_store.fine_tune_file_path(body.training_file, "training_file", scope=scope)
    validation = None
    if body.validation_file is not None:
        validation = files_store.fine_tune_file_path(
            body.validation_file, "validation_file", scope=scope
        )
    payload = _payload(body, dataset, validation)
    payload["project"] = caller.write_project
    if body.suffix is not None:
        payload["suffix"] = body.suffix
    if idempotency_key:
        payload["idempotency_key"] = scoped_idempotency_key(caller.write_project, idempotency_key)
    try:
        submitted = submit_request(
            parse(FinetuneRequest, payload),
            request_sha256=request_digest(body.model_dump(mode="json")),
            actor=caller.key_id,
        )
    except IdempotencyConflict as exc:
        raise _conflict(exc) from None
    except QuotaExceeded as exc:
        raise APIError(
            429,
            str(exc),
            code="insufficient_quota",
            headers={"Retry-After": str(exc.retry_after_s)},
        ) from None
    except PayloadError as exc:
        raise APIError(
            400, str(exc).removeprefix("FinetuneRequest: "), code="invalid_value"
        ) from None
    except UnknownModel as exc:
        raise APIError(404, str(exc), param="model", code="model_not_found") from None
    except (PathNotAllowed, DatasetNotFound) as exc:  # uploads live outside the model roots
        raise APIError(
            500, f"Server misconfigured: {exc}", code="artifacts_outside_model_roots"
        ) from None
    with session_scope() as session:
        repo.jobs.record_job_request(
            session,
            submitted.job_id,
            training_file=body.training_file,
            validation_file=body.validation_file,
        )
    audit(caller, "fine_tuning.job.create", submitted.job_id, caller.write_project)
    return job_object(*_load(caller, submitted.job_id))


# ------------------------------------------------------------------ read, cancel
@router.get("/v1/fine_tuning/jobs", response_model=FineTuningJobList)
def list_jobs(
    caller: CallerDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> FineTuningJobList:
    if after is not None:
        _load(caller, after)  # 404 for an unknown cursor
    with session_scope() as session:
        jobs = repo.jobs.list_jobs_page(session, after=after, limit=limit + 1, scope=caller.scope)
        data = [
            job_object(j, repo.jobs.get_job_request(session, j.id, scope=caller.scope))
            for j in jobs[:limit]
        ]
    return FineTuningJobList(data=data, has_more=len(jobs) > limit)


@router.get("/v1/fine_tuning/jobs/{job_id}", response_model=FineTuningJob)
def retrieve_job(caller: CallerDep, job_id: str) -> FineTuningJob:
    return job_object(*_load(caller, job_id))


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel", response_model=FineTuningJob)
def cancel_job(caller: CallerDep, job_id: str) -> FineTuningJob:
    """A queued job is cancelled at once; a running one stops at its next batch (it reads
    ``running`` until then); a finished job is returned as it is."""
    from workers.client import cancel_job as cancel

    job, _ = _load(caller, job_id)
    if job.status in ("queued", "running"):
        cancel(str(job.id), scope=caller.scope, actor=caller.key_id)
        audit(caller, "fine_tuning.job.cancel", str(job.id), job.project_id)
    return job_object(*_load(caller, job_id))


# ------------------------------------------------------------------ events, checkpoints
def _events(caller: Caller, job: Any, request: Any) -> list[FineTuningJobEvent]:
    """Oldest first, from the job's timeline (``job_events``), in OpenAI's words where
    OpenAI has an event of that kind (created, metrics per epoch, the outcome)."""
    prefix = f"ftevent-{job.id.hex}"
    total = int((job.params or {}).get("epochs", DEFAULT_EPOCHS))
    with session_scope() as session:
        rows = [
            (e.id, e.at, e.kind, e.message, e.data)
            for e in repo.jobs.job_events(session, job.id, scope=caller.scope)
        ]
    out = []
    for ident, at, kind, message, data in rows:
        level, type_ = "info", "message"
        if kind == "created":
            message = "Created fine-tuning job"
        elif kind == "epoch":
            epoch, loss = data["epoch"], data["train_loss"]
            message = f"Epoch {epoch}/{total}: train loss={loss:.6f}"
            data = {**data, "step": epoch, "total_epochs": total}
            type_ = "metrics"
        elif kind == "succeeded":
            message = "The job has successfully completed"
            data = {"fine_tuned_model": job_object(job, request).fine_tuned_model}
        elif kind == "failed":
            level, message = "error", f"The job failed: {job.error}"
        elif kind == "cancelled":
            message = "The job was cancelled"
        elif kind in ("rescued", "retried", "released"):
            level = "warn"
        out.append(
            FineTuningJobEvent(
                id=f"{prefix}-{ident:08d}",
                created_at=unix(at) or 0,
                level=level,
                message=message,
                data=data,
                type=type_,
            )
        )
    return out


def _page(items: list[Any], after: str | None, limit: int) -> tuple[list[Any], bool]:
    """Newest first, as OpenAI lists events and checkpoints; ``after`` an item id."""
    newest_first = list(reversed(items))
    if after is not None:
        ids = [item.id for item in newest_first]
        if after not in ids:
            raise not_found("item", after, param="after")
        newest_first = newest_first[ids.index(after) + 1 :]
    return newest_first[:limit], len(newest_first) > limit


@router.get("/v1/fine_tuning/jobs/{job_id}/events", response_model=EventList)
def list_events(
    caller: CallerDep,
    job_id: str,
    after: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> EventList:
    job, request = _load(caller, job_id)
    data, more = _page(_events(caller, job, request), after, limit)
    return EventList(data=data, has_more=more)


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints", response_model=CheckpointList)
def list_checkpoints(
    caller: CallerDep,
    job_id: str,
    after: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> CheckpointList:
    """One checkpoint per finished epoch, with its metrics. The checkpoint names are
    informational: only the final ``fine_tuned_model`` can be embedded with."""
    job, _ = _load(caller, job_id)
    base = job_fine_tuned_id(job)
    checkpoints = [
        FineTuningJobCheckpoint(
            id=f"ftckpt-{job.id.hex}-{e.epoch:05d}",
            created_at=unix(e.created_at) or 0,
            fine_tuned_model_checkpoint=f"{base}:ckpt-step-{e.epoch}",
            fine_tuning_job_id=str(job.id),
            metrics=CheckpointMetrics(
                step=e.epoch,
                train_loss=e.train_loss,
                lr=e.lr,
                duration_s=e.duration_s,
                samples_per_s=e.samples_per_s,
                eval=e.eval,
            ),
            step_number=e.epoch,
        )
        for e in sorted(job.epochs, key=lambda e: e.epoch)
    ]
    data, more = _page(checkpoints, after, limit)
    return CheckpointList(
        data=data,
        has_more=more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )
