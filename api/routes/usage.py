"""``GET /v1/organization/usage``: what each project used, per UTC day, in the spirit of
OpenAI's Admin API usage routes (a page of daily buckets, each with one result per project).
Admin keys only.

Read from ``usage_daily`` (``db/repo/usage.py``): GPU-seconds of training and embedding,
pairs trained, tokens embedded and embedding requests, as the workers and API processes add
them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from api.auth import AdminDep, require_admin
from api.errors import APIError
from db import repo
from db.models import utcnow
from db.session import session_scope

router = APIRouter(dependencies=[Depends(require_admin)], tags=["organization"])

MAX_DAYS = 366


class UsageResult(BaseModel):
    object: Literal["organization.usage.result"] = "organization.usage.result"
    project_id: str
    project_name: str | None = None
    gpu_seconds_training: float
    gpu_seconds_embedding: float
    pairs_trained: int
    tokens_embedded: int
    embedding_requests: int


class UsageBucket(BaseModel):
    object: Literal["bucket"] = "bucket"
    start_time: int
    end_time: int
    date: str
    results: list[UsageResult]


class UsagePage(BaseModel):
    object: Literal["page"] = "page"
    data: list[UsageBucket]
    has_more: bool = False
    next_page: str | None = None


def _day(value: str | None, name: str, default: date) -> date:
    if value is None:
        return default
    try:
        day = date.fromisoformat(value)
    except ValueError:
        day = None
    if day is None or not 1970 <= day.year <= 9000:
        raise APIError(
            400,
            f"{name} must be a date, YYYY-MM-DD, from 1970 on.",
            param=name,
            code="invalid_value",
        )
    return day


def _unix(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


@router.get("/v1/organization/usage", response_model=UsagePage)
def usage(
    caller: AdminDep,
    project_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    start_date: Annotated[str | None, Query(max_length=10)] = None,
    end_date: Annotated[str | None, Query(max_length=10)] = None,
) -> UsagePage:
    """One bucket per UTC day from ``start_date`` (default: six days before ``end_date``) to
    ``end_date`` (default: today), oldest first; each with a result per project that used
    anything that day (of ``project_id`` alone when given: a name or an id)."""
    today = utcnow().date()
    end = _day(end_date, "end_date", today)
    start = _day(start_date, "start_date", end - timedelta(days=6))
    if start > end:
        raise APIError(
            400, "start_date is after end_date.", param="start_date", code="invalid_value"
        )
    if (end - start).days >= MAX_DAYS:
        raise APIError(
            400, f"At most {MAX_DAYS} days at once.", param="start_date", code="invalid_value"
        )
    with session_scope() as session:
        names = {p.id: p.name for p in repo.projects.list_projects(session)}
        only = None
        if project_id is not None:
            project = repo.projects.find_project(session, project_id)
            if project is None:
                raise APIError(
                    404, f"No project {project_id!r}.", param="project_id", code="not_found"
                )
            only = project.id
        rows = [
            repo.usage.as_dict(r)
            for r in repo.usage.daily(session, project_id=only, since=start)
            if r.day <= end
        ]
    by_day: dict[str, list[UsageResult]] = {}
    for row in rows:
        by_day.setdefault(row["day"], []).append(
            UsageResult(
                project_name=names.get(row["project_id"]),
                **{k: v for k, v in row.items() if k != "day"},
            )
        )
    buckets = []
    for offset in range((end - start).days + 1):
        day = start + timedelta(days=offset)
        buckets.append(
            UsageBucket(
                start_time=_unix(day),
                end_time=_unix(day + timedelta(days=1)),
                date=day.isoformat(),
                results=by_day.get(day.isoformat(), []),
            )
        )
    return UsagePage(data=buckets)
