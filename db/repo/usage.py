"""What each project used, per UTC day: GPU-seconds of training and embedding, pairs
trained, tokens embedded, embedding requests (``usage_daily``).

Every addition is one ``INSERT ... ON CONFLICT DO UPDATE`` that adds to the day's row, so
concurrent writers (workers finishing attempts, API processes answering embeddings) never
lose an increment. Training seconds are charged once per attempt, when it ends
(``db/repo/jobs.py``); fair share reads them back with a half-life
(:func:`recent_training_seconds`).
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import values as v
from db.models import UsageDaily, utcnow
from db.repo.rows import dialect_insert

COUNTERS = (
    "gpu_seconds_training",
    "gpu_seconds_embedding",
    "pairs_trained",
    "tokens_embedded",
    "embedding_requests",
)


def add(session: Session, project_id: str, at: datetime | None = None, **amounts: float) -> None:
    """Add ``amounts`` (any of :data:`COUNTERS`, each >= 0) to the project's row of the day
    of ``at`` (default: now, UTC)."""
    unknown = set(amounts) - set(COUNTERS)
    if unknown:
        raise v.InvalidValue(f"unknown usage counters {sorted(unknown)}")
    values = {
        name: v.number(amount, name, minimum=0.0) for name, amount in amounts.items() if amount
    }
    if not values:
        return
    day = (at or utcnow()).date()
    row = {name: values.get(name, 0) for name in COUNTERS}
    for name in ("pairs_trained", "tokens_embedded", "embedding_requests"):
        row[name] = int(row[name])
    table = UsageDaily.__table__
    stmt = dialect_insert(session, UsageDaily).values(
        project_id=v.text(project_id, "project_id", max_len=40), day=day, **row
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["project_id", "day"],
        set_={name: table.c[name] + stmt.excluded[name] for name in values},
    )
    session.execute(stmt)


def daily(
    session: Session, project_id: str | None = None, since: date | None = None
) -> list[UsageDaily]:
    """Rows oldest day first; of one project or every one, from ``since`` on."""
    query = select(UsageDaily)
    if project_id is not None:
        query = query.where(UsageDaily.project_id == project_id)
    if since is not None:
        query = query.where(UsageDaily.day >= since)
    return list(session.scalars(query.order_by(UsageDaily.day, UsageDaily.project_id)))


def totals(session: Session, since: date | None = None) -> dict[str, dict[str, float]]:
    """project id -> each counter summed (from ``since`` on)."""
    query = select(UsageDaily.project_id, *(func.sum(UsageDaily.__table__.c[c]) for c in COUNTERS))
    if since is not None:
        query = query.where(UsageDaily.day >= since)
    out: dict[str, dict[str, float]] = {}
    for project_id, *sums in session.execute(query.group_by(UsageDaily.project_id)):
        out[project_id] = {c: float(s or 0) for c, s in zip(COUNTERS, sums, strict=True)}
    return out


def recent_training_seconds(
    session: Session, half_life_days: float, today: date | None = None
) -> dict[str, float]:
    """project id -> training GPU-seconds, each day's weighed by ``0.5 ** (age / half-life)``
    (today's count whole): what fair share calls a project's recent use (Slurm's decayed
    usage, by the day)."""
    today = today or utcnow().date()
    horizon = max(1, math.ceil(half_life_days * 10))  # older days weigh < 0.1 %
    query = select(UsageDaily.project_id, UsageDaily.day, UsageDaily.gpu_seconds_training).where(
        UsageDaily.day >= date.fromordinal(today.toordinal() - horizon)
    )
    out: dict[str, float] = {}
    for project_id, day, seconds in session.execute(query):
        age = max(0, today.toordinal() - day.toordinal())
        out[project_id] = out.get(project_id, 0.0) + float(seconds) * 0.5 ** (age / half_life_days)
    return out


def as_dict(row: UsageDaily) -> dict[str, Any]:
    return {
        "project_id": row.project_id,
        "day": row.day.isoformat(),
        **{c: getattr(row, c) for c in COUNTERS},
    }
