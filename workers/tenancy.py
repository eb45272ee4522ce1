"""Which project a payload belongs to: the ``project`` it names (a name or a ``proj_`` id),
or the ``default`` project when it names none (``send_task`` and CLI callers from before
projects, and keys of ``EMBEDDING_API_KEYS``).

Payloads come from the broker, which only the company's own services reach: a payload's
project is a label those services choose, not a credential. The walls against other teams
are the HTTP API's keys (``api/auth.py``), which always set it to the key's own project.
"""

from __future__ import annotations

from db import repo
from db.models import DEFAULT_PROJECT_ID
from db.repo.scope import Scope
from db.session import session_scope
from workers.schemas import PayloadError


def project_id_of(name_or_id: str | None) -> str:
    """The id of the live project a payload names; PayloadError for an unknown or archived
    one (nothing is recorded for it)."""
    if name_or_id is None or name_or_id in (DEFAULT_PROJECT_ID, "default"):
        return DEFAULT_PROJECT_ID
    with session_scope() as session:
        try:
            return repo.projects.active_project_id(session, name_or_id)
        except (repo.NotFound, repo.InvalidValue) as exc:
            raise PayloadError(f"project: {exc}") from None


def scope_of(name_or_id: str | None) -> Scope:
    """The scope a payload's model names are read in: its project's."""
    return repo.scope.project(project_id_of(name_or_id))
