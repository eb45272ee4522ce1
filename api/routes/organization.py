"""``/v1/organization``: projects, their API keys, admin keys and the audit list, in the
shape of OpenAI's Admin API. Admin keys only (``embedctl keys create --admin``).

A key's secret is in the answer that creates it (``value``) and nowhere else, ever: lists
show its ``redacted_value``. Deleting a key revokes it (its row stays, for the audit list);
archiving a project is refused while it has jobs queued or running (cancel them first), and
stops its keys at once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api.auth import AdminDep, Caller, audit, require_admin
from api.errors import APIError, not_found
from api.schemas import unix
from db import repo
from db.models import utcnow
from db.session import session_scope

router = APIRouter(dependencies=[Depends(require_admin)], tags=["organization"])


# ------------------------------------------------------------------ shapes
class Project(BaseModel):
    id: str
    object: Literal["organization.project"] = "organization.project"
    name: str
    created_at: int
    archived_at: int | None = None
    status: Literal["active", "archived"]


class ProjectList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Project]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class ProjectCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class ApiKey(BaseModel):
    id: str
    object: Literal["organization.project.api_key", "organization.admin_api_key"]
    name: str
    role: Literal["admin", "member", "read_only"]
    redacted_value: str
    project_id: str | None = None
    created_at: int
    expires_at: int | None = None
    last_used_at: int | None = None
    revoked_at: int | None = None
    value: str | None = None  # the secret: in the answer that creates the key only


class ApiKeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ApiKey]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class ApiKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    read_only: bool = False
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class AdminKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class ApiKeyDeleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


class AuditLog(BaseModel):
    id: str
    object: Literal["organization.audit_log"] = "organization.audit_log"
    type: str
    effective_at: int
    actor: dict[str, Any]
    object_id: str
    project: dict[str, str] | None = None
    data: dict[str, Any] | None = None


class AuditLogList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AuditLog]
    has_more: bool = False


def project_object(row: Any) -> Project:
    return Project(
        id=row.id,
        name=row.name,
        created_at=unix(row.created_at) or 0,
        archived_at=unix(row.archived_at),
        status="archived" if row.archived_at else "active",
    )


def key_object(row: Any, value: str | None = None) -> ApiKey:
    kind = "organization.admin_api_key" if row.role == "admin" else "organization.project.api_key"
    return ApiKey(
        id=row.id,
        object=kind,
        name=row.name,
        role=row.role,
        redacted_value=row.redacted_value,
        project_id=row.project_id,
        created_at=unix(row.created_at) or 0,
        expires_at=unix(row.expires_at),
        last_used_at=unix(row.last_used_at),
        revoked_at=unix(row.revoked_at),
        value=value,
    )


def _bad_value(exc: Exception, param: str | None = None) -> APIError:
    if isinstance(exc, repo.projects.ProjectExists):
        return APIError(409, str(exc), param=param, code="project_exists")
    if isinstance(exc, repo.projects.ProjectBusy):
        return APIError(409, str(exc), code="project_busy")
    return APIError(400, str(exc), param=param, code="invalid_value")


def _project(session: Any, project_id: str) -> Any:
    row = repo.projects.find_project(session, project_id[:64])
    if row is None or row.id != project_id:
        raise not_found("project", project_id, param="project_id")
    return row


# ------------------------------------------------------------------ projects
@router.get("/v1/organization/projects", response_model=ProjectList)
def list_projects(include_archived: Annotated[bool, Query()] = False) -> ProjectList:
    with session_scope() as session:
        rows = repo.projects.list_projects(session, include_archived=include_archived)
        data = [project_object(r) for r in rows]
    return ProjectList(
        data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None
    )


@router.post("/v1/organization/projects", response_model=Project)
def create_project(caller: AdminDep, body: ProjectCreate) -> Project:
    try:
        with session_scope() as session:
            answer = project_object(repo.projects.create_project(session, body.name))
    except repo.InvalidValue as exc:
        raise _bad_value(exc, "name") from None
    audit(caller, "project.create", answer.id, answer.id, name=answer.name)
    return answer


@router.get("/v1/organization/projects/{project_id}", response_model=Project)
def retrieve_project(project_id: str) -> Project:
    with session_scope() as session:
        return project_object(_project(session, project_id))


@router.post("/v1/organization/projects/{project_id}", response_model=Project)
def modify_project(caller: AdminDep, project_id: str, body: ProjectCreate) -> Project:
    try:
        with session_scope() as session:
            row = _project(session, project_id)
            answer = project_object(repo.projects.rename_project(session, row.id, body.name))
    except repo.InvalidValue as exc:
        raise _bad_value(exc, "name") from None
    audit(caller, "project.update", project_id, project_id, name=answer.name)
    return answer


@router.post("/v1/organization/projects/{project_id}/archive", response_model=Project)
def archive_project(caller: AdminDep, project_id: str) -> Project:
    try:
        with session_scope() as session:
            row = _project(session, project_id)
            answer = project_object(repo.projects.archive_project(session, row.id))
    except repo.InvalidValue as exc:
        raise _bad_value(exc) from None
    audit(caller, "project.archive", project_id, project_id)
    return answer


# ------------------------------------------------------------------ limits
class ProjectLimits(BaseModel):
    """A project's share of the GPU fleet and its quotas; null: no limit. In a POST, only
    the fields given change."""

    object: Literal["organization.project.limits"] = "organization.project.limits"
    project_id: str | None = None
    weight: float | None = None
    max_running_jobs: int | None = None
    max_queued_jobs: int | None = None
    embeddings_rpm: int | None = None
    embeddings_tpm: int | None = None
    max_storage_bytes: int | None = None


def _limits(row: Any) -> ProjectLimits:
    return ProjectLimits(project_id=row.id, **repo.projects.limits_of(row))


@router.get("/v1/organization/projects/{project_id}/limits", response_model=ProjectLimits)
def retrieve_limits(project_id: str) -> ProjectLimits:
    with session_scope() as session:
        return _limits(_project(session, project_id))


@router.post("/v1/organization/projects/{project_id}/limits", response_model=ProjectLimits)
def modify_limits(caller: AdminDep, project_id: str, body: dict[str, Any]) -> ProjectLimits:
    """Set any of ``weight`` (> 0) and the quotas (whole numbers > 0, or null for none);
    they hold from the next dispatch and the next request."""
    given = {k: v for k, v in body.items() if k not in ("object", "project_id")}
    if not given:
        raise APIError(400, "Give at least one limit to set.", code="invalid_value")
    try:
        with session_scope() as session:
            row = repo.projects.set_limits(session, _project(session, project_id).id, **given)
            answer = _limits(row)
    except repo.InvalidValue as exc:
        raise _bad_value(exc) from None
    audit(caller, "project.limits", project_id, project_id, **given)
    return answer


# ------------------------------------------------------------------ keys
def _expiry(days: int | None) -> Any:
    return None if days is None else utcnow() + timedelta(days=days)


@router.get("/v1/organization/projects/{project_id}/api_keys", response_model=ApiKeyList)
def list_project_keys(project_id: str) -> ApiKeyList:
    with session_scope() as session:
        row = _project(session, project_id)
        data = [key_object(k) for k in repo.keys.list_keys(session, project_id=row.id)]
    return ApiKeyList(
        data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None
    )


@router.post("/v1/organization/projects/{project_id}/api_keys", response_model=ApiKey)
def create_project_key(caller: AdminDep, project_id: str, body: ApiKeyCreate) -> ApiKey:
    """A new key of the project; its secret (``value``) is in this answer only."""
    try:
        with session_scope() as session:
            project = _project(session, project_id)
            issued = repo.keys.issue_key(
                session,
                name=body.name,
                role="read_only" if body.read_only else "member",
                project=project,
                expires_at=_expiry(body.expires_in_days),
            )
            answer = key_object(issued.key, value=issued.secret)
    except repo.InvalidValue as exc:
        raise _bad_value(exc) from None
    audit(caller, "api_key.create", answer.id, project_id, role=answer.role)
    return answer


def _key_of(session: Any, project_id: str | None, key_id: str) -> Any:
    row = repo.keys.get_key(session, key_id[:40])
    if row is None or row.project_id != project_id:
        raise not_found("API key", key_id, param="key_id")
    return row


@router.get("/v1/organization/projects/{project_id}/api_keys/{key_id}", response_model=ApiKey)
def retrieve_project_key(project_id: str, key_id: str) -> ApiKey:
    with session_scope() as session:
        return key_object(_key_of(session, _project(session, project_id).id, key_id))


@router.delete(
    "/v1/organization/projects/{project_id}/api_keys/{key_id}", response_model=ApiKeyDeleted
)
def delete_project_key(caller: AdminDep, project_id: str, key_id: str) -> ApiKeyDeleted:
    """Revoke the key: every API process refuses it from its next request."""
    return _revoke(caller, project_id, key_id, "organization.project.api_key.deleted")


def _revoke(caller: Caller, project_id: str | None, key_id: str, kind: str) -> ApiKeyDeleted:
    with session_scope() as session:
        if project_id is not None:
            project_id = _project(session, project_id).id
        repo.keys.revoke_key(session, _key_of(session, project_id, key_id).id)
    audit(caller, "api_key.revoke", key_id, project_id)
    return ApiKeyDeleted(id=key_id, object=kind)


@router.get("/v1/organization/admin_api_keys", response_model=ApiKeyList)
def list_admin_keys() -> ApiKeyList:
    with session_scope() as session:
        data = [key_object(k) for k in repo.keys.list_keys(session, role="admin")]
    return ApiKeyList(
        data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None
    )


@router.post("/v1/organization/admin_api_keys", response_model=ApiKey)
def create_admin_key(caller: AdminDep, body: AdminKeyCreate) -> ApiKey:
    try:
        with session_scope() as session:
            issued = repo.keys.issue_key(
                session,
                name=body.name,
                role="admin",
                project=None,
                expires_at=_expiry(body.expires_in_days),
            )
            answer = key_object(issued.key, value=issued.secret)
    except repo.InvalidValue as exc:
        raise _bad_value(exc) from None
    audit(caller, "api_key.create", answer.id, None, role="admin")
    return answer


@router.delete("/v1/organization/admin_api_keys/{key_id}", response_model=ApiKeyDeleted)
def delete_admin_key(caller: AdminDep, key_id: str) -> ApiKeyDeleted:
    return _revoke(caller, None, key_id, "organization.admin_api_key.deleted")


# ------------------------------------------------------------------ audit
@router.get("/v1/organization/audit_logs", response_model=AuditLogList)
def list_audit_logs(
    project_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditLogList:
    """Newest first: every state-changing call, with the key id that made it."""
    with session_scope() as session:
        rows = repo.audit.list_events(session, project_id=project_id, limit=limit + 1)
        data = [
            AuditLog(
                id=f"audit_log-{r.id:010d}",
                type=r.action,
                effective_at=unix(r.at) or 0,
                actor={"type": "api_key", "api_key": {"id": r.actor}},
                object_id=r.object_id,
                project={"id": r.project_id} if r.project_id else None,
                data=r.data,
            )
            for r in rows[:limit]
        ]
    return AuditLogList(data=data, has_more=len(rows) > limit)
