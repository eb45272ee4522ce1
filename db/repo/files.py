"""Files of the HTTP API: training, validation and batch files (metadata only)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from db import values as v
from db.models import (
    FILE_PURPOSES,
    StoredFile,
)
from db.repo.rows import page
from db.repo.scope import Scope


def add_file(
    session: Session,
    file_id: str,
    purpose: str,
    filename: str,
    size: int,
    rows: int,
    path: str,
    *,
    project_id: str,
) -> StoredFile:
    """Record a stored file of ``project_id`` (its bytes are already on disk at ``path``)."""
    row = StoredFile(
        id=v.text(file_id, "file id", max_len=64),
        project_id=v.text(project_id, "project_id", max_len=40),
        purpose=v.choice(purpose, FILE_PURPOSES, "file purpose"),
        filename=v.text(filename, "filename", max_len=500),
        bytes=v.integer(size, "bytes", minimum=0),
        rows=v.integer(rows, "rows", minimum=0),
        path=v.text(path, "path"),
    )
    session.add(row)
    session.flush()
    return row


def get_file(session: Session, file_id: str, *, scope: Scope) -> StoredFile | None:
    return scope.visible(session.get(StoredFile, file_id))


def list_files(
    session: Session,
    purpose: str | None = None,
    after: str | None = None,
    limit: int = 100,
    *,
    scope: Scope,
) -> list[StoredFile]:
    """Newest first; ``after`` a file id: the files older than it (cursor paging)."""
    return page(session, StoredFile, after, limit, purpose=purpose, project_id=scope.project_id)


def delete_file(session: Session, file_id: str, *, scope: Scope) -> bool:
    row = get_file(session, file_id, scope=scope)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True
