"""What every entity's reads and writes share: the dialect's INSERT, bulk UPDATEs that
expire what they changed, existence checks, keyset pages and digests."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db import values as v
from db.values import InvalidValue, NotFound

ACTIVE = ("queued", "running")


Id = uuid.UUID | str


def dialect_insert(session: Session, entity: type[Any]) -> Any:
    """The dialect's INSERT (the one with ``on_conflict_do_*``) for the session's backend."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(entity)
    if name == "sqlite":
        return sqlite.insert(entity)
    raise NotImplementedError(f"db.repo supports PostgreSQL and SQLite, not {name}")


def bulk_update(session: Session, stmt: Any) -> int:
    """Run a bulk UPDATE; returns the rows matched. Callers expire what it changed."""
    return session.execute(stmt, execution_options={"synchronize_session": False}).rowcount


def forget(session: Session, entity: type[Any], ident: Any, *attrs: str) -> None:
    """Expire a cached object after a statement changed its row behind the ORM's back."""
    obj = session.identity_map.get(session.identity_key(entity, ident))
    if obj is not None:
        session.expire(obj, list(attrs) or None)


def require(session: Session, entity: type[Any], ident: Any, what: str) -> None:
    if session.get(entity, ident) is None:
        raise NotFound(f"no {what} {ident}")


def page(session: Session, entity: type[Any], after: Any, limit: int, **equal: Any) -> list[Any]:
    """Rows newest first by (created_at, id); ``after`` an id: only rows after it in that order.

    Keyset paging: a page never repeats or skips a row when rows are added meanwhile.
    """
    limit = v.integer(limit, "limit", minimum=1)
    query = select(entity)
    for column, value in equal.items():
        if value is not None:
            query = query.where(getattr(entity, column) == value)
    if after is not None:
        cursor = session.get(entity, after)
        if cursor is None:
            raise NotFound(f"no {entity.__tablename__} row {after}")
        query = query.where(
            (entity.created_at < cursor.created_at)
            | ((entity.created_at == cursor.created_at) & (entity.id < cursor.id))
        )
    query = query.order_by(entity.created_at.desc(), entity.id.desc()).limit(limit)
    return list(session.scalars(query))


def sha256_hex(value: object, what: str) -> str:
    digest = v.text(value, what).lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidValue(f"{what} must be 64 hex digits, got {value!r}")
    return digest
