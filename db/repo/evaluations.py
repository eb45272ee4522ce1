"""A/B evaluations: create, start, beat, finish, and rescue when a worker died."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db import values as v
from db.models import (
    EVALUATION_STATUSES,
    EVALUATION_TRIGGERS,
    EVALUATION_VERDICTS,
    Evaluation,
    utcnow,
)
from db.repo.rows import Id, bulk_update, forget, page, require, sha256_hex
from db.repo.scope import Scope


def create_evaluation(
    session: Session,
    trigger: str,
    model_a: str,
    model_b: str,
    data_name: str,
    n_resamples: int,
    seed: int,
    primary_metric: str,
    dataset: str | None = None,
    *,
    project_id: str,
) -> Evaluation:
    """Record a comparison to run (``queued``): the names as given and the data's name, and
    the dataset path a worker reads (what a re-run needs; None for inline pairs)."""
    row = Evaluation(
        project_id=v.text(project_id, "project_id", max_len=40),
        trigger=v.choice(trigger, EVALUATION_TRIGGERS, "evaluation trigger"),
        model_a=v.text(model_a, "model_a", max_len=500),
        model_b=v.text(model_b, "model_b", max_len=500),
        data_name=v.text(data_name, "data_name"),
        n_resamples=v.integer(n_resamples, "n_resamples", minimum=1),
        seed=v.integer(seed, "seed", minimum=0),
        primary_metric=v.text(primary_metric, "primary_metric", max_len=32),
        dataset=v.optional_text(dataset, "dataset"),
        status="queued",
    )
    session.add(row)
    session.flush()
    return row


def start_evaluation(
    session: Session,
    evaluation_id: Id,
    model_a_loaded: str,
    model_b_loaded: str,
    data_sha256: str,
    data_rows: int,
    model_a_version: str | None = None,
    model_b_version: str | None = None,
) -> bool:
    """Claim a ``queued`` evaluation (``running``), recording what each name loaded and the
    data's digest and rows as read; True only for the one caller that claimed it."""
    eid = v.as_uuid(evaluation_id, "evaluation_id")
    values = {
        "model_a_loaded": v.text(model_a_loaded, "model_a_loaded"),
        "model_b_loaded": v.text(model_b_loaded, "model_b_loaded"),
        "model_a_version": v.optional_text(model_a_version, "model_a_version", max_len=500),
        "model_b_version": v.optional_text(model_b_version, "model_b_version", max_len=500),
        "data_sha256": sha256_hex(data_sha256, "data_sha256"),
        "data_rows": v.integer(data_rows, "data_rows", minimum=1),
    }
    now = utcnow()
    values["attempts"] = Evaluation.attempts + 1
    return _move_evaluation(
        session, eid, ("queued",), status="running", started_at=now, heartbeat_at=now, **values
    )


def beat_evaluation(session: Session, evaluation_id: Id) -> bool:
    """Refresh a running evaluation's lease; False once it is no longer running."""
    eid = v.as_uuid(evaluation_id, "evaluation_id")
    return _move_evaluation(session, eid, ("running",), heartbeat_at=utcnow())


def lost_evaluations(session: Session, lease_expired_before: datetime) -> list[Evaluation]:
    """``running`` evaluations whose lease (or, with none, start) is older than the cutoff:
    their worker is gone."""
    seen = func.coalesce(Evaluation.heartbeat_at, Evaluation.started_at)
    query = select(Evaluation).where(Evaluation.status == "running", seen < lease_expired_before)
    return list(session.scalars(query.execution_options(populate_existing=True)))


def requeue_lost_evaluation(session: Session, evaluation_id: Id, reason: str) -> bool:
    """A lost ``running`` evaluation back to ``queued`` to run again, the rescue recorded;
    True if this call moved it."""
    eid = v.as_uuid(evaluation_id, "evaluation_id")
    return _rescue_evaluation(session, eid, "rerun", v.text(reason, "reason"), status="queued")


def fail_lost_evaluation(session: Session, evaluation_id: Id, reason: str) -> bool:
    """A lost ``running`` evaluation ``failed`` with the reason, the rescue recorded."""
    eid = v.as_uuid(evaluation_id, "evaluation_id")
    reason = v.text(reason, "reason")
    return _rescue_evaluation(
        session, eid, "failed", reason, status="failed", error=reason, finished_at=utcnow()
    )


def _rescue_evaluation(session: Session, eid: Any, action: str, reason: str, **values: Any) -> bool:
    row = session.get(Evaluation, eid, populate_existing=True)
    if row is None or row.status != "running":
        return False
    entry = {"at": utcnow().isoformat(), "action": action, "reason": reason}
    rescues = [*(row.rescues or []), entry]
    stmt = (
        update(Evaluation)
        .where(
            Evaluation.id == eid,
            Evaluation.status == "running",
            Evaluation.attempts == row.attempts,  # nobody claimed it again meanwhile
        )
        .values(rescues=rescues, **values)
    )
    moved = bulk_update(session, stmt) == 1
    forget(session, Evaluation, eid)
    return moved


def finish_evaluation(
    session: Session,
    evaluation_id: Id,
    metrics_a: dict[str, Any],
    metrics_b: dict[str, Any],
    differences: dict[str, Any],
    verdict: str,
    duration_s: float | None = None,
) -> bool:
    """A running evaluation ``succeeded`` with its figures; True if this call finished it
    (the first outcome wins)."""
    eid = v.as_uuid(evaluation_id, "evaluation_id")
    values = {
        "metrics_a": v.json_object(metrics_a, "metrics_a", strict=True),
        "metrics_b": v.json_object(metrics_b, "metrics_b", strict=True),
        "differences": v.json_object(differences, "differences", strict=True),
        "verdict": v.choice(verdict, EVALUATION_VERDICTS, "verdict"),
        "duration_s": v.optional_number(duration_s, "duration_s", minimum=0.0),
    }
    return _move_evaluation(
        session, eid, ("running",), status="succeeded", finished_at=utcnow(), **values
    )


def fail_evaluation(session: Session, evaluation_id: Id, error: str) -> bool:
    """A queued or running evaluation ``failed`` with its reason; True if this call ended it."""
    eid = v.as_uuid(evaluation_id, "evaluation_id")
    error = v.text(error, "error")
    return _move_evaluation(
        session, eid, ("queued", "running"), status="failed", error=error, finished_at=utcnow()
    )


def fail_lost_evaluations(session: Session, started_before: datetime, reason: str) -> list[str]:
    """Fail every evaluation still ``running`` that started before ``started_before``, with
    ``reason``; the ids it failed. The caller picks a moment no live run can predate (the
    task's hard time limit ago): its worker was killed before it could record an outcome."""
    reason = v.text(reason, "reason")
    stale = session.scalars(
        select(Evaluation.id).where(
            Evaluation.status == "running", Evaluation.started_at < started_before
        )
    ).all()
    return [
        str(eid)
        for eid in stale
        if _move_evaluation(
            session, eid, ("running",), status="failed", error=reason, finished_at=utcnow()
        )
    ]


def _move_evaluation(
    session: Session, eid: Any, from_statuses: tuple[str, ...], **values: Any
) -> bool:
    """Set ``values`` on the evaluation if its status is one of ``from_statuses``, in one
    compare-and-swap UPDATE; True if this call moved it (an unknown id raises)."""
    stmt = (
        update(Evaluation)
        .where(Evaluation.id == eid, Evaluation.status.in_(from_statuses))
        .values(**values)
    )
    moved = bulk_update(session, stmt) == 1
    forget(session, Evaluation, eid)
    if not moved:
        require(session, Evaluation, eid, "evaluation")
    return moved


def get_evaluation(session: Session, evaluation_id: Id, *, scope: Scope) -> Evaluation | None:
    eid = v.as_uuid(evaluation_id, "evaluation_id")
    query = scope.filter(select(Evaluation).where(Evaluation.id == eid), Evaluation)
    return session.scalars(query.execution_options(populate_existing=True)).one_or_none()


def list_evaluations(
    session: Session,
    after: Id | None = None,
    limit: int = 20,
    status: str | None = None,
    *,
    scope: Scope,
) -> list[Evaluation]:
    """Newest first; ``after`` an evaluation id (cursor paging), ``status`` one of
    ``queued``, ``running``, ``succeeded``, ``failed``."""
    cursor = None if after is None else v.as_uuid(after, "after")
    if status is not None:
        v.choice(status, EVALUATION_STATUSES, "evaluation status")
    return page(session, Evaluation, cursor, limit, status=status, project_id=scope.project_id)
