"""Database fixtures for tests/test_db_*.py (loaded with ``pytest_plugins`` in each module).

Each test runs against both backends: a SQLite file in a temporary folder and a real
PostgreSQL on 127.0.0.1:5432. For PostgreSQL a database of its own (``emb_test_<hex>``)
is created through the ``postgres`` maintenance database and dropped afterwards; no other
database is touched. PostgreSQL tests are marked ``integration``; if the server is down
they fail (CI starts it), they do not skip.

The schema is migrated once per backend and session; every test then starts from empty
tables (rows are deleted after each test), which keeps the suite fast.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.config import redact_url
from db import migrate
from db.models import DEFAULT_PROJECT_ID, Base
from db.session import make_engine

PG_ADMIN_URL = os.environ.get(
    "EMBEDDING_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]


def _admin_engine() -> Engine:
    return create_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 10}
    )


def create_pg_database() -> str:
    """Create an empty database of our own; returns its URL."""
    name = f"emb_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine()
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # a clear failure, never a skip: CI starts PostgreSQL
        pytest.fail(
            f"PostgreSQL at {redact_url(PG_ADMIN_URL)} is not usable ({type(exc).__name__}: "
            f"{exc}). Start it (scripts/ensure_services.sh) or set EMBEDDING_TEST_PG_ADMIN_URL.",
            pytrace=False,
        )
    finally:
        admin.dispose()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    assert name and name.startswith("emb_test_"), f"refusing to drop {name!r}"
    admin = _admin_engine()
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, unmigrated database of each backend, dropped after the test."""
    backend = request.param
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(scope="session", params=BACKENDS)
def migrated_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database per backend, migrated to head once for the whole session."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        migrate.upgrade(url)
        yield url
        return
    url = create_pg_database()
    try:
        migrate.upgrade(url)
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(scope="session")
def _engines() -> Iterator[dict[str, Engine]]:
    engines: dict[str, Engine] = {}
    yield engines
    for engine in engines.values():
        engine.dispose()


@pytest.fixture
def engine(migrated_url: str, _engines: dict[str, Engine]) -> Iterator[Engine]:
    """The migrated database's engine; its tables are emptied after the test (all but the
    ``default`` project, which the migration made and every deployment has)."""
    eng = _engines.get(migrated_url)
    if eng is None:
        eng = _engines[migrated_url] = make_engine(migrated_url)
    yield eng
    with eng.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name == "projects":
                conn.execute(delete(table).where(table.c.id != DEFAULT_PROJECT_ID))
            else:
                conn.execute(delete(table))


@pytest.fixture
def backend(engine: Engine) -> str:
    return engine.dialect.name


@pytest.fixture
def new_session(engine: Engine) -> Iterator[Callable[[], Session]]:
    """A factory of sessions on the test database; all are closed after the test."""
    factory = sessionmaker(engine, expire_on_commit=False)
    opened: list[Session] = []

    def make() -> Session:
        session = factory()
        opened.append(session)
        return session

    yield make
    for session in opened:
        session.rollback()
        session.close()


@pytest.fixture
def session(new_session: Callable[[], Session]) -> Session:
    return new_session()


def count_rows(engine: Engine, table: str) -> int:
    """Rows in ``table``, read on a connection of its own (sees only committed rows)."""
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


@pytest.fixture
def rows(engine: Engine) -> Callable[[str], int]:
    """``rows("table")``: committed rows in a table of the test database."""
    return lambda table: count_rows(engine, table)
