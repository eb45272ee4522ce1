"""Validation runs: a run of the suite, its checks, its heartbeat and its end."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from db import values as v
from db.models import (
    CHECK_STATUSES,
    RUN_FINAL_STATUSES,
    RUN_STATUSES,
    RUN_TRIGGERS,
    ValidationCheck,
    ValidationRun,
    utcnow,
)
from db.repo.rows import Id, bulk_update, dialect_insert, forget, require
from db.repo.scope import Scope
from db.values import InvalidValue


def create_validation_run(
    session: Session, trigger: str, models: Sequence[str] | Iterable[str], *, project_id: str
) -> ValidationRun:
    """Start a validation run (status ``running``) for ``models``, in ``project_id``."""
    trigger = v.choice(trigger, RUN_TRIGGERS, "trigger")
    if isinstance(models, str):
        raise InvalidValue(f"models must be a list of names, got the string {models!r}")
    names = [v.text(m, "model name", max_len=500) for m in models]
    run = ValidationRun(
        trigger=trigger, models=names, project_id=v.text(project_id, "project_id", max_len=40)
    )
    session.add(run)
    session.flush()
    return run


def record_validation_check(
    session: Session,
    run_id: Id,
    name: str,
    status: str,
    figures: dict[str, Any] | None,
    criteria: Sequence[dict[str, Any]] | None,
    duration_s: float | None,
) -> ValidationCheck:
    """Upsert one check's result in a run: a retried check replaces its row."""
    rid = v.as_uuid(run_id, "run_id")
    row = {
        "name": v.text(name, "check name", max_len=100),
        "status": v.choice(status, CHECK_STATUSES, "check status"),
        "figures": {} if figures is None else v.json_object(figures, "figures", strict=False),
        "criteria": _criteria(criteria),
        "duration_s": v.optional_number(duration_s, "duration_s", minimum=0.0),
    }
    require(session, ValidationRun, rid, "validation run")
    stmt = dialect_insert(session, ValidationCheck).values(run_id=rid, created_at=utcnow(), **row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "name"],
        set_={k: stmt.excluded[k] for k in ("status", "figures", "criteria", "duration_s")},
    )
    session.execute(stmt)
    forget(session, ValidationRun, rid, "checks")
    query = select(ValidationCheck).where(
        ValidationCheck.run_id == rid, ValidationCheck.name == row["name"]
    )
    return session.scalars(query.execution_options(populate_existing=True)).one()


def _criteria(criteria: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """A list of ``{name, threshold, actual, passed}``: name a string, passed a bool."""
    if criteria is None:
        return []
    if not isinstance(criteria, list | tuple):
        raise InvalidValue(f"criteria must be a list, got {type(criteria).__name__}")
    out = []
    for i, item in enumerate(criteria):
        entry = v.json_object(item, f"criteria[{i}]", strict=False)
        v.text(entry.get("name"), f"criteria[{i}].name")
        if not isinstance(entry.get("passed"), bool):
            raise InvalidValue(f"criteria[{i}].passed must be true or false")
        out.append(entry)
    return out


def finish_validation_run(
    session: Session,
    run_id: Id,
    status: str,
    verdict: str,
    error: str | None = None,
) -> bool:
    """Set the run's final status and verdict; True if this call set it (first one wins)."""
    rid = v.as_uuid(run_id, "run_id")
    v.choice(status, RUN_STATUSES, "run status")
    status = v.choice(status, RUN_FINAL_STATUSES, "final run status")
    verdict = v.text(verdict, "verdict")
    if error is not None and not isinstance(error, str):
        raise InvalidValue(f"error must be a string, got {type(error).__name__}")
    stmt = (
        update(ValidationRun)
        .where(ValidationRun.id == rid, ValidationRun.status == "running")
        .values(status=status, verdict=verdict, error=error, finished_at=utcnow())
    )
    changed = bulk_update(session, stmt) == 1
    forget(session, ValidationRun, rid)
    if not changed:
        require(session, ValidationRun, rid, "validation run")
    return changed


def get_validation_run(session: Session, run_id: Id, *, scope: Scope) -> ValidationRun | None:
    """The run with its checks (by name), read fresh; None if there is none."""
    rid = v.as_uuid(run_id, "run_id")
    query = (
        select(ValidationRun)
        .where(ValidationRun.id == rid)
        .options(selectinload(ValidationRun.checks))
        .execution_options(populate_existing=True)
    )
    return session.scalars(scope.filter(query, ValidationRun)).one_or_none()


def latest_validation_run(session: Session, *, scope: Scope) -> ValidationRun | None:
    """The most recently started run with its checks, or None."""
    query = (
        select(ValidationRun)
        .options(selectinload(ValidationRun.checks))
        .order_by(ValidationRun.started_at.desc(), ValidationRun.id)
        .limit(1)
        .execution_options(populate_existing=True)
    )
    return session.scalars(scope.filter(query, ValidationRun)).first()


def beat_validation_run(session: Session, run_id: Id) -> bool:
    """Refresh a running validation run's lease (a check of it is running); False once the
    run has ended."""
    rid = v.as_uuid(run_id, "run_id")
    stmt = (
        update(ValidationRun)
        .where(ValidationRun.id == rid, ValidationRun.status == "running")
        .values(heartbeat_at=utcnow())
    )
    moved = bulk_update(session, stmt) == 1
    forget(session, ValidationRun, rid)
    return moved


def stale_validation_runs(
    session: Session, started_before: datetime, lease_expired_before: datetime
) -> list[str]:
    """``running`` runs started before ``started_before`` whose lease (a check running) is
    older than ``lease_expired_before`` or was never taken: candidates for the lifeline,
    which still looks for their messages in the queues."""
    query = select(ValidationRun.id).where(
        ValidationRun.status == "running",
        ValidationRun.started_at < started_before,
        (ValidationRun.heartbeat_at.is_(None))
        | (ValidationRun.heartbeat_at < lease_expired_before),
    )
    return [str(rid) for rid in session.scalars(query)]


def list_validation_runs(session: Session, limit: int = 20, *, scope: Scope) -> list[ValidationRun]:
    """The newest runs first, with their checks."""
    query = (
        select(ValidationRun)
        .options(selectinload(ValidationRun.checks))
        .order_by(ValidationRun.started_at.desc(), ValidationRun.id)
        .limit(v.integer(limit, "limit", minimum=1))
    )
    return list(session.scalars(scope.filter(query, ValidationRun)))
