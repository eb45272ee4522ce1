"""``/v1/batches``: embeddings batches, run by the workers in chunks.

Creating a batch reads its input file (already checked line by line at upload), resolves
every model it names once (``ft:`` ids to their folders), cuts the requests into chunks
of at most ``EMBEDDING_BATCH_CHUNK_TEXTS`` texts, records the batch and sends one
``embedding.batch_chunk`` task per chunk. The chunk that finishes last writes the output
and error files (see ``workers/serving/batch_tasks.py``).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from api import files_store, model_ids
from api.auth import Caller, CallerDep, audit, authenticate
from api.errors import APIError, not_found
from api.schemas import (
    BatchErrorData,
    BatchErrors,
    BatchList,
    BatchObject,
    BatchRequest,
    RequestCounts,
    unix,
)
from core.config import get_settings
from db import repo
from db.models import utcnow
from db.session import session_scope

router = APIRouter(dependencies=[Depends(authenticate)], tags=["batches"])
CHUNK_TASK = "embedding.batch_chunk"


def batch_object(batch: Any) -> BatchObject:
    done = batch.done_chunks
    return BatchObject(
        id=batch.id,
        endpoint=batch.endpoint,
        errors=BatchErrors(data=[BatchErrorData(**e) for e in batch.errors])
        if batch.errors
        else None,
        input_file_id=batch.input_file_id,
        completion_window=batch.completion_window,
        status=batch.status,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        created_at=unix(batch.created_at) or 0,
        in_progress_at=unix(batch.in_progress_at),
        expires_at=unix(batch.expires_at),
        finalizing_at=unix(batch.finalizing_at),
        completed_at=unix(batch.completed_at),
        failed_at=unix(batch.failed_at),
        cancelling_at=unix(batch.cancelling_at),
        cancelled_at=unix(batch.cancelled_at),
        request_counts=RequestCounts(
            total=batch.total,
            completed=sum(c.completed for c in done),
            failed=sum(c.failed for c in done),
        ),
        metadata=batch.metadata_,
    )


def _plan(path: str, scope: Any) -> tuple[list[list[int]], dict[str, str], int]:
    """Chunks as [first, end) request indexes, the models to load (names resolved in the
    caller's ``scope``), and the request count."""
    from pathlib import Path

    cap = get_settings().batch_chunk_texts
    chunks: list[list[int]] = []
    models: dict[str, str] = {}
    resolved: dict[str, model_ids.Resolved] = {}
    start, texts, count = 0, 0, 0
    for where, request in files_store.batch_requests(Path(path)):
        body = request["body"]
        try:
            model = resolved.get(body["model"]) or model_ids.resolve(body["model"], scope=scope)
            model_ids.check_dimensions(model, body.get("dimensions"))
        except APIError as exc:
            raise APIError(
                exc.status, f"{where}: {exc.message}", param="input_file_id", code=exc.code
            ) from None
        resolved[model.name] = model
        models[model.name] = model.load
        n = 1 if isinstance(body["input"], str) else len(body["input"])
        if texts and texts + n > cap:
            chunks.append([start, count])
            start, texts = count, 0
        texts += n
        count += 1
    if count > start:
        chunks.append([start, count])
    return chunks, models, count


@router.post("/v1/batches", response_model=BatchObject)
def create_batch(caller: CallerDep, body: BatchRequest) -> BatchObject:
    from workers.app import GPU_QUEUE, publisher

    with session_scope() as session:
        source = repo.files.get_file(session, body.input_file_id, scope=caller.scope)
    if source is None:
        raise not_found("file", body.input_file_id, param="input_file_id")
    if source.purpose != "batch":
        raise APIError(
            400,
            f"File {source.id!r} has purpose {source.purpose!r}, not 'batch'.",
            param="input_file_id",
        )
    chunks, models, total = _plan(source.path, caller.scope)
    batch_id = f"batch_{uuid.uuid4().hex}"
    with session_scope() as session:
        repo.batches.create_batch(
            session,
            batch_id,
            project_id=source.project_id,
            input_file_id=source.id,
            endpoint=body.endpoint,
            completion_window=body.completion_window,
            chunks=chunks,
            models=models,
            total=total,
            expires_at=utcnow() + timedelta(hours=24),
            metadata=body.metadata,
        )
    try:  # nobody here waits on a chunk's result: its progress is in the batch's row
        sender = publisher()
        for index in range(len(chunks)):
            sender.send_task(CHUNK_TASK, args=[batch_id, index], queue=GPU_QUEUE)
    except Exception as exc:
        with session_scope() as session:
            repo.batches.set_batch_status(
                session,
                batch_id,
                "failed",
                ("in_progress",),
                errors=[{"code": "broker_unavailable", "message": type(exc).__name__}],
            )
        raise APIError(503, "The task broker is unavailable.", code="broker_unavailable") from None
    audit(caller, "batch.create", batch_id, source.project_id, input_file_id=source.id)
    return _get(caller, batch_id)


def _get(caller: Caller, batch_id: str) -> BatchObject:
    with session_scope() as session:
        batch = repo.batches.get_batch(session, batch_id, scope=caller.scope)
        if batch is None:
            raise not_found("batch", batch_id, param="batch_id")
        return batch_object(batch)


@router.get("/v1/batches/{batch_id}", response_model=BatchObject)
def retrieve_batch(caller: CallerDep, batch_id: str) -> BatchObject:
    return _get(caller, batch_id)


@router.get("/v1/batches", response_model=BatchList)
def list_batches(
    caller: CallerDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> BatchList:
    with session_scope() as session:
        if after is not None and repo.batches.get_batch(session, after, scope=caller.scope) is None:
            raise not_found("batch", after, param="after")
        rows = repo.batches.list_batches(session, after=after, limit=limit + 1, scope=caller.scope)
        data = [batch_object(b) for b in rows[:limit]]
    return BatchList(
        data=data,
        has_more=len(rows) > limit,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@router.post("/v1/batches/{batch_id}/cancel", response_model=BatchObject)
def cancel_batch(caller: CallerDep, batch_id: str) -> BatchObject:
    """``cancelling`` until the chunks still queued have been skipped, then ``cancelled``;
    what finished before stays in the output file."""
    with session_scope() as session:
        batch = repo.batches.get_batch(session, batch_id, scope=caller.scope)
        if batch is None:
            raise not_found("batch", batch_id, param="batch_id")
        project_id = batch.project_id
        moved = repo.batches.set_batch_status(
            session, batch_id, "cancelling", ("validating", "in_progress")
        )
    if moved:
        audit(caller, "batch.cancel", batch_id, project_id)
    return _get(caller, batch_id)
