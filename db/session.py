"""Engines and sessions, built from the one settings object (``EMBEDDING_DATABASE_URL``).

One engine per URL per process, made on first use: the URL is read from the settings at
call time, so a test that changes the environment and clears ``get_settings``'s cache gets
a fresh engine without any other wiring. Every function also takes an explicit ``url``.

SQLite (the embedded default) is set up for several threads and processes on one file:
WAL journal (readers never block the writer), foreign keys enforced (off by default in
SQLite), and a busy timeout so a writer waits for the lock instead of failing at once.
The driver's own transaction handling is kept: a transaction begins at the first write,
so a read followed by a conditional UPDATE never holds a stale snapshot (which WAL would
answer with an immediate "database is locked"). ``db/repo.py`` uses no SAVEPOINTs, which
this mode of the driver does not support well.

PostgreSQL gets ``pool_pre_ping`` so a connection dropped by a server restart or a
firewall is replaced instead of failing the next task.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from core.config import get_settings

SQLITE_BUSY_TIMEOUT_S = 30.0

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_sessionmakers: dict[str, sessionmaker[Session]] = {}


def database_url(url: str | None = None) -> str:
    """``url`` if given, else the configured one."""
    return url or get_settings().database_url


def database_exists(url: str | None = None) -> bool:
    """False for an embedded SQLite file that was never created: asking it would create it
    (an empty file, which later reads would take for a database without its tables)."""
    parsed = make_url(database_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return True
    from pathlib import Path

    return Path(parsed.database).exists()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    finally:
        cursor.close()


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """A new engine for ``url`` (default: the settings) with the per-backend setup above.

    Not cached: use :func:`get_engine` in application code. ``kwargs`` go to
    ``create_engine`` (tests pass e.g. ``poolclass``).
    """
    parsed = make_url(database_url(url))
    backend = parsed.get_backend_name()
    options: dict[str, Any] = {}
    if backend == "sqlite":
        connect_args: dict[str, Any] = {
            "timeout": SQLITE_BUSY_TIMEOUT_S,
            "check_same_thread": False,
        }
        options["connect_args"] = connect_args
        if parsed.database in (None, "", ":memory:"):
            # One in-memory database shared by every thread, not one per connection.
            options["poolclass"] = StaticPool
    elif backend == "postgresql":
        options["pool_pre_ping"] = True
    options.update(kwargs)
    engine = create_engine(parsed, **options)
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
    return engine


def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for ``url`` (default: the settings), made on first use."""
    key = database_url(url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(key)
        return engine


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    """The session factory bound to :func:`get_engine` for ``url``.

    ``expire_on_commit=False``: callers read attributes of returned rows after the scope
    has committed (e.g. a job's id and status), which must not need a new query.
    """
    key = database_url(url)
    engine = get_engine(key)
    with _lock:
        factory = _sessionmakers.get(key)
        if factory is None:
            factory = _sessionmakers[key] = sessionmaker(engine, expire_on_commit=False)
        return factory


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session in one transaction: committed if the block succeeds, rolled back if not."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines(close: bool = True) -> None:
    """Forget every cached engine, closing its pooled connections.

    In a forked child pass ``close=False``: the connections belong to the parent and must
    not be closed under it; the child simply opens its own.
    """
    with _lock:
        engines = list(_engines.values())
        _engines.clear()
        _sessionmakers.clear()
    for engine in engines:
        engine.dispose(close=close)
