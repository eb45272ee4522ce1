"""Embedding batches: a batch file's chunks and its status stamps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from db import values as v
from db.models import (
    BATCH_STATUSES,
    Batch,
    BatchChunk,
    utcnow,
)
from db.repo.rows import bulk_update, dialect_insert, forget, page, require
from db.repo.scope import Scope
from db.values import InvalidValue


def create_batch(
    session: Session,
    batch_id: str,
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    chunks: Sequence[Sequence[int]],
    models: dict[str, str],
    total: int,
    expires_at: Any,
    metadata: dict[str, Any] | None = None,
    *,
    project_id: str,
) -> Batch:
    """Record a validated batch, ``in_progress`` (its chunk tasks are sent right after)."""
    row = Batch(
        id=v.text(batch_id, "batch id", max_len=64),
        project_id=v.text(project_id, "project_id", max_len=40),
        input_file_id=v.text(input_file_id, "input_file_id", max_len=64),
        endpoint=v.text(endpoint, "endpoint", max_len=100),
        completion_window=v.text(completion_window, "completion_window", max_len=16),
        status="in_progress",
        chunks=[[v.integer(a, "chunk start"), v.integer(b, "chunk end")] for a, b in chunks],
        models=v.json_object(models, "models", strict=True),
        total=v.integer(total, "total", minimum=0),
        metadata_=None if metadata is None else v.json_object(metadata, "metadata", strict=True),
        in_progress_at=utcnow(),
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return row


def get_batch(session: Session, batch_id: str, *, scope: Scope) -> Batch | None:
    """The batch with its finished chunks, read fresh."""
    query = (
        select(Batch)
        .where(Batch.id == batch_id)
        .options(selectinload(Batch.done_chunks))
        .execution_options(populate_existing=True)
    )
    return session.scalars(scope.filter(query, Batch)).one_or_none()


def list_batches(
    session: Session, after: str | None = None, limit: int = 20, *, scope: Scope
) -> list[Batch]:
    batches = page(session, Batch, after, limit, project_id=scope.project_id)
    for batch in batches:
        session.refresh(batch, ["done_chunks"])
    return batches


_BATCH_STAMPS = {
    "in_progress": "in_progress_at",
    "finalizing": "finalizing_at",
    "completed": "completed_at",
    "failed": "failed_at",
    "cancelling": "cancelling_at",
    "cancelled": "cancelled_at",
}


def set_batch_status(
    session: Session, batch_id: str, status: str, from_statuses: Sequence[str], **fields: Any
) -> bool:
    """Move a batch to ``status`` only from one of ``from_statuses`` (compare-and-set), stamping
    its time; True if this call moved it. ``fields``: output/error file ids, errors."""
    status = v.choice(status, BATCH_STATUSES, "batch status")
    allowed = {"output_file_id", "error_file_id", "errors"}
    if set(fields) - allowed:
        raise InvalidValue(f"unknown batch fields {sorted(set(fields) - allowed)}")
    values: dict[str, Any] = {"status": status, **fields}
    if status in _BATCH_STAMPS:
        values[_BATCH_STAMPS[status]] = utcnow()
    stmt = (
        update(Batch)
        .where(Batch.id == batch_id, Batch.status.in_(list(from_statuses)))
        .values(**values)
    )
    changed = bulk_update(session, stmt) == 1
    forget(session, Batch, batch_id)
    if not changed:
        require(session, Batch, batch_id, "batch")
    return changed


def record_batch_chunk(
    session: Session, batch_id: str, chunk: int, completed: int, failed: int
) -> int:
    """Count one finished chunk (a repeat of the same chunk counts once); returns how many
    of the batch's chunks are done."""
    row = {
        "chunk": v.integer(chunk, "chunk", minimum=0),
        "completed": v.integer(completed, "completed", minimum=0),
        "failed": v.integer(failed, "failed", minimum=0),
    }
    require(session, Batch, batch_id, "batch")
    stmt = dialect_insert(session, BatchChunk).values(batch_id=batch_id, created_at=utcnow(), **row)
    session.execute(stmt.on_conflict_do_nothing(index_elements=["batch_id", "chunk"]))
    forget(session, Batch, batch_id, "done_chunks")
    done = select(func.count()).select_from(BatchChunk).where(BatchChunk.batch_id == batch_id)
    return int(session.scalar(done) or 0)
