"""API keys: issued once, stored as a SHA-256 of their secret, found by that digest.

A key's secret is 32 random bytes (``secrets.token_urlsafe``), so a plain SHA-256 is as
strong as a slow hash here (no dictionary to try), and lets a request find its key by an
indexed lookup instead of trying every stored hash. The secret itself is returned once by
:func:`issue_key` and never stored, logged or shown again; ``redacted_value`` keeps its first
and last characters so people can tell keys apart.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db import values as v
from db.models import KEY_ROLES, ApiKey, Project, utcnow
from db.repo.rows import bulk_update
from db.values import InvalidValue, NotFound

PREFIXES = {"admin": "sk-admin-", "member": "sk-proj-", "read_only": "sk-proj-"}
# last_used_at is written at most this often per key: not a write on every request.
LAST_USED_EVERY_S = 60.0


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Issued:
    """A new key's row and its secret (the only time the secret exists outside the client)."""

    key: ApiKey
    secret: str


def issue_key(
    session: Session,
    *,
    name: str,
    role: str,
    project: Project | None,
    expires_at: datetime | None = None,
) -> Issued:
    """A new key of ``project`` (None for an admin key); refuses an archived project."""
    role = v.choice(role, KEY_ROLES, "key role")
    name = v.text(name, "key name", max_len=100)
    if not name.strip():
        raise InvalidValue("a key needs a name")
    if (role == "admin") != (project is None):
        raise InvalidValue("admin keys belong to no project; member and read-only keys to one")
    if project is not None and project.archived_at is not None:
        raise InvalidValue(f"project {project.name!r} is archived")
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidValue("a key's expiry must lie in the future")
    secret = PREFIXES[role] + secrets.token_urlsafe(32)
    row = ApiKey(
        id=f"key_{secrets.token_hex(12)}",
        project_id=project.id if project is not None else None,
        name=name,
        role=role,
        secret_sha256=secret_digest(secret),
        redacted_value=f"{secret[: len(PREFIXES[role]) + 2]}...{secret[-4:]}",
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return Issued(row, secret)


def find_by_secret(session: Session, secret: str) -> ApiKey | None:
    """The key whose secret this is (revoked and expired ones too: the caller says why not)."""
    digest = secret_digest(secret)
    row = session.scalars(select(ApiKey).where(ApiKey.secret_sha256 == digest)).first()
    # The index found it by digest; compare again in constant time all the same.
    if row is None or not hmac.compare_digest(row.secret_sha256, digest):
        return None
    return row


def any_keys(session: Session) -> bool:
    """Whether any key was ever issued: from then on the API asks every caller for one."""
    return session.scalars(select(ApiKey.id).limit(1)).first() is not None


def touch(session: Session, key: ApiKey) -> None:
    """Record a use, at most once a minute per key."""
    now = utcnow()
    last = key.last_used_at
    if last is None or (now - last).total_seconds() >= LAST_USED_EVERY_S:
        bulk_update(session, update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))


def get_key(session: Session, key_id: str) -> ApiKey | None:
    found = v.lookup_key(key_id, max_len=40)
    return None if found is None else session.get(ApiKey, found)


def list_keys(
    session: Session, project_id: str | None = None, role: str | None = None
) -> list[ApiKey]:
    """Keys oldest first, of one project (``project_id``) or every one; admin keys with
    ``role="admin"``."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if project_id is not None:
        query = query.where(ApiKey.project_id == project_id)
    if role is not None:
        query = query.where(ApiKey.role == v.choice(role, KEY_ROLES, "key role"))
    return list(session.scalars(query))


def revoke_key(session: Session, key_id: str) -> ApiKey:
    """Revoke a key (at once, on every API process: each request reads its key's row)."""
    row = get_key(session, key_id)
    if row is None:
        raise NotFound(f"no API key {key_id!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row
