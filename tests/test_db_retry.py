"""workers.lifeline.db_retry: connection-level errors are waited out, anything else fails at once.

Real SQLite errors where SQLite can produce them ("database is locked", a duplicate key),
constructed SQLAlchemy errors for the PostgreSQL-only kind (an invalidated connection).
Backoff and deadline are shrunk to milliseconds so the file runs in well under a second.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from workers.lifeline.db_retry import is_transient, with_db_retry

FAST = {"first_delay_s": 0.001, "max_delay_s": 0.004}


def _table(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")


def test_a_locked_database_is_retried_until_the_write_goes_through(tmp_path, caplog):
    path = tmp_path / "db.sqlite"
    _table(path)
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # the database is away for the first try
    tries = 0

    def write() -> int:
        nonlocal tries
        tries += 1
        try:
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO t (id) VALUES (1)"))
            return tries
        finally:
            if locker.in_transaction:
                locker.execute("COMMIT")  # ... and back for the next one

    with caplog.at_level(logging.WARNING, logger="workers.lifeline.db_retry"):
        assert with_db_retry(write, "test write", deadline_s=5, **FAST) == 2
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
    engine.dispose()
    locker.close()
    [warning] = caplog.records
    assert (
        "test write: database unavailable (OperationalError); retrying in" in warning.getMessage()
    )


def test_an_invalidated_connection_is_retried():
    lost = DBAPIError("SELECT 1", {}, ConnectionResetError("reset"), connection_invalidated=True)
    outcomes: list[BaseException | str] = [lost, lost, "written"]

    def write() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    assert with_db_retry(write, "invalidated", deadline_s=5, **FAST) == "written"
    assert outcomes == []


def test_a_bad_value_fails_at_once(tmp_path):
    path = tmp_path / "db.sqlite"
    _table(path)
    engine = create_engine(f"sqlite:///{path}")
    tries = 0

    def write() -> None:
        nonlocal tries
        tries += 1
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t (id) VALUES (1), (1)"))

    with pytest.raises(IntegrityError):
        with_db_retry(write, "duplicate key", deadline_s=5, **FAST)
    engine.dispose()
    assert tries == 1


def test_a_dbapi_error_on_a_live_connection_fails_at_once():
    bad = DBAPIError("INSERT", {}, ValueError("bad value"), connection_invalidated=False)
    tries = 0

    def write() -> None:
        nonlocal tries
        tries += 1
        raise bad

    with pytest.raises(DBAPIError) as info:
        with_db_retry(write, "bad", deadline_s=5, **FAST)
    assert info.value is bad and tries == 1
    assert not is_transient(bad) and not is_transient(ValueError("not a database error"))


def test_the_deadline_ends_the_retries_with_the_last_error():
    tries = 0

    def write() -> None:
        nonlocal tries
        tries += 1
        raise OperationalError("INSERT", {}, ConnectionRefusedError(f"refused #{tries}"))

    started = time.monotonic()
    with pytest.raises(OperationalError, match="refused #"):
        with_db_retry(write, "never back", deadline_s=0.05, **FAST)
    elapsed = time.monotonic() - started
    assert 0.05 <= elapsed < 0.5
    assert tries > 3  # backed off and tried again, not given up after one error


def test_the_waits_double_up_to_the_cap(monkeypatch, caplog):
    """0.5 s doubling to 10 s by default: the waits asked for and logged, not slept."""
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    outcomes = [OperationalError("x", {}, OSError("down"))] * 7

    def write() -> str:
        if outcomes:
            raise outcomes.pop()
        return "ok"

    with caplog.at_level(logging.WARNING, logger="workers.lifeline.db_retry"):
        assert with_db_retry(write, "backoff") == "ok"
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert [r.getMessage().rsplit(" in ", 1)[1] for r in caplog.records] == [
        "0.5 s",
        "1.0 s",
        "2.0 s",
        "4.0 s",
        "8.0 s",
        "10.0 s",
        "10.0 s",
    ]
