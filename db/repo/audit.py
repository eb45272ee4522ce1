"""The audit list: every state-changing call, with the key id that made it (never the key)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import values as v
from db.models import AuditEvent


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    object_id: str,
    project_id: str | None,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """``actor``: a key id, ``cli`` (an operator at the command line) or ``open`` (a
    loopback API with no keys); ``action``: ``<object>.<verb>``, e.g. ``fine_tuning.job.cancel``."""
    row = AuditEvent(
        actor=v.text(actor, "actor", max_len=40),
        action=v.text(action, "action", max_len=64),
        object_id=v.text(object_id, "object id", max_len=100),
        project_id=v.optional_text(project_id, "project id", max_len=40),
        data=None if data is None else v.json_object(data, "data", strict=True),
    )
    session.add(row)
    session.flush()
    return row


def list_events(
    session: Session, project_id: str | None = None, limit: int = 100
) -> list[AuditEvent]:
    """Newest first; of one project, or every one."""
    query = select(AuditEvent)
    if project_id is not None:
        query = query.where(AuditEvent.project_id == project_id)
    query = query.order_by(AuditEvent.id.desc()).limit(v.integer(limit, "limit", minimum=1))
    return list(session.scalars(query))
