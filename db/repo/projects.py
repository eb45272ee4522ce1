"""Projects: create, find by name or id, list, archive.

A project's name is what operators type (``embedctl projects create team-search``); its id
(``proj_<hex>``) is what the API shows and keys carry. Either finds it.
"""

from __future__ import annotations

import re
import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import values as v
from db.models import PROJECT_LIMITS, ApiKey, FinetuneJob, Project, utcnow
from db.values import InvalidValue, NotFound

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"


class ProjectExists(InvalidValue):
    """A project of that name is already there."""


class ProjectBusy(InvalidValue):
    """The project still has jobs queued or running."""


def check_name(name: object) -> str:
    text = v.text(name, "project name")
    if not NAME_PATTERN.fullmatch(text) or text.startswith("proj_"):
        raise InvalidValue(f"project name {name!r}: {NAME_RULE} (and not starting 'proj_')")
    return text


def create_project(session: Session, name: str) -> Project:
    name = check_name(name)
    if session.scalars(select(Project).where(Project.name == name)).first() is not None:
        raise ProjectExists(f"a project named {name!r} already exists")
    row = Project(id=f"proj_{secrets.token_hex(12)}", name=name)
    session.add(row)
    session.flush()
    return row


def find_project(session: Session, name_or_id: str) -> Project | None:
    """The project with this id or name (archived ones included); None for a name no
    project can have."""
    text = v.lookup_key(name_or_id, max_len=64)
    if text is None:
        return None
    by_id = session.get(Project, text) if text.startswith("proj_") else None
    return by_id or session.scalars(select(Project).where(Project.name == text)).first()


def require_project(session: Session, name_or_id: str) -> Project:
    found = find_project(session, name_or_id)
    if found is None:
        raise NotFound(f"no project {name_or_id!r}")
    return found


def active_project_id(session: Session, name_or_id: str) -> str:
    """The id of a live project, for a job or request that names one; archived: refused."""
    found = require_project(session, name_or_id)
    if found.archived_at is not None:
        raise InvalidValue(f"project {found.name!r} is archived")
    return found.id


def list_projects(session: Session, include_archived: bool = True) -> list[Project]:
    query = select(Project).order_by(Project.created_at, Project.id)
    if not include_archived:
        query = query.where(Project.archived_at.is_(None))
    return list(session.scalars(query))


def rename_project(session: Session, project_id: str, name: str) -> Project:
    row = require_project(session, project_id)
    name = check_name(name)
    other = session.scalars(select(Project).where(Project.name == name)).first()
    if other is not None and other.id != row.id:
        raise ProjectExists(f"a project named {name!r} already exists")
    row.name = name
    session.flush()
    return row


def archive_project(session: Session, name_or_id: str) -> Project:
    """Archive a project: its keys stop working at once, its rows stay.

    Refused (:class:`ProjectBusy`) while it has jobs queued or running: archiving must not
    strand GPU work nobody can follow or cancel any more. Cancel them first.
    """
    row = require_project(session, name_or_id)
    if row.archived_at is not None:
        return row
    active = session.scalar(
        select(func.count())
        .select_from(FinetuneJob)
        .where(FinetuneJob.project_id == row.id, FinetuneJob.status.in_(("queued", "running")))
    )
    if active:
        raise ProjectBusy(
            f"project {row.name!r} has {active} fine-tune job(s) queued or running; cancel "
            "them first (embedctl jobs cancel ID, or POST /v1/fine_tuning/jobs/ID/cancel)"
        )
    row.archived_at = utcnow()
    session.flush()
    return row


def key_counts(session: Session) -> dict[str, int]:
    """Live (unrevoked) keys per project id."""
    query = (
        select(ApiKey.project_id, func.count())
        .where(ApiKey.revoked_at.is_(None), ApiKey.project_id.is_not(None))
        .group_by(ApiKey.project_id)
    )
    return {pid: n for pid, n in session.execute(query)}


def check_limit(name: str, value: object) -> int | float | None:
    """A weight (a finite number > 0) or a quota (a whole number > 0; None: no limit)."""
    if name == "weight":
        weight = v.number(value, "weight")
        if weight <= 0:
            raise InvalidValue(f"weight must be > 0, got {value!r}")
        return weight
    if name not in PROJECT_LIMITS:
        raise InvalidValue(f"unknown limit {name!r}; limits: weight, {', '.join(PROJECT_LIMITS)}")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidValue(f"{name} must be a whole number > 0 (or none: no limit), got {value!r}")
    return value


def set_limits(session: Session, name_or_id: str, **limits: object) -> Project:
    """Set a project's weight and quotas; each is checked before any is written. They take
    effect on the next dispatch and the next request (nothing caches them)."""
    row = require_project(session, name_or_id)
    checked = {name: check_limit(name, value) for name, value in limits.items()}
    for name, value in checked.items():
        setattr(row, name, value)
    session.flush()
    return row


def limits_of(row: Project) -> dict[str, object]:
    return {"weight": row.weight, **{name: getattr(row, name) for name in PROJECT_LIMITS}}
