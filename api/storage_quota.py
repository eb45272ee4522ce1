"""The storage quota of a project (``projects.max_storage_bytes``; NULL: none): what it
stores (:func:`db.repo.storage.stored_bytes`: its files, and its model versions' folders
where their size is known) plus what a request would add may not exceed it.

Over the quota, ``POST /v1/files`` and ``POST /v1/datasets`` are 429 with OpenAI's
``insufficient_quota`` (type and code), and leave nothing behind. The check runs in the
transaction that records the new file, with the project's row locked, so two uploads of one
project never both pass against the same sum. The quota is read from the project's row
each time: a change holds from the next upload on.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.errors import APIError
from db import repo


def refusal(project_id: str, stored: int, adding: int, quota: int) -> APIError:
    return APIError(
        429,
        f"Storage quota exceeded: project {project_id} stores {stored} bytes and this "
        f"request adds {adding}, over its quota of {quota} bytes. Delete files or models, "
        "or ask an operator to raise max_storage_bytes.",
        code="insufficient_quota",
        type="insufficient_quota",
    )


def check(session: Session, project_id: str, adding: int) -> None:
    """Raise the 429 when ``adding`` more bytes would take ``project_id`` over its quota.

    Locks the project's row until the caller's transaction ends: record the new bytes in
    that same transaction."""
    project = repo.projects.find_project(session, project_id)
    quota = project.max_storage_bytes if project is not None else None
    if quota is None:
        return
    stored = repo.storage.stored_bytes(session, project_id, lock=True)
    if stored + adding > quota:
        raise refusal(project_id, stored, adding, quota)
