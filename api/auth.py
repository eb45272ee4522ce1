"""Who is calling: the key a request presents, and what it may see and do.

Three kinds of key (``db/repo/keys.py`` keeps them, hashed):

* a **project key** (``member``, or ``read_only``: GET only) sees and changes its own
  project's rows and nothing else: every read the API makes takes :attr:`Caller.scope`, so
  another project's id is a 404, exactly as an id that does not exist;
* an **admin key** manages projects and keys (``/v1/organization/...``) and reads every
  project; with an ``OpenAI-Project`` header (the ``openai`` SDK's ``project=``) it acts in
  that one project, and what it creates goes there (else to ``default``);
* a **legacy key** of ``EMBEDDING_API_KEYS`` is a member key of the ``default`` project, so
  a deployment from before projects keeps working as it was.

With no key configured anywhere (none in the environment, none ever issued), the API is
open, as before, and ``embedctl serve`` binds to loopback only: the caller acts as an admin
whose writes go to ``default``.

Every request reads its key's row, so a revocation on one API process holds on every other
at once. Failures are 401 (unknown, revoked, expired key, archived project) or 403 (a
read-only key writing, a project key on an admin route) in OpenAI's error shape.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request

from api.errors import APIError
from api.security import configured_keys, key_is_valid, presented_key
from db import repo
from db.models import DEFAULT_PROJECT_ID, utcnow
from db.repo.scope import ALL_PROJECTS, Scope
from db.session import database_exists, session_scope

PROJECT_HEADER = "openai-project"
READ_METHODS = ("GET", "HEAD", "OPTIONS")
Role = Literal["admin", "member", "read_only"]


@dataclass(frozen=True)
class Caller:
    """The authenticated caller. ``key_id`` is what audit records name (never the key);
    ``project_id`` None: an admin acting across every project."""

    key_id: str
    role: Role
    project_id: str | None
    # A key of EMBEDDING_API_KEYS: set by the operator in the environment, it keeps what every
    # key could do before projects where a route allows it (/metrics).
    legacy: bool = False

    @property
    def scope(self) -> Scope:
        """What this caller's reads see."""
        return ALL_PROJECTS if self.project_id is None else repo.scope.project(self.project_id)

    @property
    def write_project(self) -> str:
        """The project what this caller creates belongs to."""
        return self.project_id or DEFAULT_PROJECT_ID

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _unauthorized(message: str, code: str) -> APIError:
    return APIError(401, message, code=code, headers={"WWW-Authenticate": "Bearer"})


def legacy_key_id(secret: str) -> str:
    """A stable id for a key of ``EMBEDDING_API_KEYS`` (for audit records): a digest prefix."""
    return "key_env_" + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def identify(secret: str | None) -> Caller | None:
    """The caller a secret belongs to; None when no key is configured anywhere (open API).
    Raises the 401 for a missing, unknown, revoked or expired key."""
    legacy = configured_keys()
    if secret is not None and legacy and key_is_valid(secret, legacy):
        return Caller(legacy_key_id(secret), "member", DEFAULT_PROJECT_ID, legacy=True)
    with session_scope() as session:
        if secret is None:
            if legacy or repo.keys.any_keys(session):
                raise _unauthorized(
                    "You didn't provide an API key: send it as 'Authorization: Bearer KEY'.",
                    "missing_api_key",
                )
            return None
        key = repo.keys.find_by_secret(session, secret)
        if key is None:
            if not legacy and not repo.keys.any_keys(session):
                return None  # an open API ignores a stray header, as before projects
            raise _unauthorized("Incorrect API key provided.", "invalid_api_key")
        if key.revoked_at is not None:
            raise _unauthorized("This API key has been revoked.", "invalid_api_key")
        if key.expires_at is not None and key.expires_at <= utcnow():
            raise _unauthorized("This API key has expired.", "expired_api_key")
        if key.project_id is not None:
            project = repo.projects.find_project(session, key.project_id)
            if project is None or project.archived_at is not None:
                raise _unauthorized("This API key's project is archived.", "project_archived")
        repo.keys.touch(session, key)
        return Caller(key.id, key.role, key.project_id)  # type: ignore[arg-type]


def keys_issued() -> bool:
    """Whether the database holds any key (False for one not created or migrated yet)."""
    from sqlalchemy.exc import SQLAlchemyError

    if not database_exists():
        return False
    try:
        with session_scope() as session:
            return repo.keys.any_keys(session)
    except SQLAlchemyError:
        return False


def _named_project(request: Request, caller: Caller) -> Caller:
    """Apply an ``OpenAI-Project`` header: an admin acts in that project; a project key must
    name its own project (or none)."""
    named = request.headers.get(PROJECT_HEADER, "").strip()
    if not named:
        return caller
    with session_scope() as session:
        project = repo.projects.find_project(session, named[:64])
    if caller.is_admin:
        if project is None:
            raise APIError(
                404, f"No project {named!r}.", param="OpenAI-Project", code="project_not_found"
            )
        return Caller(caller.key_id, caller.role, project.id)
    if project is None or project.id != caller.project_id:
        raise _unauthorized(
            f"This API key does not belong to project {named!r}.", "project_mismatch"
        )
    return caller


def authenticate(request: Request) -> Caller:
    """FastAPI dependency of every data route: the caller, or a 401/403 in OpenAI's shape."""
    found = identify(presented_key(request))
    caller = found if found is not None else Caller("open", "admin", None)
    caller = _named_project(request, caller)
    if caller.role == "read_only" and request.method not in READ_METHODS:
        raise APIError(
            403,
            f"This API key is read-only: {request.method} {request.url.path} needs the "
            "'write' permission, which it lacks. Use a member key of the project.",
            code="insufficient_permissions",
        )
    request.state.caller = caller
    return caller


def require_admin(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
    """FastAPI dependency of the ``/v1/organization`` routes: admin keys only."""
    if not caller.is_admin:
        raise APIError(
            403,
            "This route needs an admin key (embedctl keys create --admin); project keys "
            "cannot manage projects or keys.",
            code="insufficient_permissions",
        )
    return caller


def require_operator(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
    """FastAPI dependency of ``/metrics``: its lines name every project, so an admin key or
    a legacy key of the environment (the operators' scrapers), never a project key."""
    if not (caller.is_admin or caller.legacy):
        raise APIError(
            403,
            "/metrics shows every project's figures: scrape it with an admin key "
            "(embedctl keys create --admin) or a key of EMBEDDING_API_KEYS.",
            code="insufficient_permissions",
        )
    return caller


# What a route declares: ``caller: CallerDep`` (any valid key), ``caller: AdminDep``.
CallerDep = Annotated[Caller, Depends(authenticate)]
AdminDep = Annotated[Caller, Depends(require_admin)]


def audit(
    caller: Caller, action: str, object_id: str, project_id: str | None, **data: object
) -> None:
    """Record a state-changing call in the audit list (``embedctl audit``)."""
    with session_scope() as session:
        repo.audit.record(
            session,
            actor=caller.key_id,
            action=action,
            object_id=object_id,
            project_id=project_id,
            data={k: v for k, v in data.items() if v is not None} or None,
        )
