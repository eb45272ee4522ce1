"""What each project keeps on the shared disk: its files' bytes (``files.bytes``) plus its
model versions' folders where their size is known (``model_versions.bytes``, filled at
registration). The storage quota (``projects.max_storage_bytes``) is checked against it.

Aggregates only: no row and no path leaves these functions.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import values as v
from db.models import ModelVersion, Project, StoredFile


def stored_bytes(session: Session, project_id: str, *, lock: bool = False) -> int:
    """The bytes ``project_id`` stores now. ``lock``: first lock the project's row until the
    transaction ends (``SELECT … FOR UPDATE`` on PostgreSQL), so two uploads of one project
    are checked against the quota one after the other, never both against the same sum."""
    project_id = v.text(project_id, "project_id", max_len=40)
    if lock:
        session.execute(select(Project.id).where(Project.id == project_id).with_for_update())
    files = select(func.coalesce(func.sum(StoredFile.bytes), 0)).where(
        StoredFile.project_id == project_id
    )
    versions = select(func.coalesce(func.sum(ModelVersion.bytes), 0)).where(
        ModelVersion.project_id == project_id
    )
    return int(session.scalar(files) or 0) + int(session.scalar(versions) or 0)


def stored_bytes_by_project(session: Session) -> dict[str, int]:
    """project id -> the bytes it stores (projects storing nothing are absent)."""
    out: dict[str, int] = {}
    for model in (StoredFile, ModelVersion):
        query = select(model.project_id, func.sum(model.bytes)).group_by(model.project_id)
        for project_id, total in session.execute(query):
            if total:
                out[project_id] = out.get(project_id, 0) + int(total)
    return out
