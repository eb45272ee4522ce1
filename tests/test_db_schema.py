"""Migrations and engine setup, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from core.config import get_settings
from db import migrate, repo
from db import session as db_session
from db.models import Base
from db.session import make_engine, session_scope

pytest_plugins = ("tests.conftest_db",)

ROOT = Path(__file__).resolve().parent.parent


def _diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def test_migrated_schema_equals_the_models(fresh_url: str) -> None:
    assert migrate.current(fresh_url) is None
    migrate.upgrade(fresh_url)
    assert migrate.current(fresh_url) == migrate.head() == "0009"
    assert _diff(fresh_url) == []
    migrate.upgrade(fresh_url)  # already at head: nothing to do, no error
    assert migrate.current(fresh_url) == "0009"


def test_downgrade_to_base_and_up_again(fresh_url: str) -> None:
    migrate.upgrade(fresh_url)
    migrate.downgrade(fresh_url, "base")
    assert migrate.current(fresh_url) is None
    engine = make_engine(fresh_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    migrate.upgrade(fresh_url)
    assert _diff(fresh_url) == []


def test_alembic_ini_at_the_repository_root_works(fresh_url: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = fresh_url
    command.upgrade(config, "head")
    assert migrate.current(fresh_url) == "0009"


def test_settings_url_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no URL given, migrate and session_scope use EMBEDDING_DATABASE_URL."""
    url = f"sqlite:///{tmp_path / 'from-env.db'}"
    monkeypatch.setenv("EMBEDDING_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        migrate.upgrade()
        assert migrate.current() == "0009"
        with session_scope() as session:
            job_id = repo.jobs.create_job(
                session, "minilm", {"epochs": 1}, project_id="proj_default"
            ).id
        with session_scope() as session:
            assert repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS) is not None
        assert db_session.get_engine().url.render_as_string() == url
    finally:
        db_session.dispose_engines()
        get_settings.cache_clear()


def test_session_scope_commits_or_rolls_back(migrated_url: str, rows: Callable[[str], int]) -> None:
    try:
        with session_scope(migrated_url) as session:
            repo.jobs.create_job(session, "minilm", {}, project_id="proj_default")
        with pytest.raises(RuntimeError), session_scope(migrated_url) as session:
            repo.jobs.create_job(session, "minilm", {}, project_id="proj_default")
            raise RuntimeError("boom")
        assert rows("finetune_jobs") == 1
    finally:
        db_session.dispose_engines()


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
    finally:
        engine.dispose()


def test_postgresql_engine_pings_its_connections() -> None:
    engine = make_engine("postgresql+psycopg://u@127.0.0.1:5432/none")
    assert engine.pool._pre_ping
    engine.dispose()


def test_the_tables_refuse_bad_rows_from_any_writer(
    engine: Engine, backend: str, rows: Callable[[str], int]
) -> None:
    """The CHECK constraints guard the tables against writers that bypass db/repo.py."""
    job_id = uuid.uuid4()
    insert_job = text(
        "INSERT INTO finetune_jobs (id, project_id, model, params, status, attempts,"
        " cancel_requested, created_at)"
        " VALUES (:id, :project, 'm', '{}', :status, 0, false, CURRENT_TIMESTAMP)"
    )
    as_id = str(job_id) if backend == "postgresql" else job_id.hex
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert_job, {"id": as_id, "status": "paused", "project": "proj_default"})
    # A row of no project, or of a project that does not exist, is refused too.
    without_project = text(
        "INSERT INTO finetune_jobs (id, model, params, status, attempts, cancel_requested,"
        " created_at) VALUES (:id, 'm', '{}', 'queued', 0, false, CURRENT_TIMESTAMP)"
    )
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(without_project, {"id": as_id})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert_job, {"id": as_id, "status": "queued", "project": "proj_nope"})
    with engine.begin() as conn:
        conn.execute(insert_job, {"id": as_id, "status": "queued", "project": "proj_default"})
    insert_epoch = text(
        "INSERT INTO epoch_metrics (job_id, epoch, train_loss, created_at)"
        " VALUES (:job, :epoch, :loss, CURRENT_TIMESTAMP)"
    )
    for epoch, loss in [(-1, 0.5), (0, math.nan), (0, math.inf)]:
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert_epoch, {"job": as_id, "epoch": epoch, "loss": loss})
    with pytest.raises(IntegrityError), engine.begin() as conn:  # foreign key
        other = str(uuid.uuid4()) if backend == "postgresql" else uuid.uuid4().hex
        conn.execute(insert_epoch, {"job": other, "epoch": 0, "loss": 0.5})
    assert rows("epoch_metrics") == 0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM finetune_jobs")).scalars().all() == ["queued"]
